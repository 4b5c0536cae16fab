"""Plugin specs on the command line: ``name`` or ``name:key=value,key=value``.

Options are checked against the plugin's frozen config dataclass before any work
starts: an unknown key lists the valid ones, a bad value names its expected type,
and a value outside the constraints declared with ``option`` names what is allowed.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, Union

from bench.errors import UsageError


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"rsf:n_estimators=500,max_depth=3"`` into the name and raw options."""
    name, _, rest = spec.strip().partition(":")
    if not name:
        raise UsageError(f"empty plugin name in {spec!r}; expected NAME or NAME:key=value,...")
    options: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"option {item!r} in {spec!r} is not key=value")
        options[key.strip()] = value.strip()
    return name, options


def build_config(config_cls: type, raw: dict[str, Any], owner: str) -> Any:
    """Instantiate ``config_cls`` from string (or already typed) values."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    hints = typing.get_type_hints(config_cls)
    values = {}
    for key, value in raw.items():
        if key not in fields:
            valid = ", ".join(sorted(fields)) or "(it takes no options)"
            raise UsageError(f"unknown option {key!r} for {owner}; valid options: {valid}")
        values[key] = _coerce(value, hints[key], f"{owner} option {key}")
    config = config_cls(**values)
    check_config(config, owner)
    return config


def check_config(config: Any, owner: str) -> None:
    """Raise ``UsageError`` for the first option that breaks a constraint declared with ``option``.

    Works on any config dataclass; fields declared without ``option`` are not checked.
    """
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None:  # an optional option left unset: its type allows None
            continue
        for constraint in f.metadata.get("constraints", ()):
            if getattr(constraint, "whole", False) or not isinstance(value, tuple):
                if not constraint.check(value):
                    hint = getattr(constraint, "hint", None)  # optional: words about this value, e.g. close names
                    extra = hint(value) if callable(hint) else ""
                    raise UsageError(f"{owner} option {f.name} must be {constraint.requirement()}, got {value!r}"
                                     + (f"; {extra}" if extra else ""))  # fmt: skip
                continue
            for item in value:
                if not constraint.check(item):
                    raise UsageError(
                        f"{owner} option {f.name} must have every item {constraint.requirement()}, "
                        f"got {item!r} in {value!r}"
                    )


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def non_default_options(config: Any) -> dict[str, Any]:
    """The options that differ from the config class's defaults (for labels)."""
    default = type(config)()
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if getattr(config, f.name) != getattr(default, f.name)
    }


# ------------------------------------------------------------------------------------ constraints


class Constraint(Protocol):
    """What ``option`` takes: a test of one value, and the words for what passes it."""

    whole: ClassVar[bool]  # True: tests a tuple option as a whole; False (or absent): tests each of its items

    def check(self, value: Any) -> bool: ...

    def requirement(self) -> str:
        """Completes "option X must be ...", e.g. "in (0, inf)"."""
        ...

    # Optional: ``hint(value) -> str``, words appended to the error about one failing value (e.g. the closest
    # valid names); "" adds nothing.


def option(default: Any, *constraints: Constraint) -> Any:
    """A config field: its default and the constraints its value must meet, all of them.

    ``build_config`` checks them before any work starts. For a tuple option ``Length``
    and ``Increasing`` test the tuple, any other constraint each item; ``None`` (an
    optional option left unset) is not checked. Alternatives go in ``AnyOf``.
    """
    for constraint in constraints:
        if not (callable(getattr(constraint, "check", None)) and callable(getattr(constraint, "requirement", None))):
            raise TypeError(f"option constraint {constraint!r} needs check(value) and requirement() methods")
    return dataclasses.field(default=default, metadata={"constraints": constraints})


@dataclass(frozen=True)
class Interval:
    """Numbers from ``low`` to ``high`` (None: unbounded); ``closed`` names the ends that belong to it.

    A bool is not a number here. Text that reads as a number counts as that number:
    options typed ``str | float`` keep command-line values as text.
    """

    low: float | None
    high: float | None
    closed: Literal["both", "left", "right", "neither"]
    whole: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"Interval closed must be both, left, right or neither, got {self.closed!r}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"Interval low {self.low!r} is above high {self.high!r}")

    def check(self, value: Any) -> bool:
        number = _number(value)
        if number is None or (isinstance(number, float) and math.isnan(number)):
            return False
        low_in, high_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        above_low = self.low is None or (number >= self.low if low_in else number > self.low)
        below_high = self.high is None or (number <= self.high if high_in else number < self.high)
        return above_low and below_high

    def describe(self) -> str:
        """The interval in mathematical notation: "(0, inf)", "[1, inf)", "(0, 1]"."""
        left = "[" if self.low is not None and self.closed in ("both", "left") else "("
        right = "]" if self.high is not None and self.closed in ("both", "right") else ")"
        return f"{left}{_bound(self.low, '-inf')}, {_bound(self.high, 'inf')}{right}"

    def requirement(self) -> str:
        return f"in {self.describe()}"


@dataclass(frozen=True, init=False)
class OneOf:
    """A fixed set of valid values, e.g. the feature classes a library knows."""

    choices: tuple[Any, ...]
    whole: ClassVar[bool] = False

    def __init__(self, *choices: Any):
        if not choices:
            raise ValueError("OneOf needs at least one choice")
        object.__setattr__(self, "choices", choices)

    def check(self, value: Any) -> bool:
        return value in self.choices

    def requirement(self) -> str:
        return f"one of {', '.join(map(str, self.choices))}"


@dataclass(frozen=True, init=False)
class AnyOf:
    """Alternatives: a value passes when it meets any one of ``constraints``."""

    constraints: tuple[Constraint, ...]

    def __init__(self, *constraints: Constraint):
        if not constraints:
            raise ValueError("AnyOf needs at least one constraint")
        object.__setattr__(self, "constraints", constraints)

    @property
    def whole(self) -> bool:
        return all(getattr(c, "whole", False) for c in self.constraints)

    def check(self, value: Any) -> bool:
        return any(c.check(value) for c in self.constraints)

    def requirement(self) -> str:
        return " or ".join(c.requirement() for c in self.constraints)


@dataclass(frozen=True)
class Length:
    """How many items a tuple option holds: exactly ``exact``, or ``at_least`` to ``at_most``."""

    exact: int | None = None
    at_least: int = 0
    at_most: int | None = None
    whole: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.exact is not None and (self.at_least or self.at_most is not None):
            raise ValueError("Length takes exact, or at_least and at_most, not both")

    def check(self, value: Any) -> bool:
        if not isinstance(value, (tuple, list)):
            return False
        if self.exact is not None:
            return len(value) == self.exact
        return len(value) >= self.at_least and (self.at_most is None or len(value) <= self.at_most)

    def requirement(self) -> str:
        if self.exact == 0:
            return "empty"
        if self.exact is not None:
            count, last = f"{self.exact}", self.exact
        elif self.at_most is None:
            count, last = f"at least {self.at_least}", self.at_least
        else:
            count, last = f"{self.at_least} to {self.at_most}", self.at_most
        return f"{count} item{'' if last == 1 else 's'} long (values separated by '/')"


@dataclass(frozen=True)
class Increasing:
    """Items in strictly increasing order, e.g. a window's lower bound below its upper one."""

    whole: ClassVar[bool] = True

    def check(self, value: Any) -> bool:
        try:
            return all(a < b for a, b in itertools.pairwise(value))
        except TypeError:
            return False

    def requirement(self) -> str:
        return "strictly increasing"


@dataclass(frozen=True)
class ExistingFile:
    """The path of an existing file (relative to the working directory); empty means not set."""

    whole: ClassVar[bool] = False

    def check(self, value: Any) -> bool:
        return isinstance(value, str) and (value == "" or Path(value).is_file())

    def requirement(self) -> str:
        return "an existing file (or empty for none)"


def _number(value: Any) -> numbers.Real | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return value  # ints stay ints: no overflow, exact comparisons
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _bound(value: float | None, unbounded: str) -> str:
    if value is None:
        return unbounded
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _coerce(value: Any, hint: Any, what: str) -> Any:
    if not isinstance(value, str):
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value.lower() in ("none", "null", "") and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, what)
            except UsageError as exc:
                errors.append(str(exc))
        raise UsageError(errors[0] if errors else f"{what}: cannot parse {value!r}")
    if origin is Literal:
        for choice in args:
            if str(choice) == value:
                return choice
        raise UsageError(f"{what} must be one of {', '.join(map(str, args))}, got {value!r}")
    if origin is tuple:
        item_type = args[0] if args else str
        return tuple(_coerce(v, item_type, what) for v in value.split("/") if v)
    if hint is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{what} must be true or false, got {value!r}")
    if hint in (int, float):
        try:
            return hint(value)
        except ValueError:
            raise UsageError(f"{what} must be {hint.__name__}, got {value!r}") from None
    return value

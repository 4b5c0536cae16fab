"""Plugin specs on the command line: ``name`` or ``name:key=value,key=value``.

Options are checked against the plugin's frozen config dataclass before any work
starts: an unknown key lists the valid ones, a bad value names its expected type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

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
    return config_cls(**values)


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

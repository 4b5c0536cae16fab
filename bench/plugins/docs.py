"""The options tables of the README, generated from the plugins' config dataclasses so they cannot drift.

Each row is one option: its plugin, name, default, the values it accepts (its declared constraints,
or the choices of a ``Literal``) and the comment written beside it in the config class.
``bench list extractors --options`` prints the table; a test keeps the README's copy equal to it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any, Literal

from bench.errors import PluginLoadError
from bench.plugins.labels import option_text
from bench.plugins.registry import Registry

_FIELD = re.compile(r"^\s+(\w+)\s*:")


def options_table(registry: Registry, distribution: str | None = None) -> str:
    """Markdown: one row per option of every plugin in ``registry`` (of ``distribution`` only, when given)."""
    lines = [f"| {registry.kind} | option | default | allowed | meaning |", "|---|---|---|---|---|"]
    names = [e.name for e in registry.entries() if distribution is None or e.distribution == distribution]
    for name in names:
        try:
            cls = registry.load(name)
        except PluginLoadError:  # an optional extra that is not installed: its options are not known here
            lines.append(f"| `{name}` | (install its extra to list its options) | | | |")
            continue
        config = getattr(cls, "Config", None)
        fields = dataclasses.fields(config) if config is not None and dataclasses.is_dataclass(config) else ()
        if not fields:
            lines.append(f"| `{name}` | - | | | takes no options |")
            continue
        comments = field_comments(config)
        hints = typing.get_type_hints(config)
        for f in fields:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            allowed = _allowed(f, hints[f.name])
            cells = [f"`{name}`", f"`{f.name}`", _default(default), allowed, comments.get(f.name, "")]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def field_comments(config: type) -> dict[str, str]:
    """The comment of each field: the one trailing its line (with continuation lines), else the lines above it."""
    try:
        source = inspect.getsource(config).splitlines()
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    last = None
    for line in source[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if last is not None and stripped.startswith("#   "):  # a trailing comment goes on
                out[last] = f"{out[last]} {text}".strip()
            else:
                above.append(text)
                last = None
            continue
        match = _FIELD.match(line)
        if match and not stripped.startswith(("def ", "@")):
            code, _, trailing = line.partition("  # ")
            out[match[1]] = trailing.strip() or " ".join(above)
            above, last = [], match[1]
        elif stripped:
            last = None if not line.startswith("    " * 2) else last
    return {k: v for k, v in out.items() if v}


def _default(value: Any) -> str:
    if value is None:
        return "(none)"
    text = option_text(value)
    return f"`{text}`" if text != "" else '`""`'


def _allowed(field: dataclasses.Field, hint: Any) -> str:
    constraints = field.metadata.get("constraints", ())
    if constraints:
        return "; ".join(c.requirement() for c in constraints)
    for arg in (hint, *typing.get_args(hint)):
        if typing.get_origin(arg) is Literal:
            return "one of " + ", ".join(map(str, typing.get_args(arg)))
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


MARKERS = {"extractors": ("<!-- options:extractors -->", "<!-- /options:extractors -->"),
           "models": ("<!-- options:models -->", "<!-- /options:models -->")}  # fmt: skip
DISTRIBUTION = "prognosis-bench"  # the README documents the built-in plugins


def readme_blocks() -> dict[str, str]:
    from bench.plugins.registry import EXTRACTORS, MODELS

    return {"extractors": options_table(EXTRACTORS, DISTRIBUTION), "models": options_table(MODELS, DISTRIBUTION)}


def splice(text: str, blocks: dict[str, str]) -> str:
    """``text`` with each marked block replaced by its generated table."""
    for what, (begin, end) in MARKERS.items():
        head, found, rest = text.partition(begin)
        _, found_end, tail = rest.partition(end)
        if not (found and found_end):
            raise ValueError(f"the README has no {begin} ... {end} block")
        text = f"{head}{begin}\n{blocks[what]}{end}{tail}"
    return text


if __name__ == "__main__":  # `make readme`: regenerate the README's option tables in place
    import sys
    from pathlib import Path

    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    readme.write_text(splice(readme.read_text(), readme_blocks()))

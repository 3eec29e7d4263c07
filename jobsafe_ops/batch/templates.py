"""The playbook template language: `{name}` placeholders, found by `fields` and filled
in by `render` (for commands, each value shell-quoted by shell.quote)."""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Mapping

from ..errors import ConfigError
from ..shell import quote

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORMATTER = string.Formatter()


def fields(template: str, where: str) -> list[str]:
    """Placeholder names of a template; only bare `{name}` (no format spec, no index)."""
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ConfigError(f"{where}: bad template {template!r} ({exc}); write {{{{ for a "
                          "literal brace") from None
    names = []
    for _, name, spec, conv in parts:
        if name is None:
            continue
        if not IDENT.match(name) or spec or conv:
            raise ConfigError(f"{where}: placeholder {{{name}{'!' + conv if conv else ''}"
                              f"{':' + spec if spec else ''}}} in {template!r} is not a bare "
                              "{name}; format specs and indexing are not supported")
        names.append(name)
    return names


@functools.lru_cache(maxsize=256)
def fields_cached(template: str, where: str) -> tuple[str, ...]:
    return tuple(fields(template, where))


def render(template: str, values: Mapping[str, str], *, shell: bool = False) -> str:
    """Substitute placeholders; with shell=True each value goes through `quote` (the one
    quoting helper), so `--symbol {symbol}` survives spaces and metacharacters."""
    out = []
    for literal, name, _, _ in _FORMATTER.parse(template):
        out.append(literal)
        if name is not None:
            value = values[name]
            out.append(quote(value) if shell else value)
    return "".join(out)

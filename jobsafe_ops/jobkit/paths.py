"""Checkpoint and artifact paths named by every job parameter (INV-1) and every category
dimension (INV-9). Pure: no filesystem access here.

A `CheckpointSpec` declares a family of files once: directory, stem, the category dimensions
and the job parameters, and a suffix. A path is then `<stem>_<cat...>_<param...><suffix>`,
fields in declaration order (categories first, so one category's files share a prefix).

Encoding (why it is unambiguous): a value keeps the characters `A-Z a-z 0-9 . + -` and every
other byte of its UTF-8 form becomes `%XX` - including `_` (the field separator), `/`, `%`,
spaces and `*`. A field therefore never contains `_`, the field count is fixed by the
declaration, and `%`-decoding is one-to-one: two different parameter sets never share a path
(INV-1: `threshold=750` and `threshold=1000` never collide), and a value can never climb out
of the directory. Values are rendered with `str()` (dates with `isoformat()`), so `250` and
`"250"` name the same job - as they do in the label.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import date
from os import PathLike
from pathlib import Path

from .errors import ParamError

Value = str | int | float | date
SEPARATOR = "_"
NAME_MAX = 255  # bytes in one path component on Linux and macOS
_SAFE = frozenset(string.ascii_letters + string.digits + ".+-")
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")
_SUFFIX = re.compile(r"^(\.[A-Za-z0-9]+)*$")
_FIELD = re.compile(r"^(?:[A-Za-z0-9.+-]|%[0-9A-F]{2})+$")


def encode_value(value: Value) -> str:
    """One path field: safe characters kept, every other UTF-8 byte as `%XX`."""
    text = value.isoformat() if isinstance(value, date) else str(value)
    out: list[str] = []
    for ch in text:
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def decode_value(field: str) -> str | None:
    """The value a field encodes, or None when it is not a canonical encoding."""
    if not _FIELD.match(field):
        return None
    raw = bytearray()
    i = 0
    while i < len(field):
        if field[i] == "%":
            raw.append(int(field[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(field[i]))
            i += 1
    try:
        text = raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None
    return text if encode_value(text) == field else None


@dataclass(frozen=True)
class CheckpointSpec:
    """A declared family of checkpoint or artifact files.

    `params`: every parameter that differs between jobs that may run at the same time
    (INV-1: symbol, threshold, start, end - not per-run flags such as verbose).
    `categories`: the dimensions that split derived artifacts into families that must never
    mix (INV-9: phase, direction); `scoped_glob` insists on them.
    """

    base_dir: Path
    stem: str
    params: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    suffix: str = ".json"

    def __init__(self, base_dir: str | PathLike[str], stem: str, *,
                 params: tuple[str, ...] | list[str] = (),
                 categories: tuple[str, ...] | list[str] = (),
                 suffix: str = ".json") -> None:
        object.__setattr__(self, "base_dir", Path(base_dir).expanduser())
        object.__setattr__(self, "stem", stem)
        object.__setattr__(self, "params", tuple(params))
        object.__setattr__(self, "categories", tuple(categories))
        object.__setattr__(self, "suffix", suffix)
        self._validate()

    def _validate(self) -> None:
        if not _STEM.match(self.stem):
            raise ParamError(f"checkpoint stem {self.stem!r} must be letters, digits, '.', "
                             "'+' or '-' (no '_': it separates the fields); e.g. 'range-bars'")
        if not _SUFFIX.match(self.suffix):
            raise ParamError(f"checkpoint suffix {self.suffix!r} must be empty or like '.json' "
                             "or '.ckpt.json'")
        seen: set[str] = set()
        for name in self.fields:
            if not isinstance(name, str) or not _IDENT.match(name):
                raise ParamError(f"{self.stem}: parameter name {name!r} is not an identifier; "
                                 "use names like 'symbol' or 'threshold'")
            if name in seen:
                raise ParamError(f"{self.stem}: {name!r} is declared twice; a name is either a "
                                 "category or a parameter, once")
            seen.add(name)

    @property
    def fields(self) -> tuple[str, ...]:
        """Every dimension of a path, in path order: categories, then parameters."""
        return self.categories + self.params

    def name(self, **values: Value) -> str:
        """The file name for one job; every declared field, nothing else (INV-1, INV-9)."""
        missing = [f for f in self.fields if f not in values]
        extra = sorted(set(values) - set(self.fields))
        if missing:
            raise ParamError(
                f"{self.stem}: missing parameter {', '.join(map(repr, missing))} (declared: "
                f"{', '.join(self.fields)}); pass {missing[0]}=... - a checkpoint without it "
                "is shared by jobs that differ in it (INV-1)")
        if extra:
            raise ParamError(
                f"{self.stem}: parameter {', '.join(map(repr, extra))} is not declared "
                f"(declared: {', '.join(self.fields) or 'none'}); add it to params= if it "
                "differs between jobs (INV-1), else do not pass it")
        encoded = [self._field(f, values[f]) for f in self.fields]
        name = SEPARATOR.join([self.stem, *encoded]) + self.suffix
        size = len(name.encode())
        if size > NAME_MAX:
            raise ParamError(f"{self.stem}: file name is {size} bytes, over the {NAME_MAX}-byte "
                             "limit of one path component; shorten the stem or pass a shorter "
                             "value (e.g. an id instead of a long string)")
        return name

    def path(self, **values: Value) -> Path:
        return self.base_dir / self.name(**values)

    def parse(self, path: str | PathLike[str]) -> dict[str, str] | None:
        """The field values a file of this family was named with (as strings), or None when
        the name does not belong to this family. Lets a job find its position from output
        names when a cursor is lost (AP-15's fallback)."""
        name = Path(path).name
        head = self.stem + (SEPARATOR if self.fields else "")
        if not name.startswith(head) or not name.endswith(self.suffix):
            return None
        body = name[len(head) : len(name) - len(self.suffix)] if self.suffix else name[len(head):]
        if not self.fields:
            return {} if body == "" else None
        parts = body.split(SEPARATOR)
        if len(parts) != len(self.fields):
            return None
        out: dict[str, str] = {}
        for field, part in zip(self.fields, parts, strict=True):
            value = decode_value(part)
            if value is None:
                return None
            out[field] = value
        return out

    def _field(self, name: str, value: Value) -> str:
        if not isinstance(value, str | int | float | date):
            raise ParamError(f"{self.stem}: parameter {name!r} is a {type(value).__name__}; "
                             "pass a str, int, float or date")
        encoded = encode_value(value)
        if not encoded:
            raise ParamError(f"{self.stem}: parameter {name!r} is empty; an empty value "
                             "usually means a missing argument - pass the real value")
        return encoded


def checkpoint_path(spec: CheckpointSpec, **values: Value) -> Path:
    """`spec.path(**values)`: the path for one job, from all its declared parameters."""
    return spec.path(**values)


"""The lexical layer under lint_shell: bash-like quoting, `$(...)` nesting, comments,
continuations and heredocs, so the rules see logical lines and simple commands."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

_HEREDOC = re.compile(r"(?<!<)<<(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
_RUNS_SHELL = re.compile(r"(?:^|[\s;|&(])(ssh|bash|sh|zsh|dash)(?:\s|$)")


@dataclass
class Logical:
    line: int
    code: str
    heredoc: tuple[int, str] | None = None   # (first body line, body) when it feeds a shell


def _chars(code: str, stack: list[str]) -> Iterator[tuple[int, str, str]]:
    """(index, text, context) over a line; `text` is one char, an escape pair or `$(`;
    `context` is where it stands before it acts: "" top level, "$(" or "(" inside a
    command substitution, '"' or "'" inside quotes. `stack` carries open quotes and
    substitutions across physical lines; `"$(cmd "x")"` nests the way bash nests it."""
    i = 0
    while i < len(code):
        c, nxt = code[i], code[i + 1:i + 2]
        top = stack[-1] if stack else ""
        if top == "'":
            if c == "'":
                stack.pop()
            yield i, c, top
            i += 1
            continue
        if c == "\\" and nxt:
            yield i, c + nxt, top
            i += 2
            continue
        if c == "$" and nxt == "(":
            stack.append("$(")
            yield i, "$(", top
            i += 2
            continue
        if top == '"':
            if c == '"':
                stack.pop()
        elif c in "'\"":
            stack.append(c)
        elif c == "(" and top in ("$(", "("):
            stack.append("(")
        elif c == ")" and top in ("$(", "("):
            stack.pop()
        yield i, c, top
        i += 1


def logical_lines(text: str, first_line: int = 1) -> list[Logical]:
    """Physical lines -> logical lines (comments stripped, continuations joined)."""
    lines = text.splitlines()
    out: list[Logical] = []
    buf: list[str] = []
    stack: list[str] = []
    start: int | None = None
    i = 0
    while i < len(lines):
        raw = lines[i]
        if start is None:
            start = i
        cont = False
        for j, piece, ctx in _chars(raw, stack):
            if piece == "\\" and j == len(raw) - 1 and ctx != "'":
                cont = True
            elif piece == "#" and ctx in ("", "$(", "(") and (not buf or buf[-1][-1:] in
                                                               " \t;|&("):
                break
            else:
                buf.append(piece)
        i += 1
        if stack and stack[-1] in ("'", '"'):
            buf.append("\n")
            continue
        if cont:
            continue
        if stack:  # an open $( ... ) or ( ... ) spans lines: one logical line
            buf.append("; ")
            continue
        code = "".join(buf)
        buf, logical = [], Logical(first_line + start, code)
        start = None
        m = _HEREDOC.search(code)
        if m:
            body_start, strip_tabs, word = i, m.group(1) == "-", m.group(3)
            while i < len(lines) and (lines[i].lstrip("\t") if strip_tabs
                                      else lines[i]) != word:
                i += 1
            if _RUNS_SHELL.search(code[:m.start()]):
                logical.heredoc = (first_line + body_start,
                                   "\n".join(lines[body_start:i]))
            i += 1
        if code.strip():
            out.append(logical)
    if buf and start is not None and "".join(buf).strip():
        out.append(Logical(first_line + start, "".join(buf)))
    return out


def split_commands(code: str) -> list[tuple[str, str]]:
    """A logical line -> [(separator before, simple command)] on unquoted `; && || | &`."""
    out: list[tuple[str, str]] = []
    sep, cur = "", list[str]()
    skip = -1
    for i, piece, ctx in _chars(code, []):
        if i <= skip:
            continue
        prev, nxt = code[i - 1:i], code[i + 1:i + 2]
        if ctx == "" and piece in (";", "|", "&", "\n") and not (
                piece == "&" and (prev in "<>" and prev or nxt == ">")):
            op = piece + nxt if (piece + nxt) in ("&&", "||", ";;", "|&") else piece
            out.append((sep, "".join(cur)))
            sep, cur, skip = op, [], i + len(op) - 1
            continue
        cur.append(piece)
    out.append((sep, "".join(cur)))
    return [(s, t) for s, t in out if t.strip()]


def substitutions(command: str) -> tuple[str, list[str]]:
    """`a=$(pueue add ...)` -> ("a=X", ["pueue add ..."]): each outermost `$( )` body is a
    command of its own; the outer command keeps a placeholder word."""
    outer: list[str] = []
    bodies: list[str] = []
    stack: list[str] = []
    start = -1
    for i, piece, _ctx in _chars(command, stack):
        if piece == "$(" and stack.count("$(") == 1 and start < 0:
            start = i + 2
            outer.append("X")
        elif start >= 0 and piece == ")" and "$(" not in stack:
            bodies.append(command[start:i])
            start = -1
        elif start < 0:
            outer.append(piece)
    return "".join(outer), bodies


def tokens(command: str) -> list[str]:
    try:
        return shlex.split(command, posix=True)
    except ValueError:  # unbalanced quote: good enough for matching words
        return command.split()

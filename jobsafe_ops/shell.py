"""Shell composition, pure: the one quoting helper and the lines built with it.

Every value that reaches a remote shell goes through `quote` (or `program` for a program
path, `join` for an argv). Nothing here does I/O or imports the SSH transport, so the
planner (batch/*, deploy/decide, templates) composes its command lines without loading
paramiko or reading the SSH settings; remote.py sends them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .inventory import Host


def quote(value: str) -> str:
    """The one quoting helper: every value that reaches a remote shell goes through it."""
    return shlex.quote(value)


def home_word(path: str) -> str:
    """A path as one shell word, keeping `~` and a leading `~/` meaningful (quoting would
    disable tilde expansion): `~/x` -> `"$HOME"/'x'`."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + quote(path[2:])
    return quote(path)


def program(path: str) -> str:
    """Quote a program path (see `home_word`): pueue lives in ~/.local/bin, which a
    non-login SSH PATH lacks."""
    return home_word(path)


def join(argv: Sequence[str]) -> str:
    """argv -> one shell line; argv[0] is a program path (see `program`)."""
    if not argv:
        return ""
    return " ".join([program(argv[0]), *(quote(a) for a in argv[1:])])


def exports(env: Sequence[tuple[str, str]]) -> str:
    """`export K='v' ...`: variables for the rest of one shell line, each value quoted."""
    return "export " + " ".join(f"{k}={quote(v)}" for k, v in env)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def lean_env_line(argv: Sequence[str], keep: Sequence[str] = ()) -> str:
    """`env -i NAME="$NAME" ... argv`: run argv with only the lean allow-list (the feeder's
    LEAN_ENV, plus `keep`), each variable taken from the host session when it is set.
    pueue stores the whole add-time environment of every task in its state file
    (docs/glossary.md): every remote `pueue add` goes through here or the feeder, so
    neither the SSH session's secrets nor bulk reach it. Only names travel on the line."""
    from .hostside.model import LEAN_ENV

    names = list(dict.fromkeys([*LEAN_ENV, *keep]))
    bad = [n for n in names if not _ENV_NAME.match(n)]
    if bad:
        raise ConfigError(f"environment variable name {bad[0]!r} is not valid; use letters, "
                          "digits and '_' (not starting with a digit)")
    kept = " ".join(f'${{{n}+"{n}=${n}"}}' for n in names)
    return f"env -i {kept} {join(argv)}"


def path_prefix(host: Host) -> str:
    """`export PATH=<the host file's path>:"$PATH"; `, put in front of every remote command
    (and so of every job: the feeder and `env -i` pass PATH on); "" without `path`."""
    if not host.path:
        return ""
    dirs = [home_word(d) for d in host.path]
    return f'export PATH={":".join(dirs)}:"$PATH"; '


def shell_line(command: str | Sequence[str]) -> str:
    """A command as the shell line that runs it: a string as is, an argv through `join`."""
    return command if isinstance(command, str) else join(command)


def verify_and_rename(tmp: str, final: str, size: int, sha256: str) -> str:
    """One shell line: rename `tmp` to `final` only when it has exactly `size` bytes and
    this sha256; otherwise remove it and fail (the file never appears half-written)."""
    t, f = program(tmp), program(final)
    return (f'if [ "$(wc -c < {t})" -eq {size} ] && '
            f'[ "$(sha256sum < {t} | cut -c1-64)" = {quote(sha256)} ]; '
            f"then mv -f {t} {f}; else rm -f {t}; "
            f"echo 'uploaded copy is incomplete or corrupt (disk full?); removed' >&2; "
            "exit 1; fi")

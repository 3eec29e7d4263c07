"""FakeRemote: a `Remote` for unit tests and the demo that answers commands by their argv
and records every command it was sent.

`Remote.run` hands its transport hook both the shell line and the argv of the call
(`_run(line, argv=...)`): an argv command is its own argv, a shell line that wraps one
program call (the lean `env -i ... pueue add` line, `git fetch && ...`) passes that call's
argv alongside. FakeRemote answers those by argv prefix (`on`), never by a substring of the
joined line. A composite script with no argv (the probe, the git facts, the lock's `mkdir`)
is answered by the section marker it prints (`on_script("@@nproc", ...)`): the marker is
the script's output protocol, which its parser reads too.

Each handler says whether the command changes the host (`mutates=True`); `sent` keeps every
command in order with that flag, so a test can compare what a run changed with what a
dry run planned (tests/deploy/test_dry_is_the_plan.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..inventory import Host
from ..remote import Remote, Result
from ..shell import path_prefix

ANY = object()  # in an argv prefix: any one token


@dataclass(frozen=True)
class Sent:
    """One command as the transport received it."""

    line: str  # the shell line sent, path prefix included
    argv: tuple[str, ...] | None  # the call's argv (None: a composite script)
    mutates: bool  # the handler that answered it changes the host
    stdin: str | None = None
    command: str = ""  # the line without the host file's PATH prefix (what the caller ran)


Reply = str | Result | Callable[[Sent], str | Result]


@dataclass
class _Handler:
    prefix: tuple[object, ...] | None
    marker: str | None
    reply: Reply
    mutates: bool
    times: int | None  # answer this many times, then step aside (None: always)

    def matches(self, argv: tuple[str, ...] | None, line: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.prefix is not None:
            return argv is not None and len(argv) >= len(self.prefix) and all(
                p is ANY or p == a for p, a in zip(self.prefix, argv, strict=False))
        return argv is None and self.marker is not None and self.marker in line


class FakeRemote(Remote):
    """Scripted host: `on(argv_prefix, reply)`, `on_script(marker, reply)`; the newest
    matching handler answers. An unanswered command fails the test (`default=None`) or gets
    `default`."""

    def __init__(self, host: Host, default: Reply | None = None) -> None:
        super().__init__(host)
        self.default = default
        self.sent: list[Sent] = []
        self.files: dict[str, str] = {}  # put_text uploads
        self._handlers: list[_Handler] = []

    def on(self, prefix: Sequence[object], reply: Reply, *, mutates: bool = False,
           times: int | None = None) -> FakeRemote:
        self._handlers.append(_Handler(tuple(prefix), None, reply, mutates, times))
        return self

    def on_script(self, marker: str, reply: Reply, *, mutates: bool = False,
                  times: int | None = None) -> FakeRemote:
        self._handlers.append(_Handler(None, marker, reply, mutates, times))
        return self

    # ---- what was sent ------------------------------------------------------------------

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        return [s.argv for s in self.sent if s.argv is not None]

    @property
    def mutations(self) -> list[Sent]:
        return [s for s in self.sent if s.mutates]

    def lines(self) -> list[str]:
        return [s.line for s in self.sent]

    # ---- the transport hook ----------------------------------------------------------------

    def _run(self, text: str, *, argv: tuple[str, ...] | None, timeout: float | None,
             stdin: str | None) -> Result:
        prefix = path_prefix(self.host)
        command = text[len(prefix):] if text.startswith(prefix) else text
        handler = next((h for h in reversed(self._handlers) if h.matches(argv, command)),
                       None)
        if handler is None and self.default is None:
            self.sent.append(Sent(text, argv, False, stdin, command))
            raise AssertionError(f"FakeRemote({self.host.name}): no answer for "
                                 f"{argv if argv is not None else command!r}")
        sent = Sent(text, argv, handler.mutates if handler else False, stdin, command)
        self.sent.append(sent)
        reply = handler.reply if handler else self.default
        if handler is not None and handler.times is not None:
            handler.times -= 1
        if callable(reply):
            reply = reply(sent)
        assert reply is not None
        return reply if isinstance(reply, Result) else Result(text, reply, "", 0)

    def _put_text(self, text: str, path: str, mode: int) -> None:
        self.files[path] = text


def result(stdout: str = "", stderr: str = "", exited: int = 0) -> Result:
    """A reply with an exit status or stderr (a plain str reply is stdout, exit 0)."""
    return Result("", stdout, stderr, exited)

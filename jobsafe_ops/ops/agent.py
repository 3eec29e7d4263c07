"""The laptop side of the operations agent (hostside/ops_agent.py): the one shell line that
runs it on the host (sent compressed, nothing left behind) and the parse of its
`@@meta` / `@@end` / `@@error` protocol. Pure except `run_agent`/`stream_agent`."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import journal
from ..errors import (
    EXIT_BAD_INPUT,
    EXIT_NOTHING_SELECTED,
    EXIT_REFUSED,
    ConfigError,
    NothingSelected,
    RefusedError,
    RemoteError,
)
from ..hostside import model
from ..mirror import AGENT_LOADER
from ..remote import Remote
from ..shell import join

HOST_JOURNAL = model.JOURNAL


def agent_argv(mode: str, pueue: str, args: Mapping[str, Any] | None = None) -> list[str]:
    """`python3 -c <agent> MODE --pueue P --key value...`: True is a bare flag, None/False
    are left out."""
    argv = ["python3", "-c", AGENT_LOADER, mode, "--pueue", pueue]
    for key, value in (args or {}).items():
        if value is None or value is False:
            continue
        argv.append("--" + key.replace("_", "-"))
        if value is not True:
            argv.append(str(value))
    return argv


def agent_line(mode: str, pueue: str, args: Mapping[str, Any] | None = None) -> str:
    """The agent's argv as one shell line, every value one quoted word."""
    return join(agent_argv(mode, pueue, args))


def entry_for(host: str, action: str, **extra: Any) -> str:
    """The journal fields the agent completes (time, labels, result) on the host."""
    base = {"operator": journal.operator(), "host": host, "action": action, **extra}
    return json.dumps(base, separators=(",", ":"), default=str)


@dataclass
class AgentReply:
    meta: dict[str, Any] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    body: list[str] = field(default_factory=list)  # lines that are not protocol lines

    def feed(self, line: str) -> str | None:
        """Take one stdout line; return it when it is output (not protocol)."""
        for kind in ("meta", "end", "error"):
            if line.startswith(f"@@{kind} "):
                try:
                    doc = json.loads(line[len(kind) + 3:])
                except ValueError:
                    break
                if kind == "meta":
                    self.meta = doc
                elif kind == "end":
                    self.end = doc
                else:
                    self.error = doc
                return None
        self.body.append(line)
        return line


def parse_reply(text: str) -> AgentReply:
    reply = AgentReply()
    for line in text.splitlines():
        reply.feed(line)
    return reply


def raise_for(host: str, reply: AgentReply, exited: int, stderr: str) -> None:
    """The agent's error as the exception carrying its exit code; a crash as exit 4."""
    if reply.error is not None:
        message = f"{host}: {reply.error.get('message')}"
        code = int(reply.error.get("code") or 4)
        if code == EXIT_BAD_INPUT:
            raise ConfigError(message)
        if code == EXIT_REFUSED:
            raise RefusedError(message)
        if code == EXIT_NOTHING_SELECTED:
            raise NothingSelected(message)
        raise RemoteError(message)
    if exited != 0:
        detail = (stderr.strip().splitlines() or [f"exit {exited}"])[-1]
        raise RemoteError(f"{host}: the jobsafe agent failed on the host: {detail} (python3 "
                          "is required on the host, as for submit-batch)")


def run_agent(remote: Remote, mode: str, args: Mapping[str, Any] | None = None,
              *, stdin: str | None = None) -> AgentReply:
    result = remote.run(agent_argv(mode, remote.host.pueue, args), check=False, stdin=stdin)
    reply = parse_reply(result.stdout)
    raise_for(remote.host.name, reply, result.exited, result.stderr)
    return reply


def stream_agent(remote: Remote, mode: str, args: Mapping[str, Any],
                 on_output: Callable[[str], None],
                 on_meta: Callable[[dict[str, Any]], None] = lambda m: None) -> AgentReply:
    reply = AgentReply()

    def line(text: str) -> None:
        had_meta = bool(reply.meta)
        out = reply.feed(text)
        if out is not None:
            on_output(out)
        elif reply.meta and not had_meta:
            on_meta(reply.meta)

    result = remote.stream(agent_line(mode, remote.host.pueue, args), line, check=False)
    raise_for(remote.host.name, reply, result.exited, result.stderr)
    return reply

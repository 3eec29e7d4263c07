"""`jobsafe logs --host H --label L [--group G] [--attempt N] [--follow]`: the output of one
attempt of a label, never by pueue id.

The label is resolved to its task on the host, in the same run that reads the log
(ops_agent.py `logs`): the newest attempt (`X`, `X-retry-1`, ... the highest retry number)
or attempt N; each attempt is its own fresh task, so this is never the appended log of a
restarted task (AP-3). A units-mode command (one pueue task runs many labels) is found in
its unit's file and shown as its own section of the unit's log. `--follow` streams a
queued or running attempt until it ends (Ctrl-C ends it: exit 130).

On a Slurm host (`scheduler = "slurm"`) the same run reads squeue and the batch dirs on the
login node instead: the attempts are the labels the ledger and squeue know, the output is
the element's `<batch>/logs/<label>.log`, and `--follow` streams it until squeue no longer
shows the element (its end state from the ledger).

Output: the log on stdout (pipeable), one header line on stderr; --json: the envelope
with the output in `result`.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, JobsafeError
from ..remote import Remote
from .agent import AgentReply, run_agent, stream_agent


@dataclass
class LogsReport:
    host: str
    label: str
    group: str | None = None
    attempt: int = 0
    state: str = ""
    unit: str | None = None
    attempts: list[str] = field(default_factory=list)
    shown: str = ""  # the attempt's own label
    output: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "label": self.label, "group": self.group,
                "attempt": self.attempt, "shown": self.shown, "state": self.state,
                "unit": self.unit, "attempts": self.attempts, "output": self.output}


def check_args(label: str | None, group: str | None, attempt: int | None) -> None:
    if not label or not label.strip():
        raise ConfigError("--label is required: the job's label, e.g. --label 'BTCUSDT@250'")
    if group is not None and not group.strip():
        raise ConfigError("--group '' is empty; pass a group name, or leave --group out")
    if attempt is not None and attempt < 0:
        raise ConfigError(f"--attempt {attempt}: must be >= 0 (0 is the first run)")


def report_of(host: str, label: str, reply: AgentReply) -> LogsReport:
    meta = {**reply.meta, **(reply.end or {})}
    attempt = int(meta.get("attempt") or 0)
    shown = str(meta.get("label") or label)
    return LogsReport(host=host, label=label, group=meta.get("group"), attempt=attempt,
                      state=str(meta.get("state") or ""), unit=meta.get("unit"),
                      attempts=list(meta.get("attempts") or []), shown=shown,
                      output="\n".join(reply.body) + ("\n" if reply.body else ""))


def header(meta: dict[str, Any]) -> str:
    where = f" in unit {meta['unit']}" if meta.get("unit") else ""
    attempts = meta.get("attempts") or []
    return (f"== {meta.get('label')} (group {meta.get('group')}, attempt "
            f"{meta.get('attempt', 0)} of {max(len(attempts), 1)}{where}): "
            f"{meta.get('state')}")


@contextmanager
def interruptible(remote: Remote) -> Iterator[list[bool]]:
    """Ctrl-C while a follow streams: Invoke's runner would catch the KeyboardInterrupt,
    send ^C into a channel without a terminal and keep waiting; instead the connection is
    closed (the host ends `pueue follow` with the session) and the caller raises
    KeyboardInterrupt itself (exit 130). A local host has no connection: interrupt as is."""
    stopped: list[bool] = []

    def on_sigint(signum: int, frame: Any) -> None:
        stopped.append(True)
        if remote.host.is_local:
            raise KeyboardInterrupt
        remote.close()

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: leave Ctrl-C as it is
        yield stopped
        return
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGINT, previous)


def logs_cmd(host: str, label: str | None, group: str | None, attempt: int | None,
             follow: bool, inventory: str | None, json_out: bool) -> int:
    from ..cli import HostRow, hosts_for, print_json
    from ..console import err_console
    from ..remote import session

    check_args(label, group, attempt)
    assert label is not None
    hosts = hosts_for(host, inventory)
    if len(hosts) != 1:
        raise ConfigError(f"--host {host!r} selects {len(hosts)} hosts; logs reads one "
                          "host's log: name one host")
    if hosts[0].is_slurm and group is not None:
        hosts[0].group(group)  # a group the host file does not declare: bad input
    args = {"group": group, "label": label, "attempt": attempt, "follow": follow,
            "scheduler": "slurm" if hosts[0].is_slurm else None}
    with session(hosts[0]) as remote:
        if json_out:
            reply = run_agent(remote, "logs", args)
        else:
            def out(line: str) -> None:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

            with interruptible(remote) as stopped:
                try:
                    reply = stream_agent(remote, "logs", args, out,
                                         lambda m: err_console.print(header(m),
                                                                     highlight=False,
                                                                     markup=False))
                except JobsafeError:
                    if stopped:  # our own close after Ctrl-C: not a host failure
                        raise KeyboardInterrupt from None
                    raise
            if stopped:
                raise KeyboardInterrupt
    report = report_of(hosts[0].name, label, reply)
    if json_out:
        print_json(0, [HostRow(report.host, True, 0, None, report)])
    elif reply.end and reply.end.get("state") != reply.meta.get("state"):
        err_console.print(f"== ended: {reply.end.get('state')}", highlight=False, markup=False)
    return 0

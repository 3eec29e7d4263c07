"""The outcome ledger, laptop side: how a job command is wrapped so that it records its
outcome on the host when it ends, and how the recorded outcomes of tasks that `pueue clean`
removed are merged back into the pueue state a command reads (submit-batch, audit,
retry-failed). The host side is feeder.py (`run`: the wrapper; `unit`: per-command records)
and monitor_filter.py (reading: `read_ledger`, `relevant`, `merge_ledger`, and the `ledger`
mode that prints the relevant records).

Why a wrapper and not pueue's daemon `callback`: the callback is one global setting of the
operator's pueued (pueue.yml, shared by every user of the daemon and every tool), runs
after the fact without our label's batch, and is not ours to change; a wrapper is part of
the task's own command, needs only the python3 the feeder already requires, and records the
commands inside a unit too (one pueue task, many labels).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import RemoteError
from ..hostside import monitor_filter
from ..hostside.feeder import LEDGER_MARK, LEDGER_NAME, unwrap
from ..hostside.model import attempt_of, base_label
from ..scheduler.pueue import PueueState, Task, parse_state
from ..shell import join
from .snapshot import FILTER_LOADER

if TYPE_CHECKING:  # annotations only: the planner loads this without the SSH transport
    from ..remote import Remote


def ledger_path(batch_dir: str) -> str:
    return f"{batch_dir}/{LEDGER_NAME}"


def wrap(command: str, batch_dir: str, label: str, group: str) -> str:
    """The pueue command of a job: the feeder's `run` wrapper around `sh -c COMMAND`. The
    wrapper stays outside any systemd-run scope inside COMMAND, so an OOM kill of the
    capped job is still recorded (137)."""
    return join(["python3", f"{batch_dir}/feeder.py", "run", "--ledger", ledger_path(batch_dir),
                 "--label", label, "--group", group, "--", "sh", "-c", command])


def relabel(command: str, label: str, group: str) -> str:
    """A fresh re-add (`<label>-retry-N`) records under its own label: rewrap the command."""
    parts = unwrap(command)
    if parts is None:
        return command
    return wrap(parts[2], parts[0], label, group)


def scan_command(group: str | None, ledgers: Sequence[str] = (), succeeded: bool = False) -> str:
    argv = ["python3", "-c", FILTER_LOADER, "ledger"]
    if group:
        argv += ["--group", group]
    for path in ledgers:
        argv += ["--ledger", path]
    if succeeded:
        argv.append("--succeeded")
    return join(argv)


def parse_scan(text: str) -> dict[str, Any]:
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("{")]
    if not lines:
        return {"records": []}
    try:
        out: dict[str, Any] = json.loads(lines[-1])
    except ValueError:
        return {"records": []}
    return out


def read_records(remote: Remote, group: str | None) -> list[dict[str, Any]]:
    """The relevant records of every batch's ledger on the host (one round trip). A host
    without python3 has no ledger (its jobs could not be wrapped): nothing to merge."""
    result = remote.run(scan_command(group), check=False)
    records: list[dict[str, Any]] = parse_scan(result.stdout).get("records") or []
    return records


def merge(state: PueueState, records: Sequence[Mapping[str, Any]],
          cancelled: Sequence[Sequence[str]] = ()) -> PueueState:
    """pueue's state plus the recorded outcomes of labels it no longer has (and units
    replaced by their failed commands): the same rule as the monitor filter's. `cancelled`
    ([group, label] of the newest attempt `jobsafe cancel` recorded, submit-batch's scan):
    each becomes a task in state "cancelled", which a rerun skips (batch/plan.py), unless
    pueue still has that attempt or a newer one."""
    data: dict[str, Any] = {"tasks": {str(t.id): {"id": t.id, "group": t.group,
                                                  "label": t.label, "status": _status(t.state)}
                                      for t in state.tasks}}
    before = set(data["tasks"])
    monitor_filter.merge_ledger(data, [dict(r) for r in records])
    removed = {int(k) for k in before - set(data["tasks"])}
    added = {k: v for k, v in data["tasks"].items() if k not in before}
    try:
        extra = parse_state({"tasks": added, "groups": {}}).tasks
    except RemoteError:
        extra = ()
    extra = tuple(replace(t, command=_rewrapped(t.command, raw), path=t.path)
                  for t, raw in zip(extra, added.values(), strict=True))
    kept = tuple(t for t in state.tasks if t.id not in removed)
    tasks = kept + extra
    newest: dict[tuple[str, str], int] = {}
    for t in tasks:
        key = (t.group, base_label(t.label or ""))
        newest[key] = max(newest.get(key, -1), attempt_of(t.label or ""))
    stopped = tuple(Task(id=-len(extra) - 1 - n, group=str(g), label=str(label), command="",
                         path="", state="cancelled")
                    for n, (g, label) in enumerate(cancelled)
                    if newest.get((str(g), base_label(str(label))), -1) < attempt_of(str(label)))
    return replace(state, tasks=tasks + stopped)


def _status(state: str) -> Any:
    """Enough of a v4 status for merge_ledger's unit check (it only reads the state)."""
    if state == "success":
        return {"Done": {"result": "Success"}}
    if state == "failed":
        return {"Done": {"result": {"Failed": 1}}}
    if state == "killed":
        return {"Done": {"result": "Killed"}}
    return {state.capitalize(): {}}


def _rewrapped(inner: str, raw: Mapping[str, Any]) -> str:
    """A recorded failure keeps its inner command; a retry runs it wrapped again."""
    path = str(raw.get("ledger") or "")
    if not inner or not path.endswith("/" + LEDGER_NAME):
        return inner
    return wrap(inner, path[: -len(LEDGER_NAME) - 1], str(raw["label"]), str(raw["group"]))


def read_merged(remote: Remote, state: PueueState, group: str | None) -> PueueState:
    return merge(state, read_records(remote, group))


def marked(receipt: str) -> bool:
    """A receipt of a job whose outcome the ledger records (feeder.LEDGER_MARK)."""
    return receipt.endswith(LEDGER_MARK)

"""`jobsafe cancel --host H (--label GLOB | --playbook P) [--group G] [--dry]`: stop work by
label or by playbook, never by pueue id.

Verify before mutate, in one SSH round trip (ops_agent.py `cancel`): the agent reads every
group's tasks on the host, selects the matches (label or base label matching GLOB; or
every task the playbook's batch fed: its command is that batch's run wrapper or unit
runner), and refuses (exit 3, nothing changed) while an unfinished task outside the match
waits on a match (pueue would keep it queued forever, or fail it as a dependency). Then
it removes the queued matches, kills the running ones, waits for them to end and removes
them too, and records each label:

- in the batch's outcome ledger as `cancelled` (after the run wrapper's own `killed`
  line): monitor, audit, retry-failed and submit-batch's ledger merge never count a
  cancelled attempt (nor older attempts of that job) as failed, and never retry it; a
  rerun of submit-batch skips it (ledger.merge's "cancelled" tasks);
- in the team journal on the host (`~/.local/state/jobsafe-ops/journal.ndjson`), in the
  same run, and in the local journal.

On a Slurm host (`scheduler = "slurm"`) the same run reads squeue (elements named by their
batch's chunk files) and the ledgers: the pending matches are "queued", the running ones
"running"; one `scancel` takes the element ids squeue showed for them (`<array>_<index>`,
never typed), it waits for them to leave squeue and records each as `cancelled` in its
batch's ledger - so neither a rerun of submit-batch nor retry-failed submits it again -
and in the team journal. Pending elements outside the match whose array waits (afterok)
on a matched element's array are dependants: refused as on pueue (they would stay pending
as DependencyNeverSatisfied).

`--dry` does the same read and prints what would be removed and killed. Finished matches
are listed and left alone. Exit 0 done, 2 bad input, 3 refused (dependants), 4 a match
could not be stopped or the host failed, 6 nothing matches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .. import journal
from ..errors import EXIT_OK, EXIT_UNREACHABLE, ConfigError
from ..remote import Remote
from .agent import entry_for, run_agent

ACTION = "cancel"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class CancelReport:
    host: str
    selector: dict[str, Any]
    dry: bool
    queued: list[dict[str, Any]] = field(default_factory=list)
    running: list[dict[str, Any]] = field(default_factory=list)
    finished: list[dict[str, Any]] = field(default_factory=list)
    dependants: list[dict[str, Any]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    not_stopped: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_UNREACHABLE if self.not_stopped else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "selector": self.selector, "dry": self.dry,
                "queued": self.queued, "running": self.running, "finished": self.finished,
                "dependants": self.dependants, "removed": self.removed,
                "killed": self.killed, "not_stopped": self.not_stopped}


def batch_name(playbook: str) -> str:
    """The batch a playbook feeds (its `name`): from the playbook file when there is one,
    else the name itself (a playbook whose file is gone can still be cancelled)."""
    from ..batch.playbook import load_playbook

    try:
        return load_playbook(playbook).name
    except ConfigError:
        if _NAME.match(playbook):
            return playbook
        raise


def selector(label: str | None, playbook: str | None, group: str | None) -> dict[str, Any]:
    """Exactly one of --label / --playbook; --group narrows either. Pure (but the playbook
    file read)."""
    if (label is None) == (playbook is None):
        raise ConfigError("cancel needs exactly one of --label GLOB or --playbook P, e.g. "
                          "--label 'BTC*@250' or --playbook sweep")
    if label is not None and not label.strip():
        raise ConfigError("--label '' is empty; pass a glob, e.g. --label 'BTC*'")
    if group is not None and not group.strip():
        raise ConfigError("--group '' is empty; pass a group name, or leave --group out")
    out: dict[str, Any] = {"group": group}
    if label is not None:
        out["glob"] = label
    else:
        assert playbook is not None
        out["batch"] = batch_name(playbook)
    return out


def run_cancel(remote: Remote, sel: dict[str, Any], dry: bool) -> CancelReport:
    host = remote.host.name
    entry = entry_for(host, ACTION, **{k: v for k, v in sel.items() if v is not None})
    reply = run_agent(remote, "cancel", {**sel, "dry": dry, "entry": entry,
                                         "scheduler": "slurm" if remote.host.is_slurm
                                         else None})
    m = reply.meta
    report = CancelReport(host=host, selector=sel, dry=dry, queued=m.get("queued", []),
                          running=m.get("running", []), finished=m.get("finished", []),
                          dependants=m.get("dependants", []), removed=m.get("removed", []),
                          killed=m.get("killed", []), not_stopped=m.get("not_stopped", []))
    if not dry and (report.removed or report.killed or report.not_stopped):
        journal.append_local(host, ACTION, [*report.removed, *report.killed],
                       result="ok" if not report.not_stopped else "partial",
                       removed=report.removed, killed=report.killed,
                       not_stopped=report.not_stopped,
                       **{k: v for k, v in sel.items() if v is not None})
    return report


def cancel_cmd(host: str, label: str | None, playbook: str | None, group: str | None,
               dry: bool, inventory: str | None, json_out: bool) -> int:
    from rich.table import Table

    from ..cli import fan_out, finish, hosts_for
    from ..console import console
    from ..inventory import Host
    from ..remote import session

    sel = selector(label, playbook, group)
    hosts = hosts_for(host, inventory)

    def one(h: Host) -> CancelReport:
        if h.is_slurm and group is not None:
            h.group(group)  # a group the host file does not declare: bad input, before SSH
        with session(h) as remote:
            return run_cancel(remote, sel, dry)

    def render(r: CancelReport) -> None:
        what = f"--label {sel['glob']}" if "glob" in sel else f"--playbook {sel['batch']}"
        t = Table(title=f"cancel {r.host} {what}" + (" (dry run)" if r.dry else ""))
        for col in ("label", "group", "state", "action"):
            t.add_column(col, overflow="fold")
        done = set(r.removed) | set(r.killed)
        for kind, rows in (("remove", r.queued), ("kill", r.running)):
            for row in rows:
                act = (f"would {kind}" if r.dry else
                       ("removed" if kind == "remove" else "killed") if row["label"] in done
                       else "[bold red]not stopped")
                t.add_row(row["label"], row["group"], row["state"], act)
        for row in r.finished:
            t.add_row(row["label"], row["group"], row["state"], "finished: left alone")
        console.print(t)
        if r.dependants:
            console.print("dependants: " + ", ".join(d["label"] for d in r.dependants))

    return finish(fan_out(hosts, one), json_out, render, lambda r: r.exit_code,
                  error_of=lambda r: f"{r.host}: could not stop {', '.join(r.not_stopped)}; "
                                     "rerun the same cancel",
                  summary=lambda r: f"{len(r.removed)} removed, {len(r.killed)} killed")

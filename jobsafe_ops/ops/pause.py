"""`jobsafe pause --host H --group G` / `jobsafe resume --host H --group G`: pueue's own
group pause (`pueue pause --group G --wait`: no new starts, running jobs finish) and start
(`pueue start --group G`), each journaled on the host in the same round trip and locally.
On a Slurm host (`scheduler = "slurm"`): `scontrol uhold` of the group's pending elements
(running ones finish, held ones stay pending) and `scontrol release` of the ones held so,
their ids read from squeue in the same run (ops_agent.py `group --scheduler slurm`).

Resume refuses (exit 3, nothing changed) while the deploy lock of the host's checkout is
held by another operator (deploy/lock.py): a deploy pauses groups on purpose, and a
resume under it would start jobs on code that is being replaced. A stale lock (TTL passed,
or its owner process on this laptop gone) does not block; `deploy --break-lock` clears it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import journal
from ..deploy import lock
from ..errors import ConfigError, RefusedError
from ..remote import Remote
from .agent import entry_for, run_agent


@dataclass(frozen=True)
class GroupReport:
    host: str
    group: str
    action: str  # pause | resume
    status: str | None  # the group's status afterwards (Running | Paused)
    scheduler: str = "pueue"
    labels: tuple[str, ...] = ()  # slurm: the pending elements held (pause) or released

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "group": self.group, "action": self.action,
                "status": self.status, "scheduler": self.scheduler,
                "labels": list(self.labels)}

    def describe(self) -> str:
        if self.scheduler == "slurm":
            verb = "held" if self.action == "pause" else "released"
            return (f"{self.host}: group {self.group} {self.action}d ({len(self.labels)} "
                    f"pending element(s) {verb}; status: {self.status})")
        return f"{self.host}: group {self.group} {self.action}d (pueue status: {self.status})"


def blocking(state: lock.LockState, me: str) -> str | None:
    """Why a resume must wait, or None. Pure."""
    if not state.held or state.stale:
        return None
    if state.owner is not None and state.owner.operator == me:
        return None
    return state.describe()


def run_group(remote: Remote, group: str, action: str) -> GroupReport:
    host = remote.host
    if action == "resume":
        why = blocking(lock.read(remote, lock.lock_path(host)), journal.operator())
        if why is not None:
            raise RefusedError(f"{host.name}: refusing to resume group {group!r}: the deploy "
                               f"lock is {why}; wait for that deploy to finish (or, if it "
                               "died, `jobsafe deploy --break-lock`)")
    entry = entry_for(host.name, f"group-{action}", group=group)
    reply = run_agent(remote, "group", {"group": group, "action": action, "entry": entry,
                                        "scheduler": "slurm" if host.is_slurm else None})
    journal.append_local(host.name, f"group-{action}", [],
                   result=str(reply.meta.get("result")),
                   group=group)
    if reply.meta.get("result") != "ok":
        from ..errors import RemoteError

        raise RemoteError(f"{host.name}: {host.scheduler} {action} of group {group!r} "
                          f"failed: {reply.meta.get('error')}")
    return GroupReport(host.name, group, action, reply.meta.get("status"), host.scheduler,
                       tuple(str(x) for x in reply.meta.get("labels") or ()))


def group_cmd(action: str, host: str, group: str | None, inventory: str | None,
              json_out: bool) -> int:
    from ..cli import fan_out, finish, hosts_for
    from ..console import console
    from ..inventory import Host
    from ..remote import session

    if not group or not group.strip():
        raise ConfigError(f"--group is required: {action} acts on one pueue group")
    hosts = hosts_for(host, inventory)

    def one(h: Host) -> GroupReport:
        if h.is_slurm:
            h.group(group)  # a group the host file does not declare: bad input, before SSH
        with session(h) as remote:
            return run_group(remote, group, action)

    return finish(fan_out(hosts, one), json_out,
                  lambda r: console.print(r.describe(), highlight=False, markup=False),
                  summary=lambda r: f"{r.group}: {r.status}")


def pause_cmd(host: str, group: str | None, inventory: str | None, json_out: bool) -> int:
    return group_cmd("pause", host, group, inventory, json_out)


def resume_cmd(host: str, group: str | None, inventory: str | None, json_out: bool) -> int:
    return group_cmd("resume", host, group, inventory, json_out)

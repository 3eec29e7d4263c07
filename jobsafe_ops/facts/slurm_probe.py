"""probe on a Slurm host (`scheduler = "slurm"`): the login node's facts and the cluster's in
one round trip - `scontrol show config` (memory enforcement: the INV-7 verdict, MaxArraySize,
accounting), `sinfo` (partitions, nodes, CPUs, memory), where the programs resolve - plus,
for submit-batch and monitor, this batch's elements and ledger outcomes (`slurm_feed.py
status`, when the batch has been submitted before). Parsers are pure (scheduler/slurm.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Group as RGroup
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from ..inventory import Host
from ..remote import Remote
from ..scheduler import slurm
from ..shell import home_word, quote
from .probe import Verdict, sections

PROGRAMS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "python3")
LEVEL_STYLE = {"ok": "green", "warn": "yellow", "alarm": "bold red", "unknown": "dim"}



def probe_script(status: tuple[str, str] | None = None, extra: str = "") -> str:
    """`status`: (batch dir, playbook) whose elements and outcomes to read as well;
    `extra`: more sections (shell lines printing their own @@name)."""
    progs = "\n".join(f"printf '%s\\t%s\\n' {p} \"$(command -v {p} 2>/dev/null)\""
                      for p in PROGRAMS)
    if status is not None:
        bdir, playbook = status
        feed = home_word(f"{bdir}/slurm_feed.py")
        extra = (f"echo @@status; if [ -f {feed} ]; then python3 {feed} status --batch-dir "
                 f"{home_word(bdir)} --playbook {quote(playbook)} 2>&1; fi\n") + extra
    return f"""echo @@home; printf '%s\\n' "$HOME"
echo @@path; printf '%s\\n' "$PATH"
echo @@programs
{progs}
echo @@config; scontrol show config 2>&1; echo "rc $?"
echo @@sinfo; sinfo -h -N -o {quote(slurm.SINFO_NODES)} 2>&1; echo "rc $?"
{extra}echo @@end
"""


@dataclass(frozen=True)
class SlurmProbe:
    host: str
    home: str
    path: str | None
    programs: tuple[tuple[str, str | None], ...]
    version: str | None
    error: str | None  # the cluster does not answer (scontrol/sinfo failed)
    nodes: tuple[slurm.Node, ...]
    memcap: bool
    memcap_reason: str
    max_array: int
    accounting: bool
    accounting_reason: str
    task_plugin: str
    status: dict[str, Any] | None = field(default=None, compare=False)
    scheduler: str = "slurm"
    max_jobs: int | None = None  # MaxJobCount (each array element counts)

    @property
    def partitions(self) -> list[str]:
        return list(dict.fromkeys(n.partition for n in self.nodes))

    @property
    def default_partition(self) -> str | None:
        return next((n.partition for n in self.nodes if n.default), None)

    @property
    def cpus(self) -> int:
        return sum({n.name: n.cpus for n in self.nodes}.values())

    @property
    def memory_mb(self) -> int:
        return sum({n.name: n.memory_mb for n in self.nodes}.values())

    @property
    def unresolved(self) -> list[str]:
        return [name for name, where in self.programs if where is None]

    def expand(self, path: str) -> str:
        if path == "~" or path.startswith("~/"):
            return self.home.rstrip("/") + path[1:]
        return path

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("status")
        d["programs"] = dict(self.programs)
        d["partitions"] = self.partitions
        d["default_partition"] = self.default_partition
        d["cpus"] = self.cpus
        d["memory_mb"] = self.memory_mb
        return d


def parse_probe(host: str, text: str) -> SlurmProbe:
    s = sections(text)
    config_lines = s.get("config", [])
    rc = config_lines[-1] if config_lines else "rc 1"
    cfg = slurm.parse_config("\n".join(config_lines[:-1]))
    sinfo = s.get("sinfo", [])
    error = None
    if rc != "rc 0" or not cfg:
        detail = [ln for ln in config_lines[:-1] if ln.strip()]
        error = (f"scontrol show config failed: {detail[-1] if detail else rc}; is "
                 "slurmctld up and SLURM_CONF right on the login node?")
    memcap, reason = slurm.memory_enforcement(cfg) if cfg else (False, error or "?")
    acct, acct_reason = slurm.accounting(cfg) if cfg else (False, "?")
    status: dict[str, Any] | None = None
    for line in s.get("status", []):
        if line.startswith("{"):
            try:
                status = json.loads(line)
            except ValueError:
                status = None
    programs = []
    for line in s.get("programs", []):
        name, sep, where = line.partition("\t")
        if sep and name:
            programs.append((name, where.strip() or None))
    return SlurmProbe(
        host=host, home=(s.get("home") or [""])[0], path=(s.get("path") or [""])[0] or None,
        programs=tuple(programs), version=cfg.get("SLURM_VERSION"), error=error,
        nodes=slurm.parse_sinfo("\n".join(sinfo[:-1])), memcap=memcap, memcap_reason=reason,
        max_array=slurm.max_array_size(cfg), accounting=acct, accounting_reason=acct_reason,
        task_plugin=cfg.get("TaskPlugin", ""), status=status,
        max_jobs=slurm.max_job_count(cfg))


def run_probe(remote: Remote, status: tuple[str, str] | None = None) -> SlurmProbe:
    result = remote.run(probe_script(status), check=False)
    return parse_probe(remote.host.name, result.stdout)


def verdicts(p: SlurmProbe, host: Host) -> list[Verdict]:
    out = [Verdict("slurm", p.error is None, "ok" if p.error is None else "alarm",
                   p.version or "?", p.error or "slurmctld answers")]
    missing = p.unresolved
    out.append(Verdict("programs", not missing, "warn" if missing else "ok",
                       "missing: " + ", ".join(missing) if missing else "all found",
                       f"not on {host.name}'s PATH ({p.path or '?'})" if missing else
                       ", ".join(f"{n} {w}" for n, w in p.programs)))
    if host.partition and p.nodes and host.partition not in p.partitions:
        out.append(Verdict("partition", False, "alarm", host.partition,
                           f"not a partition of the cluster ({', '.join(p.partitions)}); fix "
                           f"partition in {host.source or 'the host file'}"))
    if host.memory_cap:
        out.append(Verdict("memory cap", p.memcap, "ok" if p.memcap else "warn",
                           "enforced" if p.memcap else "not enforced", p.memcap_reason))
    out.append(Verdict("accounting", True, "ok" if p.accounting else "unknown",
                       "sacct" if p.accounting else "none", p.accounting_reason))
    return out


def probe_view(p: SlurmProbe, host: Host) -> RenderableType:
    facts = Table(title=f"probe {p.host} (slurm)", show_header=False)
    facts.add_column("fact", style="bold")
    facts.add_column("value")
    facts.add_row("slurm", p.version or f"[red]{escape(p.error or '?')}")
    facts.add_row("partitions", ", ".join(
        f"{x}*" if x == p.default_partition else x for x in p.partitions) or "?")
    facts.add_row("nodes", f"{len({n.name for n in p.nodes})} ({p.cpus} CPUs, "
                  f"{p.memory_mb / 1024:.1f} GiB)")
    facts.add_row("memory cap", ("yes: " if p.memcap else "no: ") + escape(p.memcap_reason))
    facts.add_row("MaxArraySize", str(p.max_array))
    facts.add_row("MaxJobCount", str(p.max_jobs or "?"))
    facts.add_row("accounting", escape(p.accounting_reason))
    facts.add_row("programs", ", ".join(
        f"{n} {escape(w)}" if w else f"[red]{n} NOT FOUND" for n, w in p.programs))
    health = Table(title="health")
    for col in ("check", "verdict", "value", "why"):
        health.add_column(col)
    for v in verdicts(p, host):
        health.add_row(v.name, f"[{LEVEL_STYLE[v.level]}]{v.level}", escape(v.value),
                       escape(v.detail))
    nodes = Table(title="nodes")
    for col in ("node", "partition", "cpus", "memory", "state"):
        nodes.add_column(col)
    for n in p.nodes:
        nodes.add_row(n.name, n.partition, str(n.cpus), f"{n.memory_mb} MB", n.state)
    return RGroup(facts, health, nodes)

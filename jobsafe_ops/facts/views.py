"""rich renderables built from result objects (tested against a fixed-width buffer)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group as RGroup
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from ..inventory import Host
from .audit import Audit
from .probe import Probe, verdicts

LEVEL_STYLE = {"ok": "green", "warn": "yellow", "alarm": "bold red", "unknown": "dim"}


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**3:.1f} GiB"


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def hosts_table(inv: Mapping[str, Host]) -> Table:
    t = Table(title="inventory")
    for col in ("host", "ssh", "project", "package", "memory cap", "groups (parallel min..max)"):
        t.add_column(col)
    for h in inv.values():
        groups = ", ".join(f"{g.name}={g.parallel} ({g.min}..{g.max})" for g in h.groups.values())
        t.add_row(h.name, h.ssh, h.project_dir, h.package, "yes" if h.memory_cap else "no",
                  groups)
    return t


def probe_view(p: Probe, host: Host) -> RenderableType:
    facts = Table(title=f"probe {p.host}", show_header=False)
    facts.add_column("fact", style="bold")
    facts.add_column("value")
    load = "?" if p.load is None else " ".join(f"{x:.2f}" for x in p.load)
    facts.add_row("cores (nproc)", str(p.nproc))
    facts.add_row("memory", f"{_gib(p.mem_available)} available of {_gib(p.mem_total)}")
    facts.add_row("load 1/5/15", load)
    facts.add_row("swap in/out", f"{p.swap_in}/{p.swap_out} pages")
    facts.add_row("pueue", p.pueue_version or f"[red]{p.pueue_error}")
    if p.programs:  # where each resolves under the PATH remote commands and jobs get
        facts.add_row("PATH", escape(p.path or "?"))
        facts.add_row("programs", ", ".join(
            f"{n} {escape(w)}" if w else f"[red]{n} NOT FOUND" for n, w in p.programs))
    facts.add_row("state file", f"{p.state_file} ({p.state_size} bytes)" if p.state_file
                  else "none yet")
    facts.add_row("memory cap", ("yes: " if p.memcap else "no: ") + p.memcap_reason)
    if p.dotenv is not None:  # AP-16: where the job's secrets live (never its contents)
        facts.add_row(".env", f"{p.dotenv_path}: " + (
            "absent" if p.dotenv == "absent" else f"mode {p.dotenv}"))
    health = Table(title="health")
    for col in ("check", "verdict", "value", "why"):
        health.add_column(col)
    for v in verdicts(p, host):
        health.add_row(v.name, f"[{LEVEL_STYLE[v.level]}]{v.level}", v.value, v.detail)
    groups = Table(title="groups")
    for col in ("group", "status", "parallel", "counts"):
        groups.add_column(col)
    for g in p.groups:
        counts = ", ".join(f"{k}={n}" for k, n in sorted(g.counts.items())) or "empty"
        groups.add_row(g.name, g.status, str(g.parallel), counts)
    parts: list[RenderableType] = [facts, health, groups]
    if p.sizing:  # INV-6: what the host allows per declared group
        sized = Table(title="sizing: min(available x 0.8 / job_memory, cores x 0.8 / job_cpu)")
        for col in ("group", "parallel now", "max", "by memory", "by cpu", "allowed"):
            sized.add_column(col, justify="left" if col == "group" else "right")

        def n(v: int | None) -> str:
            return "?" if v is None else str(v)

        for z in p.sizing:
            over = z.allowed is not None and (z.parallel or 0) > z.allowed
            sized.add_row(z.group, n(z.parallel), str(z.max), n(z.by_memory), n(z.by_cpu),
                          f"[bold red]{n(z.allowed)}" if over else n(z.allowed))
        parts.append(sized)
    return RGroup(*parts)


def audit_view(a: Audit) -> RenderableType:
    summary = Table(title=f"audit {a.host}")
    for col in ("group", "status", "parallel", "running", "queued", "failed", "blocked", "done"):
        summary.add_column(col)
    for g in a.groups:
        done = g.counts.get("success", 0)
        summary.add_row(g.group, g.status, str(g.parallel), str(len(g.running)),
                        str(len(g.queued)), str(len(g.failed)), str(len(g.blocked)), str(done))
    parts: list[RenderableType] = [summary]
    running = [t for g in a.groups for t in g.running]
    if running:
        t = Table(title="running")
        for col in ("group", "label", "runtime", "workdir"):
            t.add_column(col)
        for v in running:
            t.add_row(v.group, v.label or "(no label)", _dur(v.runtime), v.path)
        parts.append(t)
    failed = [t for g in a.groups for t in (*g.failed, *g.blocked)]
    if failed:
        t = Table(title="failed / blocked")
        for col in ("group", "label", "state", "exit code", "command"):
            t.add_column(col)
        for v in failed:
            t.add_row(v.group, v.label or "(no label)", v.state,
                      "-" if v.exit_code is None else str(v.exit_code), v.command)
        parts.append(t)
    return RGroup(*parts)


# ---- deploy / retry-failed (jobsafe_ops.deploy.steps) --------------------------------------

STEP_STYLE = {"ok": "green", "changed": "bold green", "skipped": "dim", "dry": "cyan",
              "warn": "yellow", "refused": "bold red", "failed": "bold red"}


def deploy_view(report: Any) -> RenderableType:
    """The step table (with timings), the --dry commands, and the verdict line."""
    from rich.text import Text

    title = f"{report.host}: {'dry run' if report.dry else 'deploy'}"
    t = Table(title=title)
    for col in ("step", "status", "time", "detail"):
        t.add_column(col, overflow="fold")
    for s in report.steps:
        t.add_row(s.name, f"[{STEP_STYLE.get(s.status, '')}]{s.status}",
                  f"{s.seconds:.2f}s", s.detail)
    parts: list[RenderableType] = [t]
    if report.planned:
        parts.append(Text("remote commands it would run (nothing was changed):", style="bold"))
        parts.extend(Text(f"  {cmd}") for cmd in report.planned)
    parts.extend(Text(f"note: {n}", style="yellow") for n in getattr(report, "notes", ()))
    style = "bold green" if report.exit_code == 0 else "bold red"
    parts.append(Text(f"VERDICT {report.verdict}", style=style))
    return RGroup(*parts)

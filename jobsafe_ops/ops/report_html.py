"""`jobsafe report`: the report's values (every attempt of a group's labels with its times)
and their rendering as ONE self-contained HTML file. Pure: no I/O, no clock.

The page is a string template with inline CSS and inline SVG: no script, no external URL,
no web font, so it opens the same from a mail attachment, a CI artifact or an air-gapped
laptop (tests/ops/test_report_html.py checks that nothing in it can fetch). It shows:

- the summary: host, group, playbook, when it was generated, labels and attempts by outcome;
- the timeline: one row per label (its base label: `X`, `X-retry-1`, ... share the row), one
  bar per attempt from its start to its end (a running one to "now"), coloured by outcome,
  each retry linked to the attempt before it (`data-retry-of` and a dashed connector), a
  failed bar linking to its log tail below;
- throughput: attempts that ended per time bucket, successes and failures stacked;
- failures with their log tails (secrets masked by the caller, every character escaped here);
- the host's health sample (load, memory, swap, state file) with the probe's verdicts, and
  its load and memory over the batch from the team journal's autoscale readings.

Labels, outcomes and log lines are user input: every text and attribute value is escaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..hostside.model import FAILED, base_label

# ---- values ----------------------------------------------------------------------------

FAILURES = (*FAILED, "cancelled")  # outcomes listed with their log tails (cancelled: no log)
OK = "success"


@dataclass(frozen=True)
class Run:
    """One attempt of a label: its own label (`X-retry-1`), outcome, exit code and its times
    in epoch seconds on the host's clock (None: not started / not ended)."""

    label: str
    attempt: int = 0
    outcome: str = "unknown"
    exit: int | None = None
    start: float | None = None
    end: float | None = None
    source: str = "pueue"  # ledger | marker | pueue | squeue (a Slurm host)
    unit: str | None = None
    log: tuple[str, ...] = ()

    @property
    def base(self) -> str:
        return base_label(self.label)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "base": self.base, "attempt": self.attempt,
                "outcome": self.outcome, "exit": self.exit, "start": iso(self.start),
                "end": iso(self.end), "source": self.source, "unit": self.unit,
                "log": list(self.log)}


@dataclass(frozen=True)
class HealthRow:
    name: str
    level: str  # ok | warn | alarm | unknown
    value: str
    detail: str


@dataclass(frozen=True)
class Sample:
    """The host's load and memory at one time (epoch s): the team journal's autoscale
    readings, and the sample taken with the report's own read."""

    time: float
    load_pct: float | None  # 1-min load over cores, percent
    mem_pct: float | None  # memory used, percent
    swapping: bool = False
    source: str = "journal"  # journal | report

    def to_dict(self) -> dict[str, Any]:
        return {"time": iso(self.time), "load_pct": self.load_pct, "mem_pct": self.mem_pct,
                "swapping": self.swapping, "source": self.source}


@dataclass(frozen=True)
class Report:
    host: str
    group: str
    playbook: str | None
    generated_at: float  # the host's clock when it was read
    runs: tuple[Run, ...]
    status: str | None = None  # the group's pueue status (Running / Paused)
    health: Mapping[str, Any] = field(default_factory=dict)
    verdicts: tuple[HealthRow, ...] = ()
    samples: tuple[Sample, ...] = ()  # load/memory over time, oldest first
    html: str | None = None  # the file written, if any

    @property
    def latest(self) -> dict[str, Run]:
        return latest(self.runs)

    @property
    def failures(self) -> list[Run]:
        return failures(self.runs)

    def to_dict(self) -> dict[str, Any]:
        t0, t1 = span(self.runs, self.generated_at)
        return {
            "host": self.host, "group": self.group, "playbook": self.playbook,
            "generated_at": iso(self.generated_at), "status": self.status,
            "labels": len(self.latest), "attempts": len(self.runs),
            "counts": {"labels": counts(self.latest.values()), "attempts": counts(self.runs)},
            "start": iso(t0) if self.runs else None, "end": iso(t1) if self.runs else None,
            "runs": [r.to_dict() for r in self.runs],
            "failures": [r.to_dict() for r in self.failures],
            "throughput": [b.to_dict() for b in throughput(self.runs, t0, t1)],
            "health": dict(self.health),
            "verdicts": [{"name": v.name, "level": v.level, "value": v.value,
                          "detail": v.detail} for v in self.verdicts],
            "samples": [x.to_dict() for x in self.samples],
            "html": self.html,
        }


def iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def order_key(run: Run) -> tuple[int, float, str]:
    return (run.attempt, run.start if run.start is not None else float("inf"), run.label)


def latest(runs: Iterable[Run]) -> dict[str, Run]:
    """The newest attempt per base label (highest retry number, then latest start): the
    one that decides the label, as monitor judges it."""
    out: dict[str, Run] = {}
    for run in sorted(runs, key=order_key):
        out[run.base] = run
    return out


def counts(runs: Iterable[Run]) -> dict[str, int]:
    out: dict[str, int] = {}
    for run in runs:
        out[run.outcome] = out.get(run.outcome, 0) + 1
    return dict(sorted(out.items()))


def failures(runs: Iterable[Run]) -> list[Run]:
    """Every failed, killed or cancelled attempt, newest end first."""
    bad = [r for r in runs if r.outcome in FAILURES]
    return sorted(bad, key=lambda r: (-(r.end or r.start or 0.0), r.label))


def span(runs: Sequence[Run], now: float) -> tuple[float, float]:
    """The time axis: the earliest start to the latest end (a running attempt ends now);
    never empty (one second at least)."""
    starts = [r.start for r in runs if r.start is not None]
    ends = [r.end if r.end is not None else now for r in runs if r.start is not None]
    if not starts:
        return now, now + 1.0
    t0, t1 = min(starts), max(ends + starts)
    return t0, max(t1, t0 + 1.0)


# ---- geometry (pure, tested) -------------------------------------------------------------

WIDTH = 1160  # px of the timeline and throughput charts
LEFT = 240  # px of the label column
RIGHT = 40
ROW = 20  # px per timeline row
BAR = 12  # px of a bar's height
AXIS = 28  # px of the time axis under the rows
MIN_BAR = 2.0  # px: a 0.1 s job is still visible
MAX_ROWS = 400  # labels drawn; the rest are counted under the chart
BUCKETS = 24


def bar(start: float, end: float, t0: float, t1: float, width: float = WIDTH - LEFT - RIGHT,
        left: float = LEFT) -> tuple[float, float]:
    """(x, width) in px of an attempt from `start` to `end` on the axis t0..t1: linear,
    clamped into the plot, at least MIN_BAR wide."""
    scale = width / (t1 - t0) if t1 > t0 else 0.0
    x0 = left + max(0.0, min(width, (start - t0) * scale))
    x1 = left + max(0.0, min(width, (max(end, start) - t0) * scale))
    w = max(MIN_BAR, x1 - x0)
    if x0 + w > left + width:
        x0 = max(left, left + width - w)
    return round(x0, 2), round(w, 2)


@dataclass(frozen=True)
class Row:
    """One timeline row: a base label and its attempts in order (attempt, start)."""

    base: str
    attempts: tuple[Run, ...]


def rows(runs: Iterable[Run]) -> list[Row]:
    """Attempts grouped by base label (a retry shares its label's row), rows in order of
    their first start (never-started rows last), then by label."""
    by: dict[str, list[Run]] = {}
    for run in runs:
        by.setdefault(run.base, []).append(run)
    out = [Row(base, tuple(sorted(rs, key=order_key))) for base, rs in by.items()]

    def first(row: Row) -> tuple[float, str]:
        starts = [r.start for r in row.attempts if r.start is not None]
        return (min(starts) if starts else float("inf"), row.base)

    return sorted(out, key=first)


@dataclass(frozen=True)
class Bucket:
    start: float
    end: float
    success: int = 0
    failed: int = 0  # every other ended outcome (failed, killed, cancelled, ...)

    def to_dict(self) -> dict[str, Any]:
        return {"start": iso(self.start), "end": iso(self.end), "success": self.success,
                "failed": self.failed}


def throughput(runs: Iterable[Run], t0: float, t1: float, buckets: int = BUCKETS
               ) -> list[Bucket]:
    """Attempts that ended per time bucket of t0..t1 (equal widths; an end on t1 falls in
    the last bucket), successes and the rest counted apart."""
    n = max(1, buckets)
    width = (t1 - t0) / n if t1 > t0 else 1.0
    ok = [0] * n
    bad = [0] * n
    for run in runs:
        if run.end is None or run.end < t0 or run.end > t1 + 1e-9:
            continue
        i = min(n - 1, int((run.end - t0) / width))
        if run.outcome == OK:
            ok[i] += 1
        else:
            bad[i] += 1
    return [Bucket(t0 + i * width, t0 + (i + 1) * width, ok[i], bad[i]) for i in range(n)]


def ticks(t0: float, t1: float, most: int = 8) -> list[float]:
    """Round tick times (1 s .. 1 day steps) inside t0..t1, at most `most` of them."""
    steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
             43200, 86400)
    length = max(t1 - t0, 1e-9)
    step = next((s for s in steps if length / s <= most), steps[-1] * (1 + int(length // 86400)))
    first = (int(t0 // step) + (0 if t0 % step == 0 else 1)) * step
    out: list[float] = []
    t = float(first)
    while t <= t1 + 1e-9 and len(out) <= most:
        out.append(t)
        t += step
    return out


# ---- rendering ---------------------------------------------------------------------------

COLOURS = {
    "success": "#2e9d4f", "failed": "#d6322b", "killed": "#8e44ad", "cancelled": "#95a5a6",
    "running": "#2f7fd1", "paused": "#5dade2", "dependency_failed": "#e67e22",
    "blocked": "#e67e22", "errored": "#a93226", "failed_to_spawn": "#a93226",
    "queued": "#c8cdd3",
}
OTHER = "#7f8c8d"
HEALTH_COLOURS = {"load": "#2f7fd1", "mem": "#8e44ad"}
_CLASS = re.compile(r"[^a-z0-9_-]+")


def esc(value: object) -> str:
    """Text or attribute value, escaped (quotes included)."""
    return html.escape(str(value), quote=True)


def css_class(outcome: str) -> str:
    return "o-" + (_CLASS.sub("-", outcome.lower()) or "unknown")


def colour(outcome: str) -> str:
    return COLOURS.get(outcome, OTHER)


def clock(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%H:%M:%S")


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def size(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:24px;color:#1d232a;background:#fff}
h1{font-size:20px;margin:0 0 12px}h2{font-size:16px;margin:24px 0 8px}
h3{font-size:14px;margin:12px 0 4px}
table{border-collapse:collapse;margin:0 24px 8px 0;display:inline-table;vertical-align:top}
td,th{border:1px solid #d5d9de;padding:3px 8px;text-align:left}
th{background:#f3f5f7}td.n{text-align:right}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
svg{display:block;background:#fafbfc;border:1px solid #e3e6ea}
svg text{font:11px system-ui,sans-serif;fill:#1d232a}
svg .axis line{stroke:#d5d9de}svg .axis text{fill:#5b6570}
.retry-link{stroke:#5b6570;stroke-dasharray:3 2;stroke-width:1}
.bar:hover{stroke:#1d232a;stroke-width:1}
pre{background:#1d232a;color:#e8eaed;padding:8px;overflow-x:auto;font-size:12px;margin:0}
.failure{margin-bottom:12px}.muted{color:#5b6570}
.lvl-ok{color:#2e9d4f}.lvl-warn{color:#b9770e}.lvl-alarm{color:#d6322b;font-weight:600}
"""


def render(report: Report) -> str:
    """The whole page as one string."""
    runs = report.runs
    t0, t1 = span(runs, report.generated_at)
    title = f"jobsafe report: group {report.group} on {report.host}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{esc(title)}</h1>",
        summary_html(report, t0, t1),
        '<section id="timeline"><h2>Timeline</h2>', timeline_svg(runs, t0, t1,
                                                                  report.generated_at),
        legend_html(runs), "</section>",
        '<section id="throughput"><h2>Throughput (attempts ended per '
        f"{esc(duration((t1 - t0) / BUCKETS))})</h2>",
        throughput_svg(throughput(runs, t0, t1), t0, t1), "</section>",
        failures_html(runs), health_html(report),
        "</body>", "</html>",
    ]
    return "\n".join(parts) + "\n"


def summary_html(report: Report, t0: float, t1: float) -> str:
    latest_runs = report.latest
    facts = [
        ("host", report.host), ("group", report.group + (f" ({report.status})"
                                                         if report.status else "")),
        ("playbook", report.playbook or "(every batch)"),
        ("generated", (iso(report.generated_at) or "") + " (host clock, UTC)"),
        ("window", f"{iso(t0)} .. {iso(t1)} ({duration(t1 - t0)})" if report.runs else "-"),
        ("labels", str(len(latest_runs))), ("attempts", str(len(report.runs))),
    ]
    rows_html = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    by_label, by_attempt = counts(latest_runs.values()), counts(report.runs)
    names = sorted(set(by_label) | set(by_attempt), key=lambda o: (o != OK, o))
    count_rows = "".join(
        f'<tr class="{esc(css_class(o))}" data-outcome="{esc(o)}"><td>'
        f'<span class="swatch" style="background:{colour(o)}"></span>{esc(o)}</td>'
        f'<td class="n">{by_label.get(o, 0)}</td><td class="n">{by_attempt.get(o, 0)}</td></tr>'
        for o in names)
    return ('<section id="summary"><h2>Summary</h2>'
            f'<table class="facts">{rows_html}</table>'
            '<table class="counts"><tr><th>outcome</th><th>labels (newest attempt)</th>'
            f"<th>attempts</th></tr>{count_rows}</table></section>")


def timeline_svg(runs: Sequence[Run], t0: float, t1: float, now: float) -> str:
    all_rows = rows(runs)
    shown = all_rows[:MAX_ROWS]
    height = len(shown) * ROW + AXIS + 8
    out = [f'<svg id="timeline-svg" class="timeline" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="timeline">']
    axis_y = len(shown) * ROW + 4
    out.append('<g class="axis">')
    for t in ticks(t0, t1):
        x, _ = bar(t, t, t0, t1)
        out.append(f'<line x1="{x}" y1="0" x2="{x}" y2="{axis_y}"></line>'
                   f'<text x="{x}" y="{axis_y + 16}" text-anchor="middle">{esc(clock(t))}'
                   "</text>")
    out.append("</g>")
    index = {id(r): i for i, r in enumerate(runs)}
    for n, row in enumerate(shown):
        y = n * ROW
        mid = y + ROW / 2
        out.append(f'<g class="row" data-base="{esc(row.base)}">'
                   f'<text x="{LEFT - 8}" y="{mid + 4}" text-anchor="end">'
                   f"{esc(_short(row.base))}<title>{esc(row.base)}</title></text>")
        previous: tuple[str, float] | None = None
        for run in row.attempts:
            if run.start is None:
                continue
            end = run.end if run.end is not None else now
            x, w = bar(run.start, end, t0, t1)
            rid = f"run-{index[id(run)]}"
            retry = f' data-retry-of="{previous[0]}"' if previous else ""
            if previous is not None:
                out.append(f'<line class="retry-link" data-from="{previous[0]}" '
                           f'data-to="{rid}" x1="{previous[1]}" y1="{mid}" x2="{x}" '
                           f'y2="{mid}"></line>')
            tip = (f"{run.label}: {run.outcome}"
                   + (f" (exit {run.exit})" if run.exit is not None else "")
                   + f", {clock(run.start)} .. "
                   + (clock(run.end) if run.end is not None else "now")
                   + f", {duration(end - run.start)}")
            rect = (f'<rect id="{rid}" class="bar {esc(css_class(run.outcome))}" '
                    f'data-label="{esc(run.label)}" data-base="{esc(run.base)}" '
                    f'data-attempt="{run.attempt}" data-outcome="{esc(run.outcome)}"{retry} '
                    f'x="{x}" y="{y + (ROW - BAR) / 2}" width="{w}" height="{BAR}" rx="2" '
                    f'fill="{colour(run.outcome)}"><title>{esc(tip)}</title></rect>')
            if run.outcome in FAILURES:
                rect = f'<a href="#fail-{index[id(run)]}">{rect}</a>'
            out.append(rect)
            previous = (rid, round(x + w, 2))
        out.append("</g>")
    out.append("</svg>")
    if len(all_rows) > len(shown):
        out.append(f'<p class="muted">{len(all_rows) - len(shown)} more labels not drawn '
                   "(see --json for every attempt)</p>")
    return "".join(out)


def _short(label: str, most: int = 36) -> str:
    return label if len(label) <= most else label[: most - 1] + "\u2026"


def legend_html(runs: Sequence[Run]) -> str:
    present = sorted({r.outcome for r in runs}, key=lambda o: (o != OK, o))
    items = "".join(f'<span class="legend-item {esc(css_class(o))}"><span class="swatch" '
                    f'style="background:{colour(o)}"></span>{esc(o)}</span> ' for o in present)
    unstarted = sum(1 for r in runs if r.start is None)
    note = (f' <span class="muted">{unstarted} attempt(s) not started (queued or blocked) '
            "have no bar.</span>" if unstarted else "")
    return (f'<p class="legend">{items}<span class="muted">A row is one label; its retries '
            "(<code>-retry-N</code>) share the row, joined by a dashed line; a failed bar "
            f"links to its log below.</span>{note}</p>")


def throughput_svg(buckets: Sequence[Bucket], t0: float, t1: float) -> str:
    height, top, bottom = 160, 10, 24
    plot = height - top - bottom
    peak = max([b.success + b.failed for b in buckets] + [1])
    out = [f'<svg id="throughput-svg" class="throughput" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="throughput">',
           f'<g class="axis"><text x="{LEFT - 8}" y="{top + 10}" text-anchor="end">{peak}'
           f'</text><text x="{LEFT - 8}" y="{top + plot}" text-anchor="end">0</text>'
           f'<line x1="{LEFT}" y1="{top + plot}" x2="{WIDTH - RIGHT}" y2="{top + plot}">'
           "</line>"]
    for t in ticks(t0, t1):
        x, _ = bar(t, t, t0, t1)
        out.append(f'<text x="{x}" y="{height - 6}" text-anchor="middle">{esc(clock(t))}</text>')
    out.append("</g>")
    for b in buckets:
        x, w = bar(b.start, b.end, t0, t1)
        w = max(1.0, round(w - 2, 2))
        base = float(top + plot)
        for kind, n, fill in (("success", b.success, COLOURS["success"]),
                              ("failed", b.failed, COLOURS["failed"])):
            if not n:
                continue
            h = round(plot * n / peak, 2)
            base = round(base - h, 2)
            out.append(f'<rect class="tp {kind}" data-count="{n}" x="{x + 1}" y="{base}" '
                       f'width="{w}" height="{h}" fill="{fill}"><title>{esc(clock(b.start))}'
                       f" .. {esc(clock(b.end))}: {n} {kind}</title></rect>")
    out.append("</svg>")
    return "".join(out)


def failures_html(runs: Sequence[Run]) -> str:
    """Each failed, killed or cancelled attempt with its log tail; its id `fail-N` (N: its
    index in the report's runs) is what its timeline bar links to."""
    index = {id(r): i for i, r in enumerate(runs)}
    bad = failures(runs)
    if not bad:
        return '<section id="failures"><h2>Failures</h2><p>None.</p></section>'
    parts = [f'<section id="failures"><h2>Failures ({len(bad)})</h2>']
    for run in bad:
        exit_text = f", exit {run.exit}" if run.exit is not None else ""
        when = f", ended {iso(run.end)}" if run.end is not None else ""
        rid = f"fail-{index[id(run)]}"
        head = (f"{run.label} ({run.outcome}{exit_text}, attempt {run.attempt}{when}"
                + (f", unit {run.unit}" if run.unit else "") + ")")
        if run.log:
            body = f"<pre>{esc(chr(10).join(run.log))}</pre>"
        elif run.outcome == "cancelled":
            body = '<p class="muted">cancelled by jobsafe cancel: no log.</p>'
        elif run.unit:
            body = (f'<p class="muted">a command of unit {esc(run.unit)}: its log is a '
                    f"section of the unit's log (<code>inv logs --label {esc(run.label)}"
                    "</code>).</p>")
        else:
            body = ('<p class="muted">no log tail: pueue no longer has this attempt '
                    "(cleaned), or only the newest failures' logs are read "
                    f"(<code>inv logs --label {esc(run.label)} --attempt {run.attempt}"
                    "</code>).</p>")
        parts.append(f'<div class="failure {esc(css_class(run.outcome))}" id="{rid}" '
                     f'data-label="{esc(run.label)}"><h3>{esc(head)}</h3>{body}</div>')
    parts.append("</section>")
    return "".join(parts)


def health_html(report: Report) -> str:
    h = report.health
    if not h:
        return '<section id="health"><h2>Host health</h2><p>No sample.</p></section>'
    load = h.get("load")
    facts = [
        ("cores", str(h.get("nproc") or "?")),
        ("load 1/5/15 min", " / ".join(f"{x:.2f}" for x in load) if load else "?"),
        ("memory available", f"{size(h.get('mem_available'))} of {size(h.get('mem_total'))}"),
        ("swap in/out (pages)", f"{h.get('swap_in', '?')} / {h.get('swap_out', '?')} over "
                                f"{h.get('swap_window', '?')} s"),
        ("state file", f"{h.get('state_file') or '?'} ({size(h.get('state_size'))})"),
    ]
    rows_html = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    verdicts = "".join(
        f'<tr><td>{esc(v.name)}</td><td class="lvl-{esc(_CLASS.sub("-", v.level))}">'
        f"{esc(v.level)}</td><td>{esc(v.value)}</td><td>{esc(v.detail)}</td></tr>"
        for v in report.verdicts)
    table = (f'<table class="verdicts"><tr><th>check</th><th>verdict</th><th>value</th>'
             f"<th>rule</th></tr>{verdicts}</table>" if verdicts else "")
    t0, t1 = span(report.runs, report.generated_at)
    chart = health_svg(report.samples, t0, t1)
    return (f'<section id="health"><h2>Host health (sampled {esc(iso(report.generated_at))})'
            f'</h2><table class="health">{rows_html}</table>{table}{chart}</section>')


def health_svg(samples: Sequence[Sample], t0: float, t1: float) -> str:
    """Load (% of cores) and memory used (%) over the batch's time axis, one point per
    sample; nothing when there is no sample from the journal (one point is not a line)."""
    inside = [x for x in samples if t0 <= x.time <= t1 + 1e-9]
    if not any(x.source == "journal" for x in inside):
        return ('<p class="muted">No load/memory samples over the batch (autoscale journals '
                "them with every change and check).</p>")
    height, top, bottom = 140, 10, 24
    plot = height - top - bottom
    peak = max([100.0] + [v for x in inside for v in (x.load_pct, x.mem_pct) if v is not None])
    out = [f'<h3>Load and memory over the batch</h3><svg id="health-svg" class="health-chart" '
           f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
           'aria-label="host health">',
           f'<g class="axis"><text x="{LEFT - 8}" y="{top + 10}" text-anchor="end">'
           f'{peak:.0f}%</text><text x="{LEFT - 8}" y="{top + plot}" text-anchor="end">0%'
           f'</text><line x1="{LEFT}" y1="{top + plot}" x2="{WIDTH - RIGHT}" '
           f'y2="{top + plot}"></line>']
    for t in ticks(t0, t1):
        x, _ = bar(t, t, t0, t1)
        out.append(f'<text x="{x}" y="{height - 6}" text-anchor="middle">{esc(clock(t))}</text>')
    out.append("</g>")
    for kind, fill in (("load_pct", HEALTH_COLOURS["load"]), ("mem_pct", HEALTH_COLOURS["mem"])):
        coords: list[tuple[float, float, float, Sample]] = []
        for one in inside:
            value = getattr(one, kind)
            if value is not None:
                cx = bar(one.time, one.time, t0, t1)[0]
                coords.append((cx, round(top + plot - plot * value / peak, 2), value, one))
        if len(coords) > 1:
            line = " ".join(f"{cx},{cy}" for cx, cy, _, _ in coords)
            out.append(f'<polyline class="{kind}" points="{line}" fill="none" '
                       f'stroke="{fill}" stroke-width="1.5"></polyline>')
        for cx, cy, value, one in coords:
            out.append(f'<circle class="sample {kind}" data-source="{esc(one.source)}" '
                       f'cx="{cx}" cy="{cy}" r="3" fill="{fill}"><title>'
                       f'{esc(clock(one.time))}: {kind.split("_")[0]} {value:.0f}%'
                       + (" (swapping)" if one.swapping else "") + "</title></circle>")
    out.append("</svg>")
    out.append(f'<p class="legend"><span class="swatch" style="background:'
               f'{HEALTH_COLOURS["load"]}"></span>load, % of cores <span class="swatch" '
               f'style="background:{HEALTH_COLOURS["mem"]}"></span>memory used, %</p>')
    return "".join(out)

"""The report page (ops/report_html.py), pure: bar geometry on the time axis, a retry on
its label's row and linked to the attempt before it, throughput buckets, everything
escaped (labels and logs are user input), and nothing in the page that could fetch."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest

from jobsafe_ops.ops import report_html as rh
from jobsafe_ops.ops.report_html import HealthRow, Report, Run

T = 1_764_660_000.0


def runs() -> tuple[Run, ...]:
    return (
        Run("s:BTC", 0, "success", 0, T, T + 40, "ledger"),
        Run("s:ETH", 0, "failed", 137, T + 2, T + 30, "ledger", log=("oom",)),
        Run("s:ETH-retry-1", 1, "failed", 1, T + 45, T + 60, "ledger"),
        Run("s:ETH-retry-2", 2, "success", 0, T + 70, T + 90, "ledger"),
        Run("s:ADA", 0, "running", None, T + 60, None, "marker"),
        Run("s:XRP", 0, "queued", None, None, None, "pueue"),
    )


def report(rs: tuple[Run, ...] | None = None, **kw: Any) -> Report:
    base: dict[str, Any] = dict(host="h1", group="p1", playbook="sweep",
                                generated_at=T + 120, runs=runs() if rs is None else rs,
                                status="Running", health={"nproc": 4, "load": [0.5, 0.4, 0.3]},
                                verdicts=(HealthRow("load", "ok", "0.50", "< 3.6"),))
    base.update(kw)
    return Report(**base)


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Elements:
    p = Elements()
    p.feed(page)
    p.close()
    return p


def bars(page: str) -> list[dict[str, str]]:
    return [a for t, a in parse(page).tags if t == "rect" and "bar" in a.get("class", "")]


# ---- geometry --------------------------------------------------------------------------

def test_a_bar_spans_its_start_to_its_end_on_the_axis() -> None:
    assert rh.bar(0, 10, 0, 100, width=1000, left=100) == (100, 100)
    assert rh.bar(50, 100, 0, 100, width=1000, left=100) == (600, 500)
    x, w = rh.bar(30, 30.001, 0, 100, width=1000, left=0)  # a 1 ms job is still visible
    assert (x, w) == (300, rh.MIN_BAR)
    x, w = rh.bar(100, 100, 0, 100, width=1000, left=0)  # at the very end: kept inside
    assert x + w <= 1000 and w == rh.MIN_BAR


def test_the_axis_runs_from_the_first_start_to_the_last_end_or_now() -> None:
    assert rh.span(runs(), T + 120) == (T, T + 120)  # s:ADA is still running: ends now
    finished = tuple(r for r in runs() if r.outcome != "running")
    assert rh.span(finished, T + 500) == (T, T + 90)
    assert rh.span((), T) == (T, T + 1)  # never an empty axis


def test_rows_put_every_retry_on_its_labels_row_in_attempt_order() -> None:
    rows = rh.rows(runs())
    assert [r.base for r in rows] == ["s:BTC", "s:ETH", "s:ADA", "s:XRP"]  # by first start
    eth = rows[1]
    assert [r.label for r in eth.attempts] == ["s:ETH", "s:ETH-retry-1", "s:ETH-retry-2"]


def test_bars_are_one_per_started_attempt_with_label_outcome_and_class() -> None:
    page = rh.render(report())
    got = {(b["data-label"], b["data-outcome"], b["data-attempt"]) for b in bars(page)}
    assert got == {("s:BTC", "success", "0"), ("s:ETH", "failed", "0"),
                   ("s:ETH-retry-1", "failed", "1"), ("s:ETH-retry-2", "success", "2"),
                   ("s:ADA", "running", "0")}  # s:XRP never started: no bar
    for b in bars(page):
        assert f"o-{b['data-outcome']}" in b["class"].split()
    eth = [b for b in bars(page) if b["data-base"] == "s:ETH"]
    assert len({b["y"] for b in eth}) == 1  # one row
    assert float(eth[0]["x"]) < float(eth[1]["x"]) < float(eth[2]["x"])


def test_each_retry_links_to_the_attempt_before_it() -> None:
    page = rh.render(report())
    every = bars(page)
    by_id = {b["id"]: b for b in every}
    eth = sorted((b for b in every if b["data-base"] == "s:ETH"),
                 key=lambda b: int(b["data-attempt"]))
    assert "data-retry-of" not in eth[0]
    assert by_id[eth[1]["data-retry-of"]] is eth[0]
    assert by_id[eth[2]["data-retry-of"]] is eth[1]
    links = [a for t, a in parse(page).tags if t == "line" and a.get("class") == "retry-link"]
    assert {(a["data-from"], a["data-to"]) for a in links} == {
        (eth[0]["id"], eth[1]["id"]), (eth[1]["id"], eth[2]["id"])}


def test_a_failed_bar_links_to_its_log_tail() -> None:
    page = rh.render(report())
    tags = parse(page).tags
    ids = {a["id"] for _, a in tags if "id" in a}
    hrefs = [a["href"] for t, a in tags if t == "a"]
    assert len(hrefs) == 2 and all(h.startswith("#fail-") and h[1:] in ids for h in hrefs)
    assert "oom" in "".join(parse(page).text)


# ---- throughput ------------------------------------------------------------------------

def test_throughput_counts_ends_per_bucket_successes_apart() -> None:
    buckets = rh.throughput(runs(), T, T + 100, buckets=4)  # 25 s each
    assert [(b.start - T, b.end - T) for b in buckets] == [(0, 25), (25, 50), (50, 75),
                                                             (75, 100)]
    assert [(b.success, b.failed) for b in buckets] == [(0, 0), (1, 1), (0, 1), (1, 0)]
    on_edge = rh.throughput((Run("x", 0, "success", 0, T, T + 100),), T, T + 100, buckets=4)
    assert on_edge[-1].success == 1  # an end on the axis' end is counted, in the last bucket
    assert sum(b.success + b.failed for b in rh.throughput(runs(), T, T + 100)) == 4


def test_ticks_are_round_and_inside_the_axis() -> None:
    ticks = rh.ticks(T + 3, T + 120)
    assert 2 <= len(ticks) <= 9 and all(T + 3 <= t <= T + 120 for t in ticks)
    steps = {round(b - a, 6) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1 and steps.pop() in (15, 30, 60)


# ---- escaping and self-containment ----------------------------------------------------

EVIL = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def test_labels_and_logs_are_escaped_everywhere() -> None:
    rs = (Run(f"x{EVIL}", 0, "failed", 2, T, T + 5, log=(f"line {EVIL}", "& done")),
          Run(f"x{EVIL}-retry-1", 1, "weird state<b>", None, T + 6, T + 9))
    page = rh.render(report(rs, host=f"h{EVIL}", group=f"g{EVIL}", playbook=EVIL))
    p = parse(page)
    assert not [t for t, _ in p.tags if t in ("script", "img")]
    assert not [a for _, a in p.tags if any(k.startswith("on") for k in a)]
    text = "".join(p.text)
    assert f"line {EVIL}" in text and "& done" in text  # shown as text, not markup
    assert {b["data-label"] for b in bars(page)} == {f"x{EVIL}", f"x{EVIL}-retry-1"}
    [odd] = [b for b in bars(page) if b["data-attempt"] == "1"]
    assert re.fullmatch(r"[a-z0-9_ -]+", odd["class"])  # an outcome cannot inject a class


def test_the_page_fetches_nothing() -> None:
    page = rh.render(report())
    assert not re.search(r"https?:", page, re.I)  # no URL at all (no SVG xmlns either)
    assert not re.search(r"@import|url\(|<link|<script|<iframe|<object|<embed", page, re.I)
    for _, attrs in parse(page).tags:
        assert "src" not in attrs
        assert attrs.get("href", "#").startswith("#")


def test_the_page_has_the_summary_failures_and_health() -> None:
    page = rh.render(report())
    text = " ".join(parse(page).text)
    for needed in ("h1", "p1", "sweep", "2025-12-02T07:22:00Z", "labels", "attempts",
                   "Failures (2)", "Host health", "0.50 / 0.40 / 0.30", "< 3.6"):
        assert needed in text, needed
    counts = [a for t, a in parse(page).tags if t == "tr" and "data-outcome" in a]
    assert [a["data-outcome"] for a in counts] == ["success", "failed", "queued", "running"]


@pytest.mark.parametrize("outcome", ["success", "cancelled"])
def test_counts_judge_a_label_by_its_newest_attempt(outcome: str) -> None:
    rs = (Run("a", 0, "failed", 1, T, T + 1), Run("a-retry-1", 1, outcome, 0, T + 2, T + 3))
    doc = report(rs).to_dict()
    assert doc["counts"] == {"labels": {outcome: 1}, "attempts": {"failed": 1, outcome: 1}}
    assert doc["labels"] == 1 and doc["attempts"] == 2


def test_many_labels_are_capped_and_said_so() -> None:
    rs = tuple(Run(f"l{i}", 0, "success", 0, T + i, T + i + 1) for i in range(rh.MAX_ROWS + 3))
    page = rh.render(report(rs))
    assert len(bars(page)) == rh.MAX_ROWS and "3 more labels not drawn" in page


def test_the_health_chart_has_one_point_per_sample_on_the_time_axis() -> None:
    samples = (rh.Sample(T + 10, 40.0, 20.0), rh.Sample(T + 60, 90.0, None, True),
               rh.Sample(T - 500, 10.0, 10.0),  # before the batch: left out
               rh.Sample(T + 120, 50.0, 30.0, source="report"))
    page = rh.render(report(samples=samples))
    circles = [a for t, a in parse(page).tags if t == "circle"]
    load = [a for a in circles if "load_pct" in a["class"]]
    mem = [a for a in circles if "mem_pct" in a["class"]]
    assert len(load) == 3 and len(mem) == 2
    xs = [float(a["cx"]) for a in load]
    assert xs == sorted(xs) and xs[0] == rh.bar(T + 10, T + 10, T, T + 120)[0]
    assert float(load[1]["cy"]) < float(load[0]["cy"])  # 90 % is drawn above 40 %
    assert [a["data-source"] for a in load] == ["journal", "journal", "report"]
    assert "No load/memory samples" in rh.render(report(samples=samples[3:]))

"""`inv report --html` end to end (issue 18): a small batch on a real sshd host (a
transient failure retried, a persistent failure, successes) is read in one round trip, and
the page it writes is rendered by a real browser, Debian's headless Chromium: its DOM has a
timeline bar for every attempt with the right outcome, the retry on its label's row and
linked to the failure before it, and its screenshot is not blank (the timeline's colours
are on it). No Chromium: the test fails in CI and is skipped elsewhere."""

from __future__ import annotations

import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from jobsafe_ops.ops.report_html import COLOURS
from tests.cli import inv
from tests.e2e.browser import INSTALL_HINT, colours, decode_png, dump_dom, find_chromium, hex_rgb
from tests.e2e.browser import screenshot as take_screenshot
from tests.e2e.conftest import in_ci
from tests.jsonout import envelope_of, result_of
from tests.world import SimHost, World

GROUPS = {"rp": {"parallel": 2, "min": 1, "max": 4}, "re": {"parallel": 1, "min": 1, "max": 2}}
PASS = 'pass_env = ["JOBSAFE_WORLD", "JOBSAFE_WORLD_HOST"]\n'
SCRIPT = """case "$1" in
  oom) sleep 0.6; test -f fixed && exit 0; echo "loading shard $1"; exit 137 ;;
  bad) sleep 0.3; echo "Traceback: ValueError <bad input> & API_TOKEN=s3cr3tvalue99" >&2; exit 1 ;;
  *) sleep 0.8; exit 0 ;;
esac
"""
BOOK = """group = "rp"
retry_budget = 2
command = "sh job.sh {mode}"
label = "rp:{mode}"
[matrix]
mode = ["ok1", "oom", "bad", "ok2"]
"""


def require_chromium() -> str:
    found = find_chromium()
    if found is None:
        message = f"chromium not found: {INSTALL_HINT}"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def host(world: World) -> SimHost:
    if not world.pueue_available:
        pytest.skip("no pueue stand-in and no real pueue")
    h = world.add_host("rp", groups=GROUPS)
    (h.project_dir / "job.sh").write_text(SCRIPT)
    return h


def settle(host: SimHost, group: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ts = [t for t in host.pueue_status()["tasks"].values() if t["group"] == group]
        if len(ts) >= count and all("Done" in t["status"] for t in ts):
            return
        assert time.monotonic() < deadline, f"{group} not done in {timeout}s: {ts}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def batch(world: World, host: SimHost, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The batch: submitted, a rerun after the fix re-adds the transient failure as
    `rp:oom-retry-1` (the persistent one is reported, not re-added)."""
    path = tmp_path_factory.mktemp("books") / "repbook.toml"
    path.write_text('name = "repbook"\n' + PASS + BOOK)
    proc = inv(world, "submit-batch", "--host", "rp", "--playbook", str(path), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    settle(host, "rp", 4)
    (host.project_dir / "fixed").touch()
    proc = inv(world, "submit-batch", "--host", "rp", "--playbook", str(path), "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # rp:bad stays failed
    settle(host, "rp", 5)
    return path


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def tags_of(page: str) -> list[tuple[str, dict[str, str]]]:
    p = Tags()
    p.feed(page)
    return p.tags


def test_report_html_renders_the_timeline_in_a_real_browser(
        world: World, host: SimHost, batch: Path, tmp_path: Path) -> None:
    require_chromium()
    page = tmp_path / "report.html"
    proc = inv(world, "report", "--host", "rp", "--group", "rp", "--playbook", str(batch),
               "--html", str(page), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = result_of(proc.stdout)
    assert doc["html"] == str(page) and page.is_file()
    assert (doc["playbook"], doc["labels"], doc["attempts"]) == ("repbook", 4, 5)
    assert doc["counts"] == {"labels": {"failed": 1, "success": 3},
                             "attempts": {"failed": 2, "success": 3}}
    runs = {r["label"]: r for r in doc["runs"]}
    assert {k: (r["outcome"], r["exit"]) for k, r in runs.items()} == {
        "rp:ok1": ("success", 0), "rp:ok2": ("success", 0), "rp:oom": ("failed", 137),
        "rp:oom-retry-1": ("success", 0), "rp:bad": ("failed", 1)}
    assert all(r["source"] == "ledger" and r["start"] and r["end"] for r in runs.values())
    [bad] = [f for f in doc["failures"] if f["label"] == "rp:bad"]
    assert any("ValueError <bad input>" in line for line in bad["log"])
    assert "s3cr3tvalue99" not in proc.stdout and "s3cr3tvalue99" not in page.read_text()
    assert sum(b["success"] + b["failed"] for b in doc["throughput"]) == 5

    # the DOM as Chromium built it: a bar per attempt, outcome as data and class
    dom = dump_dom(page)
    tags = tags_of(dom)
    bars = [a for t, a in tags if t == "rect" and "bar" in a.get("class", "").split()]
    got = {a["data-label"]: (a["data-outcome"], a["class"]) for a in bars}
    assert set(got) == set(runs)
    for label, (outcome, cls) in got.items():
        assert outcome == runs[label]["outcome"] and f"o-{outcome}" in cls.split(), label
    by_id = {a["id"]: a for a in bars}
    [retry] = [a for a in bars if a["data-label"] == "rp:oom-retry-1"]
    assert by_id[retry["data-retry-of"]]["data-label"] == "rp:oom"
    assert retry["y"] == by_id[retry["data-retry-of"]]["y"]  # the same row
    assert float(retry["x"]) > float(by_id[retry["data-retry-of"]]["x"])
    assert not [a for t, a in tags if t == "script" or "src" in a]

    # the screenshot: not blank, and the timeline's success and failure colours are on it
    png = take_screenshot(page, tmp_path / "report.png")
    width, height, pixels = decode_png(png)
    assert (width, height) == (1280, 900)
    seen = colours(pixels)
    assert len(seen) > 50, seen.most_common(5)
    assert seen[hex_rgb(COLOURS["success"])] > 500
    assert seen[hex_rgb(COLOURS["failed"])] > 200
    assert seen.most_common(1)[0][1] < 0.95 * len(pixels)


def test_report_without_html_prints_tables(world: World, host: SimHost, batch: Path) -> None:
    proc = inv(world, "report", "--host", "rp", "--group", "rp")
    assert proc.returncode == 0, proc.stderr
    assert "rp:bad" in proc.stdout and "failures" in proc.stdout


def test_report_exit_codes(world: World, host: SimHost, batch: Path, tmp_path: Path) -> None:
    def run(*args: str) -> tuple[int, dict[str, Any], str]:
        proc = inv(world, "report", "--host", "rp", *args, "--json")
        return proc.returncode, envelope_of(proc.stdout), proc.stderr

    code, doc, err = run("--group", "re")  # declared, never filled: nothing selected
    assert code == 6 and doc["exit_code"] == 6 and "nothing selected" in err
    code, doc, err = run("--group", "nosuch")
    assert code == 2 and "nosuch" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("--group", "rp", "--html", str(tmp_path / "no" / "r.html"))
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "no").exists()
    code, doc, err = run("--group", "rp", "--playbook", "otherbook")
    assert code == 6 and "otherbook" in err and doc["hosts"] == []

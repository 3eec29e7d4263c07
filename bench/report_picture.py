"""docs/report.png: the `inv report --html` page of a small demo batch, as the README shows it.

    python bench/report_picture.py [--out docs/report.png] [--html report.html]

Not a timing bench: it builds a throwaway sshd host on loopback (tests/world.py, the pueue
stand-in), submits a playbook of eight labels (one transient failure, exit 137, retried by a
rerun after the fix; one persistent failure; one job still running when the report is read),
runs `inv autoscale --loop` beside it (its journaled readings are the page's load and memory
samples), runs `inv report --html` against it, and has headless Chromium screenshot the page
(tests/e2e/browser.py, the same helpers as the e2e test). Everything real but the pueue
stand-in; the times on the page are the run's own.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCRIPT = """case "$1" in
  BTCUSDT) sleep 2.5 ;;
  ETHUSDT) sleep 1.2; test -f fixed && { sleep 1.5; exit 0; }
           echo "epoch 3/10: loading shard 17"; exit 137 ;;
  SOLUSDT) sleep 0.8; echo "Traceback (most recent call last):" >&2
           echo "ValueError: no candles for SOLUSDT@250 in 2026-11" >&2; exit 1 ;;
  XRPUSDT) sleep 3.5 ;;
  BNBUSDT) sleep 30 ;;
  *) sleep 1.8 ;;
esac
"""
BOOK = """name = "sweep"
group = "p1"
retry_budget = 2
pass_env = ["JOBSAFE_WORLD", "JOBSAFE_WORLD_HOST"]
command = "sh job.sh {symbol}"
label = "sweep:{symbol}@250"
[matrix]
symbol = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "DOTUSDT", "BNBUSDT"]
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "report.png"))
    parser.add_argument("--html", help="also keep the page here")
    args = parser.parse_args()

    from tests.cli import argv, environment, inv
    from tests.e2e.browser import find_chromium, screenshot
    from tests.world import World, find_sshd

    if find_sshd() is None or find_chromium() is None:
        print("needs sshd and chromium: apt-get install openssh-server chromium")
        return 2
    with tempfile.TemporaryDirectory(prefix="jrp-") as tmp, World(Path(tmp)) as world:
        host = world.add_host("bigblack", groups={"p1": {"parallel": 4, "min": 2, "max": 6}})
        (host.project_dir / "job.sh").write_text(SCRIPT)
        book = Path(tmp) / "sweep.toml"
        book.write_text(BOOK)

        def wait(done: int) -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                tasks = [t for t in host.pueue_status()["tasks"].values()
                         if t["group"] == "p1" and t["label"] != "sweep:BNBUSDT@250"]
                if len(tasks) >= done and all("Done" in t["status"] for t in tasks):
                    return
                time.sleep(0.2)
            raise SystemExit("the demo batch did not finish in 120 s")

        # autoscale beside the batch, as an operator runs it: the readings it journals with
        # each change and check are the page's load/memory samples (with --down-load 20 it
        # steps parallel down towards min even on a lightly loaded box)
        scaler = subprocess.Popen(
            argv("autoscale", "--host", "bigblack", "--loop", "--interval", "1.5",
                 "--ticks", "8", "--down-load", "20", "--up-load", "5"),
            env=environment(world), cwd=world.root,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        proc = inv(world, "submit-batch", "--host", "bigblack", "--playbook", str(book))
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr)
            return 1
        wait(7)
        (host.project_dir / "fixed").touch()
        inv(world, "submit-batch", "--host", "bigblack", "--playbook", str(book))  # exit 1
        wait(8)
        scaler.wait(timeout=120)
        page = Path(tmp) / "report.html"
        proc = inv(world, "report", "--host", "bigblack", "--group", "p1", "--playbook",
                   str(book), "--html", str(page))
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr)
            return 1
        print(proc.stdout)
        if args.html:
            shutil.copy(page, args.html)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(page, out, 1280, 1640)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

# The seeded anti-patterns below are the benchmark's input, not our code:
# jobsafe: ignore-file[pueue-restart,parallel-zero,hardcoded-task-id,ssh-per-job]
# jobsafe: ignore-file[remote-add-without-workdir,delete-without-missing-ok]
"""Lint time of a 10,000-line shell script: the tree-sitter-bash checks (now) against the
hand-written lexer they replaced (before: jobsafe_ops/lint/{lexer,shell,rules}.py as of
commit 8745837, read from git into a temporary package).

    python bench/bench_lint.py [--lines 10000] [--rounds 3]

Goal: <= 2 s for 10,000 lines (an editor or pre-commit run stays interactive), and both
find the same seeded anti-patterns. Prints the figures and PASS/FAIL.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BEFORE = "8745837"  # the last commit with the hand-written lexer
GOAL_SECONDS = 2.0

# One block of a realistic job script (functions, case, loops, heredocs, pipes), with a few
# anti-patterns per block so both linters have work to report.
BLOCK = """\
# block {n}
setup_{n}() {{
  local dir="$OUT/run_{n}"
  mkdir -p "$dir"
  cd "$dir" || return 1
}}
case "${{MODE:-all}}" in
  all) echo "block {n}: all" ;;
  one) echo "block {n}: one" | tee -a "$LOG" ;;
  *) echo "unknown mode" >&2 ;;
esac
for s in A B C; do
  ssh bigblack "cd ~/p && pueue add -w ~/p --label s{n}-$s -- run $s"
done
if [ -f "$OUT/cursor_{n}.json" ]; then
  rm "$OUT/cursor_{n}.json"
fi
pueue restart "$id_{n}"
pueue parallel 0 -g p{n}
x_{n}=$(pueue status --json | jq -r '.tasks | length')
while read -r label cmd; do
  printf '%s\\t%s\\n' "$label" "$cmd"
done < "$OUT/jobs_{n}.tsv"
ssh h bash -s <<'EOF'
cd ~/p
pueue add -- python scripts/run.py --block {n}
EOF
"""


def script(lines: int) -> str:
    per = BLOCK.count("\n")
    head = "#!/usr/bin/env bash\nset -euo pipefail\nOUT=${OUT:-/tmp/out}\n"
    return head + "".join(BLOCK.format(n=n) for n in range(lines // per + 1))


def old_linter() -> Callable[[str, str], list[Any]] | None:
    """lint_shell of the hand-written lexer, from git; None when git or the commit is gone."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_lint_"))
    pkg = tmp / "oldlint"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("lexer", "shell", "rules"):
        proc = subprocess.run(["git", "show", f"{BEFORE}:jobsafe_ops/lint/{name}.py"],
                              cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            return None
        (pkg / f"{name}.py").write_text(proc.stdout)
    sys.path.insert(0, str(tmp))
    module = importlib.import_module("oldlint.shell")
    fn: Callable[[str, str], list[Any]] = module.lint_shell
    return fn


def best(fn: Callable[[], list[Any]], rounds: int) -> tuple[float, list[Any]]:
    times, out = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from jobsafe_ops.lint.shell import lint_shell, parse

    text = script(args.lines)
    n = text.count("\n")
    t_parse, _ = best(lambda: [parse(text.encode())], args.rounds)
    t_new, new = best(lambda: lint_shell("bench.sh", text), args.rounds)
    print(f"script: {n:,} lines, {len(text):,} bytes")
    print(f"after  (tree-sitter-bash): {t_new:.3f} s  ({t_parse:.3f} s of it the parse), "
          f"{len(new)} findings, {n / t_new:,.0f} lines/s")
    old = old_linter()
    same = True
    if old is None:
        print(f"before (hand-written lexer): not measured (git show {BEFORE} failed)")
    else:
        t_old, found = best(lambda: old("bench.sh", text), args.rounds)
        print(f"before (hand-written lexer): {t_old:.3f} s, {len(found)} findings, "
              f"{n / t_old:,.0f} lines/s; after/before = {t_new / t_old:.2f}")
        seeded = {"pueue-restart", "parallel-zero", "ssh-per-job", "check-then-delete"}
        a = sorted((f.line, f.rule) for f in new if f.rule in seeded)
        b = sorted((f.line, f.rule) for f in found if f.rule in seeded)
        same = a == b
        print(f"seeded findings (restart, parallel 0, ssh per job, check-then-delete): "
              f"after {len(a)}, before {len(b)}: {'same lines' if same else 'DIFFER'}")
    ok = t_new <= GOAL_SECONDS and same
    print(f"goal: <= {GOAL_SECONDS:g} s for {n:,} lines, same seeded findings: "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

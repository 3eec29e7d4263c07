"""`--add-baseline FILE` / `--baseline FILE`: adopt the linter on a repo with findings.

The baseline holds, per finding, its file (relative to the baseline's directory), rule and
a hash of its source line (run.fingerprint, whitespace-normalized; never the line itself,
which may hold a secret), with the line number for people only. A finding is "known" when
an unused baseline entry has the same file, rule and hash, so lines moving up or down keep
it known, and a second copy of the same line is new. Unreadable/unparsable files are never
baselined.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ..errors import ConfigError
from .rules import UNCHECKED, Finding

SCHEMA = "jobsafe-lint-baseline/1"


def _rel(file: str, base: Path) -> str:
    p = Path(file).absolute()
    try:
        return p.relative_to(base.absolute()).as_posix()
    except ValueError:
        return Path(os.path.relpath(p, base.absolute())).as_posix()


def write(path: Path, findings: Iterable[Finding]) -> int:
    base = path.absolute().parent
    rows = [{"file": _rel(f.file, base), "rule": f.rule, "hash": f.fingerprint,
             "line": f.line} for f in findings if f.rule not in UNCHECKED]
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps({"schema": SCHEMA, "findings": rows}, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"lint --add-baseline {path}: cannot write ({exc.strerror})") from exc
    return len(rows)


def apply(path: Path, findings: list[Finding]) -> tuple[list[Finding], int]:
    """(the findings not in the baseline, how many were)."""
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"lint --baseline {path}: cannot read ({exc.strerror}); create it "
                          f"with --add-baseline {path}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"lint --baseline {path}: not JSON ({exc.msg}); recreate it with "
                          f"--add-baseline {path}") from exc
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(
            doc.get("findings"), list):
        raise ConfigError(f"lint --baseline {path}: not a jobsafe lint baseline ({SCHEMA}); "
                          f"recreate it with --add-baseline {path}")
    base = path.absolute().parent
    known = Counter((r.get("file"), r.get("rule"), r.get("hash"))
                    for r in doc["findings"] if isinstance(r, dict))
    kept, hit = [], 0
    for f in findings:
        key = (_rel(f.file, base), f.rule, f.fingerprint)
        if f.rule not in UNCHECKED and known[key] > 0:
            known[key] -= 1
            hit += 1
        else:
            kept.append(f)
    return kept, hit

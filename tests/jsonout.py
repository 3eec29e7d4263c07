"""The one place tests read a task's `--json` stdout: parse the jobsafe/1 envelope, check
it against the command's JSON Schema shipped in the package (jobsafe_ops/schemas/), and
hand back what the assertions are about.

result_of(stdout) gives, as the tests read it before the envelope:
- one host that returned a report (even a refused deploy): that report (its `result`);
- lint: the top-level `result` (findings, or the rule table);
- hosts: {name: settings} over the rows;
- anything else (several hosts, a failed host, bad input): the envelope itself, whose
  `exit_code` and `hosts` rows ({host, ok, exit_code, error, result}) are the multi-host
  shape, plus its `error`.
result_of(stdout, host="a") gives that host's report.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

SCHEMA = "jobsafe/1"


@cache
def schema_for(command: str) -> dict[str, Any]:
    """The command's schema; "jobsafe" (a command body called directly, not through
    cli.main, in unit tests) gets the envelope every schema shares."""
    name = "envelope" if command == "jobsafe" else command
    text = resources.files("jobsafe_ops").joinpath("schemas", f"{name}.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


def envelope_of(stdout: str) -> dict[str, Any]:
    """The envelope, validated: one JSON document, the shape of its command's schema."""
    doc: dict[str, Any] = json.loads(stdout)
    assert doc.get("schema") == SCHEMA, doc
    jsonschema.validate(doc, schema_for(doc["command"]),
                        cls=jsonschema.Draft202012Validator)
    return doc


def lines_of(stdout: str) -> list[dict[str, Any]]:
    """NDJSON (autoscale --loop --json: one envelope per host per tick, each validated):
    per line, the tick's report, or the failed host's row ({host, ok, exit_code, error})."""
    out = []
    for line in stdout.splitlines():
        if line.strip():
            [row] = envelope_of(line)["hosts"]
            out.append(row["result"] if row["ok"] else row)
    return out


def result_of(stdout: str | dict[str, Any], host: str | None = None) -> Any:
    doc = envelope_of(stdout) if isinstance(stdout, str) else stdout
    rows = doc["hosts"]
    if host is not None:
        [row] = [r for r in rows if r["host"] == host]
        return row["result"]
    if not rows and doc["result"] is not None:  # lint
        return doc["result"]
    if doc["command"] == "hosts" and doc["error"] is None:
        return {r["host"]: r["result"] for r in rows}
    if len(rows) == 1 and rows[0]["result"] is not None and doc["error"] is None:
        return rows[0]["result"]
    return doc

"""[[checks]] (checks.py): host-file validation (one line naming file, check, field and fix,
exit 2) and the expect grammar. The remote side: tests/facts/test_checks.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobsafe_ops import checks as custom
from jobsafe_ops.errors import ConfigError
from jobsafe_ops.inventory import load_host_file, load_inventory

ROOT = Path(__file__).resolve().parents[1]
HOST = """
ssh = "bigblack"
project_dir = "~/project"
package = "mypkg"
"""
CHECK = """
[[checks]]
name = "flags"
command = "ls ~/flagdir | wc -l"
expect = "0"
"""


def load(tmp_path: Path, text: str, name: str = "h.toml") -> Any:
    path = tmp_path / name
    path.write_text(HOST + text)
    return load_host_file(path)


# ---- the host file ---------------------------------------------------------------------------

def test_a_check_with_defaults(tmp_path: Path) -> None:
    host = load(tmp_path, CHECK)
    (c,) = host.checks
    assert (c.name, c.command, c.expect, c.when, c.severity, c.timeout) == (
        "flags", "ls ~/flagdir | wc -l", custom.Expect("==", "0"), ("probe",), "alarm", 30)
    assert host.checks_for("probe") == (c,) and host.checks_for("after-scale") == ()


def test_when_as_a_string_or_a_list(tmp_path: Path) -> None:
    one = load(tmp_path, CHECK + 'when = "after-scale"\n').checks[0]
    two = load(tmp_path, CHECK + 'when = ["deploy-watch", "after-scale"]\nseverity = "warn"\n'
               "timeout = 5\n").checks[0]
    assert one.when == ("after-scale",)
    assert (two.when, two.severity, two.timeout) == (("deploy-watch", "after-scale"), "warn", 5)


def test_the_shipped_worked_example_is_the_clickhouse_post_bump_check() -> None:
    big = load_inventory(ROOT / "hosts")["bigblack"]
    (c,) = big.checks
    assert "ExceptionWhileProcessing" in c.command and c.command.startswith("clickhouse-client")
    assert c.expect == custom.Expect("==", "0")
    assert c.when == ("deploy-watch", "after-scale") and big.checks_for("probe") == ()


@pytest.mark.parametrize(("text", "message"), [
    ('[[checks]]\ncommand = "true"\nexpect = "0"\n', "missing required field 'name'"),
    ('[[checks]]\nname = "a"\nexpect = "0"\n', "missing required field 'command'"),
    ('[[checks]]\nname = "a"\ncommand = "true"\n', "missing required field 'expect'"),
    (CHECK + "colour = 1\n", "unknown key 'colour'"),
    (CHECK.replace('"flags"', '"my check"'), "name 'my check': use 1-64 letters"),
    (CHECK.replace('"flags"', '""'), "name '': use"),
    (CHECK + CHECK, "name 'flags' is used twice"),
    (CHECK.replace('"ls ~/flagdir | wc -l"', '"  "'), "field 'command' is empty"),
    (CHECK.replace('expect = "0"', "expect = 0"), "field 'expect' must be a string"),
    (CHECK.replace('expect = "0"', 'expect = ""'), "field 'expect' is empty"),
    (CHECK.replace('expect = "0"', 'expect = "<"'), "nothing after '<'"),
    (CHECK.replace('expect = "0"', 'expect = "< many"'), "'<' compares numbers"),
    (CHECK + 'when = "after-deploy"\n', "when 'after-deploy' is unknown"),
    (CHECK + "when = []\n", "'when' must be a string or a non-empty list"),
    (CHECK + 'severity = "fatal"\n', "severity 'fatal' is unknown"),
    (CHECK + "timeout = 0\n", "timeout 0 is invalid"),
    (CHECK + "timeout = true\n", "timeout True is invalid"),
    ('checks = "ls"\n', "'checks' must be"),
    ('scheduler = "slurm"\n' + CHECK, "run on pueue hosts only"),
])
def test_bad_checks_are_one_line_naming_file_field_and_fix(tmp_path: Path, text: str,
                                                           message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    line = str(err.value)
    assert message in line, line
    assert str(tmp_path / "h.toml") in line and "\n" not in line
    assert err.value.exit_code == 2


def test_the_error_names_which_check(tmp_path: Path) -> None:
    second = CHECK.replace('"flags"', '"disk"').replace('"0"', '">= x"')
    with pytest.raises(ConfigError, match=r"\[\[checks\]\] #2 'disk': field 'expect'"):
        load(tmp_path, CHECK + second)


# ---- the expect grammar ----------------------------------------------------------------------

@pytest.mark.parametrize(("expect", "observed", "ok"), [
    ("0", "0", True), ("0", "1", False), ("0", "0.0", True), ("0", "", False),
    ("ok", "ok", True), ("ok", "OK", False), ("== ok", "ok", True), ("!= 0", "3", True),
    ("!= 0", "0", False), ("!= ok", "fine", True),
    ("< 5", "4", True), ("< 5", "5", False), ("<= 5", "5", True), ("> 0", "0.5", True),
    (">= 1", "0", False), (">=1", "1", True), ("< 5", "lots", False), ("< 5", "", False),
    ("<= -1.5", "-2", True), ("== 1e3", "1000", True),
])
def test_expect(expect: str, observed: str, ok: bool) -> None:
    assert custom.parse_expect(expect).holds(observed)[0] is ok


def test_an_ordering_on_text_says_it_is_not_a_number() -> None:
    assert custom.parse_expect("< 5").holds("lots") == (False, "not a number")

"""hosts/*.toml validation: one line naming the file, the field and the fix; exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobsafe_ops.errors import ConfigError
from jobsafe_ops.inventory import load_host_file, load_inventory, parse_size, select_hosts
from tests.cli import inv

ROOT = Path(__file__).resolve().parents[1]
GOOD = """
ssh = "bigblack"
project_dir = "~/project"
package = "mypkg"
[groups.p1]
parallel = 4
min = 1
max = 8
job_memory = "5G"
"""


def write(tmp_path: Path, text: str, name: str = "h.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_inventory_is_valid():
    inv = load_inventory(ROOT / "hosts")
    big = inv["bigblack"]
    assert sorted(big.groups) == ["p1", "p2", "p3", "p4"]
    assert all(g.parallel >= 1 and g.min <= g.parallel <= g.max for g in big.groups.values())
    assert inv["demo"].is_local


def test_good_file(tmp_path):
    host = load_host_file(write(tmp_path, GOOD))
    assert host.name == "h" and host.dist_name == "mypkg"
    assert host.groups["p1"].job_memory == 5 * 1024**3
    assert host.python_path == "~/project/.venv/bin/python"


@pytest.mark.parametrize(("mutation", "message"), [
    (('ssh = "bigblack"', 'shh = "bigblack"'), "unknown key 'shh'"),
    (('ssh = "bigblack"\n', ""), "missing required field 'ssh'"),
    (("parallel = 4", 'parallel = "4"'), "'parallel' must be an integer"),
    (("parallel = 4", "parallel = true"), "'parallel' must be an integer"),
    (("parallel = 4", "parallel = 0"), "unlimited"),
    (("max = 8", "max = 0"), "max = 0 is below min = 1"),
    (('job_memory = "5G"', 'job_memory = "lots"'), "not a size"),
    (('project_dir = "~/project"', 'project_dir = "project"'), "must be absolute"),
    (("[groups.p1]", "[groups.p1]\ncolour = 1"), "unknown key 'colour'"),
])
def test_one_line_errors_name_file_and_field(tmp_path, mutation, message):
    path = write(tmp_path, GOOD.replace(*mutation))
    with pytest.raises(ConfigError) as err:
        load_host_file(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_host_file(write(tmp_path, "ssh = "))


def test_defaults_file_applies(tmp_path):
    write(tmp_path, 'package = "mypkg"\nbranch = "release"\n', "_defaults.toml")
    write(tmp_path, 'ssh = "x"\nproject_dir = "/srv/p"\n', "x.toml")
    inv = load_inventory(tmp_path)
    assert list(inv) == ["x"] and inv["x"].branch == "release"


def test_select_hosts(tmp_path):
    write(tmp_path, GOOD, "a.toml")
    write(tmp_path, GOOD, "b.toml")
    inv = load_inventory(tmp_path)
    assert [h.name for h in select_hosts(inv, "all")] == ["a", "b"]
    assert [h.name for h in select_hosts(inv, "b,a")] == ["b", "a"]
    assert [h.name for h in select_hosts(inv, " a , b ")] == ["a", "b"]
    with pytest.raises(ConfigError, match="unknown host 'c'"):
        select_hosts(inv, "c")


@pytest.mark.parametrize(("spec", "says"), [
    ("a,c", "unknown host 'c' in --host 'a,c' (inventory has: a, b)"),
    ("a,,b", "empty host name"),
    ("a,", "empty host name"),
    ("a,b,a", "host 'a' is given twice"),
    ("all,a", "'all' cannot be combined"),
    ("", "--host is required"),
])
def test_select_hosts_bad_input_is_one_line_naming_it(tmp_path, spec, says):
    write(tmp_path, GOOD, "a.toml")
    write(tmp_path, GOOD, "b.toml")
    with pytest.raises(ConfigError) as err:
        select_hosts(load_inventory(tmp_path), spec)
    message = str(err.value)
    assert says in message and "\n" not in message and err.value.exit_code == 2
    if spec:
        assert "a, b" in message  # the known hosts, so the fix is at hand


def test_sizes():
    assert parse_size("512M") == 512 * 1024**2
    assert parse_size("1.5G") == int(1.5 * 1024**3)
    with pytest.raises(ValueError):
        parse_size("5 gigs")


def test_cli_typo_gives_exit_2_and_one_line(tmp_path):
    write(tmp_path, GOOD.replace("parallel = 4", "paralel = 4"), "typo.toml")
    proc = inv(None, "hosts", "--inventory", str(tmp_path), timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "typo.toml" in lines[0] and "paralel" in lines[0]


# ---- the bad-input corpus's rules (tests/e2e/test_bad_input.py runs them through inv) ----

@pytest.mark.parametrize(("mutation", "needle"), [
    (("parallel = 4", "parallel = 1000000000000"), "<= 4096"),
    (('job_memory = "5G"', 'job_memory = "9999999T"'), "out of range"),
    (('ssh = "bigblack"', 'ssh = ""'), "'ssh' is empty"),
    (('ssh = "bigblack"', 'ssh = "-oProxyCommand=x"'), "no leading '-'"),
    (('ssh = "bigblack"', 'ssh = "big black"'), "no spaces"),
    (("[groups.p1]", '[groups."p1;x"]'), "group name 'p1;x'"),
    (("parallel = 4", 'parallel = "4"'), "write parallel = 4"),
])
def test_more_bad_host_files(tmp_path, mutation, needle):
    with pytest.raises(ConfigError) as exc:
        load_host_file(write(tmp_path, GOOD.replace(*mutation)))
    assert needle in str(exc.value) and "h.toml" in str(exc.value)


def test_bom_and_crlf_are_accepted(tmp_path):
    plain = load_host_file(write(tmp_path, GOOD))
    for raw in (b"\xef\xbb\xbf" + GOOD.encode(), GOOD.replace("\n", "\r\n").encode()):
        (tmp_path / "h.toml").write_bytes(raw)
        assert load_host_file(tmp_path / "h.toml") == plain


@pytest.mark.parametrize(("raw", "needle"), [
    (b"", "the file is empty"), (b"  \n", "the file is empty"),
    (b"ssh = \"caf\xe9\"\n", "not UTF-8"), (b"ssh = \n", "not valid TOML"),
])
def test_unreadable_host_files(tmp_path, raw, needle):
    (tmp_path / "h.toml").write_bytes(raw)
    with pytest.raises(ConfigError, match=needle):
        load_host_file(tmp_path / "h.toml")


def test_defaults_file_mistakes_are_blamed_on_it(tmp_path):
    write(tmp_path, GOOD)
    write(tmp_path, "memcap = true\n", "_defaults.toml")
    with pytest.raises(ConfigError) as exc:
        load_inventory(tmp_path)
    assert "_defaults.toml" in str(exc.value) and "'memcap'" in str(exc.value)


@pytest.mark.parametrize(("spec", "needle"), [("a,,b", "empty host name"),
                                             ("a,", "empty host name"), ("a,a", "twice")])
def test_host_lists_with_holes_or_repeats(tmp_path, spec, needle):
    inv = {n: load_host_file(write(tmp_path, GOOD, f"{n}.toml")) for n in ("a", "b")}
    with pytest.raises(ConfigError, match=needle):
        select_hosts(inv, spec)

"""The bad-input corpus, end to end: every case runs the real `inv` against one loopback host
and must stop with exit 2 and exactly one stderr line naming the input (file or flag), the
value at fault and the fix - and leave the host exactly as it was.

Inputs live in tests/data/bad_input/ (hosts/*.toml replace the host's file in a copy of
the inventory; playbooks/*.toml are passed with --playbook); a few are generated here
(a 1 MB label, a UTF-8 byte-order mark, CRLF endings). "Zero remote mutations" is checked
twice: the host's SSH session count (most mistakes are caught before any connection), and
a fingerprint of the host - pueue tasks and groups, every path/size/mtime under its HOME,
the checkout's HEAD and status - equal before and after. The few cases only a host read
can detect (a group the daemon does not know) may open a session, never change a thing.

CRLF and a BOM in a TOML file are accepted deliberately: TOML allows CRLF (tomllib folds it
in multi-line strings) and a BOM carries no content, so such a file yields the identical
plan. A carriage return that would reach the shell (a `\\r` escape in a command) is
rejected. submit-batch reads no hand-written commands file (the commands file it uploads
is JSON lines it writes itself), so "commands file" input is the playbook's command.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cli import inv
from tests.e2e.pueue_setup import settle
from tests.jsonout import result_of
from tests.world import SimHost, World

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "bad_input"
HOST = "bi"


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # after `inv -r REPO`; {pb} = the case's playbook path
    expect: tuple[str, ...]  # substrings of the one error line: input, value, fix
    host_file: str | None = None  # tests/data/bad_input/hosts/<name>.toml -> bi.toml
    defaults: str | None = None  # ... -> _defaults.toml
    playbook: str | None = None  # tests/data/bad_input/playbooks/<name>.toml
    reads_host: bool = False  # only a read of the host can tell (no session limit)


def host_case(name: str, *expect: str) -> Case:
    return Case(f"host-{name}", ("probe", "--host", HOST), ("bi.toml", *expect),
                host_file=name)


def pb_case(name: str, *expect: str) -> Case:
    return Case(f"playbook-{name}", ("submit-batch", "--host", HOST, "--playbook", "{pb}"),
                (f"{name}.toml", *expect), playbook=name)


def cli_case(name: str, argv: tuple[str, ...], *expect: str, reads_host: bool = False) -> Case:
    return Case(f"cli-{name}", argv, expect, reads_host=reads_host)


CASES = [
    # ---- host files ---------------------------------------------------------------------
    host_case("malformed_toml", "not valid TOML", "line 2", "fix the syntax"),
    host_case("unknown_key", "'projectdir'", "fix the spelling or remove it"),
    host_case("group_unknown_key", "[groups.p1]", "'maxx'", "fix the spelling"),
    host_case("parallel_string", "'parallel'", "got '4'", "write parallel = 4"),
    host_case("memory_cap_yes", "'memory_cap'", "'yes'", "write memory_cap = true"),
    host_case("parallel_zero", "[groups.p1]", "parallel = 0", "set parallel >= 1"),
    host_case("parallel_huge", "[groups.p1]", "parallel = 1000000000000", "<= 4096"),
    host_case("job_memory_huge", "job_memory", "9999999T", "e.g. 5G"),
    host_case("min_negative", "min = -1", "set min >= 1"),
    host_case("max_below_min", "max = 1 is below min = 2", "set max >= min"),
    host_case("missing_field", "'package'", "add package ="),
    host_case("empty", "the file is empty", "delete the file"),
    host_case("groups_not_table", "[groups.p1]", "must be a table"),
    host_case("group_name_metachar", "'p1;touch pwned'", "use letters, digits"),
    host_case("ssh_option", "-oProxyCommand", "no leading '-'"),
    host_case("ssh_empty", "'ssh' is empty", 'write ssh = "..."'),
    host_case("project_dir_relative", "project_dir 'project'", "absolute or start with ~"),
    host_case("not_utf8", "not UTF-8", "save the file as UTF-8"),
    Case("host-defaults_unknown_key", ("probe", "--host", HOST),
         ("_defaults.toml", "'memcap'", "fix the spelling"), defaults="defaults_unknown_key"),
    # ---- playbooks ----------------------------------------------------------------------
    pb_case("malformed_toml", "not valid TOML", "fix the syntax"),
    pb_case("unknown_key", "'comand'", "fix the spelling"),
    pb_case("unknown_key_split", "[split]", "'step'", "fix the spelling"),
    pb_case("unknown_key_after", "after[0]", "'lable'", "fix the spelling"),
    pb_case("unknown_key_units", "[units]", "'sise'", "fix the spelling"),
    pb_case("matrix_not_list", "[matrix]", "symbol", "non-empty list"),
    pb_case("matrix_threshold_dict", "[matrix]", "threshold", "non-empty list"),
    pb_case("retry_budget_string", "retry_budget", "'2'", "write retry_budget = 2"),
    pb_case("retry_budget_negative", "retry_budget", "-1", "write retry_budget = 2"),
    pb_case("memory_max_huge", "memory_max", "9999999T", "e.g. 5G"),
    pb_case("unknown_group", "'nope'", "bi.toml", "add [groups.nope]"),
    pb_case("duplicate_labels", "'x-y'", "produced twice", "must be unique"),
    pb_case("after_label_duplicate", "'BTC@250'", "produced twice"),
    pb_case("missing_param_command", "{thresh}", "known: {", "command"),
    pb_case("missing_param_label", "{thresh}", "label", "known: {"),
    pb_case("label_newline", "label", "tab/newline/NUL", "remove it"),
    pb_case("label_nul", "label", "tab/newline/NUL", "remove it"),
    pb_case("command_cr", "carriage return", "save with LF endings"),
    pb_case("command_nul", "a NUL", "remove it"),
    pb_case("empty", "the file is empty", "write the playbook"),
    pb_case("split_bad_date", "[split]", "YYYY-MM-DD"),
    pb_case("split_unsafe", "[split]", "AP-9", "state_resets_per_epoch = true"),
    pb_case("units_zero", "units.size", "got 0", "write size ="),
    pb_case("name_traversal", "'../etc'", "letters, digits"),
    pb_case("placeholder_quoted", "placeholder inside quotes", "remove the quotes"),
    pb_case("workdir_placeholder", "workdir '~/{symbol}'", "use a fixed path"),
    pb_case("env_undeclared", "INV-5", "OMP_NUM_THREADS", "env_overrides"),
    pb_case("reserved_param", "[matrix]", "'label'", "reserved"),
    pb_case("label_retry_suffix", "-retry-1", "reserved"),
    Case("playbook-label_huge", ("submit-batch", "--host", HOST, "--playbook", "{pb}"),
         ("label_huge.toml", "longer than 256 characters", "shorten"), playbook="label_huge"),
    # ---- command-line values ------------------------------------------------------------
    cli_case("unknown_host", ("probe", "--host", "nope"), "'nope'", "add hosts/nope.toml"),
    cli_case("host_empty", ("probe", "--host", ""), "--host is required"),
    cli_case("host_double_comma", ("probe", "--host", f"{HOST},,{HOST}"), "--host",
             "empty host name", "one comma"),
    cli_case("host_twice", ("probe", "--host", f"{HOST},{HOST}"), "--host", "twice",
             "name each host once"),
    cli_case("group_empty", ("audit", "--host", HOST, "--group", ""), "--group ''",
             "leave --group out"),
    cli_case("group_unknown_retry", ("retry-failed", "--host", HOST, "--group", "nope"),
             "'nope'", "add [groups.nope]"),
    cli_case("group_unknown_monitor", ("monitor", "--host", HOST, "--group", "nope",
                                       "--once"), "'nope'", "--group", reads_host=True),
    cli_case("group_unknown_audit", ("audit", "--host", HOST, "--group", "nope"), "'nope'",
             "check --group", reads_host=True),
    cli_case("group_unknown_clean", ("clean", "--host", HOST, "--group", "nope"), "'nope'",
             "does not exist", "check --group", reads_host=True),
    cli_case("clean_no_group", ("clean", "--host", HOST), "--group is required"),
    cli_case("interval_negative", ("autoscale", "--host", HOST, "--interval", "-1", "--dry"),
             "--interval", "> 0"),
    cli_case("interval_huge", ("monitor", "--host", HOST, "--group", "p1", "--once",
                               "--interval", "1e300"), "--interval '1e300'", "e.g. --interval"),
    cli_case("on_running_maybe", ("deploy", "--host", HOST, "--on-running", "maybe"),
             "--on-running 'maybe'", "is not one of abort|wait|keep|kill"),
    cli_case("timeout_abc", ("monitor", "--host", HOST, "--group", "p1", "--once",
                             "--timeout", "abc"), "--timeout 'abc'", "number of seconds"),
    cli_case("wait_timeout_abc", ("deploy", "--host", HOST, "--wait-timeout", "abc"),
             "--wait-timeout 'abc'", "e.g. --wait-timeout 600"),
    cli_case("retry_budget_abc", ("retry-failed", "--host", HOST, "--group", "p1",
                                  "--retry-budget", "abc"), "--retry-budget 'abc'", "e.g."),
    cli_case("up_load_abc", ("autoscale", "--host", HOST, "--up-load", "abc", "--dry"),
             "--up-load 'abc'", "percentage", "e.g. --up-load 40"),
    cli_case("ticks_abc", ("autoscale", "--host", HOST, "--loop", "--ticks", "abc"),
             "--ticks", "'abc'", "e.g. --ticks"),
    cli_case("version_not_version", ("deploy", "--host", HOST, "--dry", "--version",
                                     "not a version"), "--version 'not a version'",
             "write e.g. 1.2.0"),
    cli_case("ref_option_injection", ("deploy", "--host", HOST, "--dry", "--ref",
                                      "--upload-pack=touch pwned"), "--ref",
             "pass a commit or tag"),
    cli_case("ref_range", ("deploy", "--host", HOST, "--dry", "--ref", "v1..v2"),
             "--ref 'v1..v2'", "e.g. --ref"),
    cli_case("expect_code_bad", ("deploy", "--host", HOST, "--dry", "--expect-code",
                                 "x;touch pwned"), "--expect-code", "module:function"),
    cli_case("unit_size_zero", ("submit-batch", "--host", HOST, "--playbook", "x",
                                "--unit-size", "0"), "--unit-size", "e.g. --unit-size"),
    cli_case("playbook_missing", ("submit-batch", "--host", HOST, "--playbook", "nope"),
             "playbook 'nope' not found", "known:"),
    cli_case("once_until_done", ("monitor", "--host", HOST, "--group", "p1", "--once",
                                 "--until-done"), "--once", "pick one"),
    cli_case("inventory_missing", ("probe", "--host", HOST, "--inventory", "/nonexistent"),
             "/nonexistent", "--inventory DIR"),
]


@pytest.fixture(scope="module")
def host(world: World) -> SimHost:
    if not world.pueue_available:
        pytest.skip("no pueue stand-in and no real pueue")
    h = world.add_host(HOST)
    # a task in the daemon, so "nothing changed" covers existing work too
    h.run("pueue group add p1 && pueue add --group p1 --label keep:me -- true", check=True)
    settle(h, "p1")
    h.log_sessions()
    return h


def fingerprint(host: SimHost) -> dict[str, Any]:
    """What a mutation would change: pueue's tasks and groups, every path under HOME (size,
    mtime; directories too, so a created-then-removed file shows), the checkout."""
    status = host.pueue_status()
    tasks = {i: {k: t.get(k) for k in ("label", "group", "status", "command", "path")}
             for i, t in status["tasks"].items()}
    files = {}
    for path in sorted(host.home.rglob("*")):
        st = path.lstat()
        files[str(path.relative_to(host.home))] = (st.st_size, st.st_mtime_ns)
    git = host.run("git --no-optional-locks -C project rev-parse HEAD && "
                   "git --no-optional-locks -C project status --porcelain", check=True).stdout
    return {"tasks": tasks, "groups": status["groups"], "files": files, "git": git}


def materialize(case: Case, world: World, tmp: Path) -> tuple[dict[str, str], list[str]]:
    """The case's inventory (a copy of the world's) and argv."""
    inv_dir = tmp / "inventory"
    shutil.copytree(world.inventory, inv_dir)
    if case.host_file:
        shutil.copy(DATA / "hosts" / f"{case.host_file}.toml", inv_dir / f"{HOST}.toml")
    if case.defaults:
        shutil.copy(DATA / "hosts" / f"{case.defaults}.toml", inv_dir / "_defaults.toml")
    pb = ""
    if case.playbook == "label_huge":  # generated: 1 MB is no file to keep in git
        good = (DATA / "playbooks" / "good.toml").read_text()
        body = good.replace('label = "{symbol}', 'label = "' + "x" * 1024 * 1024 + '{symbol}')
        (tmp / "label_huge.toml").write_text(body)
        pb = str(tmp / "label_huge.toml")
    elif case.playbook:
        pb = str(DATA / "playbooks" / f"{case.playbook}.toml")
    argv = [a.replace("{pb}", pb) for a in case.argv]
    return {"JOBSAFE_INVENTORY": str(inv_dir)}, argv


def test_corpus_is_big_and_distinct() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    used = {c.host_file or c.defaults for c in CASES} | {c.playbook for c in CASES}
    on_disk = {p.stem for p in (DATA / "hosts").glob("*.toml")} | {
        p.stem for p in (DATA / "playbooks").glob("*.toml")}
    assert on_disk - used == {"good"}  # every file on disk is a case (or the baseline)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
        world: World, host: SimHost, tmp_path: Path, case: Case) -> None:
    env, argv = materialize(case, world, tmp_path)
    before, sessions = fingerprint(host), host.sessions()
    proc = inv(world, *argv, env=env)
    after = fingerprint(host)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert len(lines) == 1, proc.stderr  # one line, no traceback
    assert lines[0].startswith("error: "), lines[0]
    for text in case.expect:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert len(lines[0]) < 600, lines[0]  # a 1 MB value is cut short, not echoed
    if not case.reads_host:
        assert host.sessions() == sessions, "a locally detectable mistake opened SSH"
    assert after == before
    assert not list(host.home.rglob("pwned*"))


def test_session_counter_sees_a_real_command(world: World, host: SimHost) -> None:
    """Control for the zero-session assertions: a good command does open a session."""
    sessions = host.sessions()
    proc = inv(world, "probe", "--host", HOST, "--json")
    assert proc.returncode == 0, proc.stderr
    assert host.sessions() > sessions


# ---- accepted on purpose: a byte-order mark and CRLF line endings ------------------------

def variants(text: str) -> dict[str, bytes]:
    return {"bom": b"\xef\xbb\xbf" + text.encode(), "crlf": text.replace("\n", "\r\n").encode(),
            "bom+crlf": b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()}


def test_bom_and_crlf_host_files_read_like_the_plain_file(
        world: World, host: SimHost, tmp_path: Path) -> None:
    good = (DATA / "hosts" / "good.toml").read_text()
    outputs = {}
    for name, raw in {"plain": good.encode(), **variants(good)}.items():
        inv_dir = tmp_path / name
        shutil.copytree(world.inventory, inv_dir)
        (inv_dir / f"{HOST}.toml").write_bytes(raw)
        proc = inv(world, "hosts", "--json", env={"JOBSAFE_INVENTORY": str(inv_dir)})
        assert proc.returncode == 0, proc.stderr
        outputs[name] = result_of(proc.stdout)
    assert all(o == outputs["plain"] for o in outputs.values())


def test_bom_and_crlf_playbooks_plan_identically(
        world: World, host: SimHost, tmp_path: Path) -> None:
    from jobsafe_ops.batch.playbook import load_playbook, plan_batch
    from jobsafe_ops.inventory import load_host_file

    good = (DATA / "playbooks" / "good.toml").read_text()
    # a multi-line command too: CRLF inside it must not reach the shell as \r
    good = good.replace('command = "', 'command = """\n').replace(
        '--value {threshold}"', '--value {threshold}"""')
    h = load_host_file(DATA / "hosts" / "good.toml")
    plain = tmp_path / "plain.toml"
    plain.write_text(good)
    expected = plan_batch(load_playbook(plain), h).to_dict()
    assert "\r" not in json.dumps(expected)
    for name, raw in variants(good).items():
        path = tmp_path / f"{name.replace('+', '_')}.toml"
        path.write_bytes(raw)
        assert plan_batch(load_playbook(path), h).to_dict() == expected, name
    # and through the real command against the host: a dry run, nothing changed
    before = fingerprint(host)
    proc = inv(world, "submit-batch", "--host", HOST, "--playbook",
               str(tmp_path / "bom_crlf.toml"), "--dry", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = result_of(proc.stdout)
    assert report["planned"] == 4 and not any("\r" in c for c in report["sample"])
    assert fingerprint(host) == before


def test_a_mistake_in_one_host_file_names_that_file_even_for_another_host(
        world: World, host: SimHost, tmp_path: Path) -> None:
    """The inventory is validated as a whole: a broken neighbour stops every command,
    with its own path in the message (never blamed on the host asked for)."""
    inv_dir = tmp_path / "inventory"
    shutil.copytree(world.inventory, inv_dir)
    shutil.copy(DATA / "hosts" / "parallel_zero.toml", inv_dir / "other.toml")
    sessions = host.sessions()
    proc = inv(world, "probe", "--host", HOST, env={"JOBSAFE_INVENTORY": str(inv_dir)})
    assert proc.returncode == 2 and "other.toml" in proc.stderr, proc.stderr
    assert host.sessions() == sessions
    assert os.path.exists(inv_dir / f"{HOST}.toml")

"""jobsafe_ops.flags: typed Invoke defaults turn a bad number into exit 2 at parse time, and
the real `inv` shows one line instead of a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from jobsafe_ops.flags import count, number
from tests.cli import inv


def test_number_casts_like_float_and_keeps_its_default() -> None:
    default = number("--wait-timeout", 600.0)
    assert default == 600.0
    kind = type(default)
    assert kind("2.5") == 2.5 and isinstance(kind("-1"), float)


@pytest.mark.parametrize("text", ["abc", "", "nan", "inf", "1e300"])
def test_number_refuses_with_exit_2(text: str) -> None:
    kind = type(number("--watch", 300.0))
    with pytest.raises(Exit) as exc:
        kind(text)
    assert exc.value.code == 2
    assert "--watch" in str(exc.value.message) and "e.g. --watch 300" in str(exc.value.message)


@pytest.mark.parametrize("text", ["abc", "1.5", "10000001"])
def test_count_refuses_with_exit_2(text: str) -> None:
    kind = type(count("--retry-budget", 3))
    with pytest.raises(Exit) as exc:
        kind(text)
    assert exc.value.code == 2 and "--retry-budget" in str(exc.value.message)
    assert kind("7") == 7


def test_inv_prints_one_line_and_exits_2() -> None:
    proc = inv(None, "deploy", "--host", "x", "--wait-timeout", "soon", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --wait-timeout 'soon' is not a number of seconds; e.g. --wait-timeout 600"]


# ---- every task's flags, table-driven -------------------------------------------------

from invoke import Argument  # noqa: E402

from jobsafe_ops import tasks  # noqa: E402
from jobsafe_ops.deploy.context import POLICIES  # noqa: E402
from jobsafe_ops.flags import DESTRUCTIVE, SHORTS  # noqa: E402

TASKS = sorted(tasks.ns.tasks)


def _args(name: str) -> list[Argument]:
    return list(tasks.ns.tasks[name].get_arguments())


def _shorts(arg: Argument) -> list[str]:
    return [n for n in arg.names if len(n) == 1]


@pytest.mark.parametrize("name", TASKS)
def test_short_flags_come_only_from_the_one_table(name: str) -> None:
    for arg in _args(name):
        attr = arg.attr_name or arg.name
        assert _shorts(arg) == ([SHORTS[attr]] if attr in SHORTS else []), (name, arg.names)
        assert all(n == "-" or not n.startswith("-") for n in arg.names)  # no `--` short flag
        assert "-" not in arg.names


def test_a_short_flag_means_one_thing_in_every_task() -> None:
    meaning: dict[str, set[str]] = {}
    for name in TASKS:
        for arg in _args(name):
            for short in _shorts(arg):
                meaning.setdefault(short, set()).add(arg.attr_name or arg.name)
    assert all(len(m) == 1 for m in meaning.values()), meaning
    assert "h" not in meaning and "d" not in meaning  # -h is help; -d was --dry *and* discard


def test_destructive_flags_have_no_short_flag() -> None:
    seen = set()
    for name in TASKS:
        for arg in _args(name):
            attr = arg.attr_name or arg.name
            if attr in DESTRUCTIVE:
                seen.add(attr)
                assert _shorts(arg) == [], (name, attr)
    assert {"discard_local_changes", "break_lock", "retry_all", "on_running"} <= seen


@pytest.mark.parametrize("name", TASKS)
def test_help_names_every_value(name: str) -> None:
    ctx = next(c for c in tasks.ns.to_contexts() if c.name == name.replace("_", "-"))
    for arg in _args(name):
        spec, _ = ctx.help_for("--" + arg.name.replace("_", "-"))
        if arg.kind in (bool,):
            assert "=" not in spec, spec
        elif arg.kind is list:
            continue
        else:
            assert "=" in spec, spec  # e.g. --watch=SECONDS, never shown as a boolean
        if isinstance(arg.default, float):
            assert spec.endswith(("=SECONDS", "=PERCENT", "=FACTOR")), spec


def test_numbers_and_choices_are_named_in_help() -> None:
    ctx = next(c for c in tasks.ns.to_contexts() if c.name == "deploy")
    assert ctx.help_for("--watch")[0] == "--watch=SECONDS"
    assert ctx.help_for("--retry-budget")[0] == "--retry-budget=N"
    assert ctx.help_for("--on-running")[0] == "--on-running=abort|wait|keep|kill"
    assert ctx.help_for("--host")[0] == "-H STRING, --host=STRING"
    assert ctx.help_for("--dry")[0] == "-n, --dry"


def test_the_on_running_choices_are_the_deploy_policies() -> None:
    arg = next(a for a in _args("deploy") if a.attr_name == "on_running")
    assert arg.kind.choices == POLICIES
    assert arg.kind("kill") == "kill"


@pytest.mark.parametrize(("argv", "line"), [
    (["deploy", "--host", "x", "--on-running", "nuke"],
     "error: --on-running 'nuke' is not one of abort|wait|keep|kill; e.g. --on-running abort"),
    (["autoscale", "--host", "x", "--ticks", "0"],
     "error: --ticks '0' is not a whole number >= 1; e.g. --ticks 10"),
    (["submit-batch", "--host", "x", "--unit-size", "many"],
     "error: --unit-size 'many' is not a whole number >= 1; e.g. --unit-size 500"),
    (["monitor", "--host", "x", "--timeout", "soon"],
     "error: --timeout 'soon' is not a number of seconds; e.g. --timeout 3600"),
])
def test_bad_flag_values_exit_2_with_one_line(argv: list[str], line: str) -> None:
    proc = inv(None, *argv)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [line]


def test_dash_h_after_a_task_is_help_not_host() -> None:
    proc = inv(None, "deploy", "-h")
    assert proc.returncode == 0, proc.stderr
    assert "--on-running=abort|wait|keep|kill" in proc.stdout and "needed value" not in \
        proc.stderr


def test_dash_n_is_dry_and_dash_d_is_nothing_in_deploy() -> None:
    proc = inv(None, "deploy", "-d")
    assert proc.returncode != 0 and "discard" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(("name", "value", "fix"), [
    ("JOBSAFE_CONNECT_TIMEOUT", "soon", "a number >= 0"),
    ("JOBSAFE_CONNECT_ATTEMPTS", "0", "a whole number >= 1"),
    ("JOBSAFE_CONNECT_ATTEMPTS", "2.5", "a whole number >= 1"),
])
def test_a_bad_connect_env_var_is_exit_2_with_one_line(name: str, value: str, fix: str,
                                                       tmp_path: Path) -> None:
    (tmp_path / "h.toml").write_text('ssh = "nobody@127.0.0.1"\nproject_dir = "/tmp/x"\n'
                                     'package = "x"\n')
    proc = inv(None, "probe", "--host", "h", "--inventory", str(tmp_path), env={name: value})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {name}={value!r} is not {fix}; unset it or set e.g. {name}="
        f"{10 if 'TIMEOUT' in name else 3}"]


def test_env_number_parses_and_defaults() -> None:
    from jobsafe_ops.errors import ConfigError
    from jobsafe_ops.flags import env_number

    assert env_number("X", 10.0, environ={}) == 10.0
    assert env_number("X", 10.0, environ={"X": " 2.5 "}) == 2.5
    assert env_number("X", 3, int, minimum=1, environ={"X": "4"}) == 4
    for bad in ("-1", "nan", "inf", "x"):
        with pytest.raises(ConfigError):
            env_number("X", 10.0, environ={"X": bad})


@pytest.mark.parametrize("argv", [["deploy", "--no-such-flag"], ["probe", "--host"],
                                  ["--no-such-core-flag"]])
def test_jobsafe_takes_an_unparsable_command_line_as_bad_input(argv: list[str]) -> None:
    import sys

    jobsafe = Path(sys.executable).parent / "jobsafe"
    proc = subprocess.run([str(jobsafe), *argv], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2  # not Invoke's 1, which means "jobs failed" here
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and "see jobsafe --help" in line

"""Where pueue keeps its state: one table of cases, run through both resolvers.

monitor_filter.pueue_paths (Python, run on the host by the monitor's filter) is the one
resolver; probe.PUEUE_DIR is its shell twin for hosts without python3 (probe, and the
monitor's plain fallback). Both must give the same directory for every case, and the
case that blinded the state-file guard is the first: the file a real pueued 4.0.4 writes
on its first start (`pueue_directory: null`, fixtures/pueue/default-pueue.yml).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from jobsafe_ops.facts.probe import PUEUE_DIR
from jobsafe_ops.hostside import monitor_filter as mf
from jobsafe_ops.testing.world import FAKE_PUEUE_DIR

DEFAULT_YML = FAKE_PUEUE_DIR / "default-pueue.yml"
H = "/home/u"
DEFAULT_DIR = f"{H}/.local/share/pueue"


def shared(value: str) -> str:
    return f"client:\n  restart_in_place: false\nshared:\n  pueue_directory: {value}\n"


# (case, pueue.yml text or None = no file, extra env, expected pueue_directory)
CASES: list[tuple[str, str | None, dict[str, str], str]] = [
    ("real default file (null)", DEFAULT_YML.read_text(), {}, DEFAULT_DIR),
    ("real default file + XDG_DATA_HOME", DEFAULT_YML.read_text(),
     {"XDG_DATA_HOME": "/x/data"}, "/x/data/pueue"),
    ("relative XDG_DATA_HOME is ignored", DEFAULT_YML.read_text(),
     {"XDG_DATA_HOME": "rel"}, DEFAULT_DIR),
    ("no config file", None, {}, DEFAULT_DIR),
    ("~ is YAML null", shared("~"), {}, DEFAULT_DIR),
    ("Null", shared("Null"), {}, DEFAULT_DIR),
    ("empty value", shared(""), {}, DEFAULT_DIR),
    ("empty quoted string", shared("''"), {}, DEFAULT_DIR),
    ("absolute", shared("/srv/pq"), {}, "/srv/pq"),
    ("home-relative", shared("~/data/pq"), {}, f"{H}/data/pq"),
    ("quoted ~ is the home", shared("'~'"), {}, H),
    ("single-quoted with ''", shared("'/it''s here'"), {}, "/it's here"),
    ("double-quoted with comment", shared('"~/a b" # mine'), {}, f"{H}/a b"),
    ("quoted null is a name", shared('"null"'), {}, "null"),
    ("plain with comment", shared("/srv/pq   # the big disk"), {}, "/srv/pq"),
    ("missing key", "shared:\n  use_unix_socket: true\n", {}, DEFAULT_DIR),
    ("CRLF", shared("/srv/crlf").replace("\n", "\r\n"), {}, "/srv/crlf"),
    ("other sections' keys do not count",
     "client:\n  pueue_directory: /bad\n  fmt: |-\n    pueue_directory: /bad2\n"
     "profiles:\n  remote:\n    shared:\n      pueue_directory: /bad3\n"
     "shared:\n  pueue_directory: /good\n", {}, "/good"),
    ("block scalar lines are not keys",
     "shared:\n  alias_file: |-\n    pueue_directory: /bad\n  pueue_directory: /good\n",
     {}, "/good"),
    ("flow map section is not read", "shared: {}\n", {}, DEFAULT_DIR),
]
IDS = [c[0] for c in CASES]


def _layout(tmp_path: Path, text: str | None, where: str) -> tuple[dict[str, str], Path]:
    """A home with the config at `where`: env (PUEUE_CONFIG_PATH), xdg or home."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {"HOME": H, "PATH": "/usr/bin:/bin"}
    if text is None:
        return env, cwd
    if where == "env":
        cfg = tmp_path / "explicit.yml"
        env["PUEUE_CONFIG_PATH"] = str(cfg)
    elif where == "xdg":
        cfg = tmp_path / "xdg" / "pueue" / "pueue.yml"
        env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    else:  # ./pueue.yml, the last place pueue looks
        cfg = cwd / "pueue.yml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_bytes(text.encode())
    return env, cwd


def _shell(env: dict[str, str], cwd: Path, shell: str = "sh") -> str:
    out = subprocess.run([shell, "-c", PUEUE_DIR + '\nprintf "%s" "$dir"'], env=env,
                         cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout


@pytest.mark.parametrize("where", ["env", "xdg", "cwd"])
@pytest.mark.parametrize(("case", "text", "extra", "expected"), CASES, ids=IDS)
def test_python_and_shell_agree_on_pueue_directory(
        tmp_path: Path, case: str, text: str | None, extra: dict[str, str], expected: str,
        where: str) -> None:
    env, cwd = _layout(tmp_path, text, where)
    env.update(extra)
    assert mf.state_dir(env, cwd=str(cwd)) == expected, case
    assert _shell(env, cwd) == expected, case


@pytest.mark.skipif(not shutil.which("bash"), reason="no bash")
def test_shell_twin_also_runs_under_bash(tmp_path: Path) -> None:
    env, cwd = _layout(tmp_path, shared("~/data/pq"), "env")
    assert _shell(env, cwd, "bash") == f"{H}/data/pq"


def test_the_shipped_default_is_the_real_daemons_file(fixtures: Path) -> None:
    # the stand-in's daemon writes this copy on its first start (jobsafe_ops/testing/pueue)
    assert DEFAULT_YML.read_bytes() == (fixtures / "default-pueue.yml").read_bytes()


def test_config_lookup_order(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "pueue").mkdir(parents=True)
    (xdg / "pueue" / "pueue.yml").write_text(shared("/from-xdg"))
    home = tmp_path / "home"
    (home / ".config" / "pueue").mkdir(parents=True)
    (home / ".config" / "pueue" / "pueue.yml").write_text(shared("/from-home"))
    explicit = tmp_path / "c.yml"
    explicit.write_text(shared("/from-c"))
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)}
    assert mf.state_dir(env, config=str(explicit)) == "/from-c"  # -c first
    assert mf.state_dir({**env, "PUEUE_CONFIG_PATH": str(explicit)}) == "/from-c"
    assert mf.state_dir(env) == "/from-xdg"
    assert mf.state_dir({"HOME": str(home)}) == "/from-home"
    assert mf.state_dir({"HOME": str(home), "XDG_CONFIG_HOME": "relative"}) == "/from-home"


def test_paths_of_the_real_default_file(tmp_path: Path) -> None:
    cfg = tmp_path / "pueue.yml"
    cfg.write_bytes(DEFAULT_YML.read_bytes())
    env = {"HOME": H, "PUEUE_CONFIG_PATH": str(cfg)}
    p = mf.pueue_paths(env)
    assert p == {"config": str(cfg), "pueue_directory": DEFAULT_DIR,
                 "runtime_directory": DEFAULT_DIR, "pid_path": f"{DEFAULT_DIR}/pueue.pid",
                 "compress": False, "state_file": f"{DEFAULT_DIR}/state.json"}
    # pueue 4: an unset runtime_directory is $XDG_RUNTIME_DIR when that is set
    p = mf.pueue_paths({**env, "XDG_RUNTIME_DIR": "/run/user/7"})
    assert p["pid_path"] == "/run/user/7/pueue.pid"
    cfg.write_text("daemon:\n  compress_state_file: true\nshared:\n  pid_path: ~/p.pid\n")
    p = mf.pueue_paths(env)
    assert p["state_file"] == f"{DEFAULT_DIR}/state.json.gz" and p["pid_path"] == f"{H}/p.pid"


def test_pueue_yaml_reads_the_real_default_file() -> None:
    settings = mf.pueue_yaml(DEFAULT_YML.read_text())
    assert settings["shared"]["pueue_directory"] is None
    assert settings["shared"]["use_unix_socket"] is True
    assert settings["shared"]["port"] == "6924"
    assert settings["daemon"]["compress_state_file"] is False
    assert settings["client"]["status_time_format"] == "%H:%M:%S"
    assert "%Y-%m-%d" not in str(settings["client"])  # the block scalar's lines

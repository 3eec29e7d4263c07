"""Install and run anywhere: the wheel, installed with `uv tool install`, works from an
unrelated directory with nothing from this checkout: --version, --list, init, hosts, and
the demo in an empty directory (the throwaway host and the pueue stand-in ship inside).

No sshd needed, but it builds and installs (the package index must be reachable, or uv's
cache warm), so it lives with the slow tests. Set JOBSAFE_SKIP_WHEEL_DEMO=1 to skip the
demo part (about 30 s)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.jsonout import result_of

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def uv() -> str:
    found = shutil.which("uv") or shutil.which("uv", path=str(BIN))
    if found is None:
        pytest.skip("uv not found (installed by ./dev)")
    return found


def source_copy(dest: Path) -> Path:
    """The checkout's tracked files (symlinks kept): the build leaves no build/ or
    *.egg-info in the checkout, and untracked files cannot sneak into the wheel."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True,
                            check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src, dst = REPO / rel, dest / rel
        if not (src.exists() or src.is_symlink()):
            continue  # deleted in the working tree
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout")
    root = tmp_path_factory.mktemp("wheel")
    src = source_copy(root / "src")
    build = subprocess.run([uv(), "build", "--wheel", "--out-dir", str(root / "dist"),
                            str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((root / "dist").glob("jobsafe_ops-*.whl"))
    # PATH without this venv: nothing of the checkout's environment is used
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and Path(p).resolve() != BIN.resolve())
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JOBSAFE_", "PUEUE_", "XDG_", "VIRTUAL_ENV", "UV_TOOL"))}
    env.update(UV_TOOL_DIR=str(root / "tools"), UV_TOOL_BIN_DIR=str(root / "bin"),
               HOME=str(root / "home"), COLUMNS="200", PATH=f"{root / 'bin'}{os.pathsep}{path}")
    if "UV_CACHE_DIR" not in env:  # keep the developer's warm cache despite the new HOME
        cache = subprocess.run([uv(), "cache", "dir"], capture_output=True, text=True)
        if cache.returncode == 0:
            env["UV_CACHE_DIR"] = cache.stdout.strip()
    inst = subprocess.run([uv(), "tool", "install", "--quiet", f"{wheel}[demo]"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
    yield root, env


def run(installed: tuple[Path, dict[str, str]], *argv: str, cwd: Path,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    root, env = installed
    return subprocess.run([str(root / "bin" / "jobsafe"), *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=timeout)


def test_version_list_init_hosts(installed: tuple[Path, dict[str, str]],
                                 tmp_path: Path) -> None:
    v = run(installed, "--version", cwd=tmp_path)
    assert v.returncode == 0 and v.stdout.strip() == f"jobsafe {version('jobsafe-ops')}"
    listed = run(installed, "--list", cwd=tmp_path)
    assert listed.returncode == 0
    for name in ("init", "hosts", "probe", "deploy", "submit-batch", "monitor", "demo"):
        assert f"  {name}" in listed.stdout, listed.stdout
    made = run(installed, "init", "ops", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    hosts = run(installed, "hosts", "--json", cwd=tmp_path / "ops")
    assert hosts.returncode == 0, hosts.stderr
    assert list(result_of(hosts.stdout)) == ["example"]


@pytest.mark.skipif(shutil.which("git") is None, reason="the demo needs git")
@pytest.mark.skipif(bool(os.environ.get("JOBSAFE_SKIP_WHEEL_DEMO")),
                    reason="JOBSAFE_SKIP_WHEEL_DEMO is set")
def test_demo_from_the_wheel_in_an_empty_directory(
        installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run(installed, "demo", cwd=empty, timeout=600)
    out = proc.stdout
    assert "demo finished" in out, out[-3000:] + proc.stderr[-2000:]
    assert "deployed" in out and "1.0.1" in out and "all done, all succeeded" in out
    if proc.returncode != 0:  # as tests/test_demo.py: the post-deploy load window
        assert proc.returncode == 1 and "monitor FAILED" in out and "load" in out, out[-3000:]
    assert list(empty.iterdir()) == []  # the throwaway host lives in a temp dir

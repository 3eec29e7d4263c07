from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from jobsafe_ops.inventory import GroupSpec, Host

# Real pueue 4.0.4 outputs, copied into the repo (data only) from the project's shared
# fixtures so that a fresh clone tests with nothing beside it (tests/test_fixtures.py
# checks the copy against ../shared/fixtures/pueue when that is there).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "pueue"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e is `e2e` (real sshd hosts): `-m "not e2e"` is the fast loop."""
    e2e = Path(__file__).resolve().parent / "e2e"
    for item in items:
        if e2e in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


# ---- a scripted pueue on this machine (the snapshot and monitor tests poll it for real) ------

FAKE_PUEUE = textwrap.dedent("""\
    #!{python}
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_PUEUE_CALLS"], "a") as fh:
        fh.write(" ".join(args) + "\\n")
    if os.environ.get("FAKE_PUEUE_DOWN"):
        sys.stderr.write("Error: Failed to initialize client. Did you start it?\\n")
        sys.exit(1)
    if args[0] == "status":
        data = json.load(open(os.environ["FAKE_PUEUE_STATE"]))
        if "--group" in args:
            g = args[args.index("--group") + 1]
            data["tasks"] = {{k: t for k, t in data["tasks"].items() if t["group"] == g}}
        print(json.dumps(data))
    elif args[0] == "group":
        print(json.dumps(json.load(open(os.environ["FAKE_PUEUE_STATE"]))["groups"]))
    elif args[0] == "log":
        ids = [a for a in args[4:]]
        print(json.dumps({{i: {{"output": "line1\\nline2\\nboom " + i + "\\n"}} for i in ids}}))
""")


@pytest.fixture
def scripted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixtures: Path) -> dict[str, Any]:
    pueue = tmp_path / "bin" / "pueue"
    pueue.parent.mkdir()
    pueue.write_text(FAKE_PUEUE.format(python=sys.executable))
    pueue.chmod(0o755)
    home = tmp_path / "home"
    (home / ".local/share/pueue").mkdir(parents=True)
    statefile = home / ".local/share/pueue/state.json"
    statefile.write_text((fixtures / "status-mixed.json").read_text())
    calls = tmp_path / "calls"
    calls.write_text("")
    for key in ("PUEUE_CONFIG_PATH", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FAKE_PUEUE_STATE", str(statefile))
    monkeypatch.setenv("FAKE_PUEUE_CALLS", str(calls))
    host = Host(name="local", ssh="local", project_dir="~/project", package="mypkg",
                pueue=str(pueue), groups={"p1": GroupSpec("p1", 2, 1, 4)})
    return {"host": host, "calls": calls, "state": statefile}

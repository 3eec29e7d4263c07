"""`submit-batch --spread` over three loopback hosts (real sshd, the pueue stand-in or a
real pueue), in the fault cases an operator meets: a host down at submit, a host killed in
the middle of the feed then rerun, two spread submits at once, `--reassign-from` a host
that is gone. Each ends with every label exactly once fleet-wide, asserted over every
host's own pueue state (read on the host, not through jobsafe_ops).

Killing mid-feed is host-side, not timed: each host's `pueue` (the host file's key) is a
wrapper that, while `~/.fault/die` says N, kills its own SSH session at the N-th
`pueue add` (the connection drops under the feeder, as when a host dies).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.jsonout import envelope_of
from tests.world import SimHost, World

REPO = Path(__file__).resolve().parents[2]
NAMES = ("xa", "xb", "xc")
GROUPS = {"p1": {"parallel": 2, "min": 1, "max": 2}}
PASS = 'pass_env = ["JOBSAFE_WORLD", "JOBSAFE_WORLD_HOST"]\n'
BATCHES = ".local/state/jobsafe-ops/batches"

WRAPPER = r"""#!/bin/sh
f="$HOME/.fault"
if [ "$1" = add ] && [ -f "$f/die" ]; then
  n=$(( $(cat "$f/adds" 2>/dev/null || echo 0) + 1 ))
  echo "$n" > "$f/adds"
  if [ "$n" -ge "$(cat "$f/die")" ]; then
    p=$$
    while [ "$p" -gt 1 ]; do
      case $(cat /proc/$p/comm) in sshd*) kill -9 "$p"; break;; esac
      p=$(cut -d' ' -f4 /proc/$p/stat)
    done
    exit 70
  fi
fi
exec "$HOME/.local/bin/pueue" "$@"
"""


@pytest.fixture(scope="module")
def fleet(world: World) -> dict[str, SimHost]:
    if not world.pueue_available:
        pytest.skip("no pueue stand-in and no real pueue")
    hosts = {}
    for name in NAMES:
        host = world.add_host(name, groups=GROUPS, project=False, pueue_key="~/pueue-wrap")
        wrapper = host.home / "pueue-wrap"
        wrapper.write_text(WRAPPER)
        wrapper.chmod(0o755)
        (host.home / ".fault").mkdir()
        hosts[name] = host
    return hosts


@pytest.fixture
def hosts(fleet: dict[str, SimHost]) -> Any:
    yield fleet
    for host in fleet.values():  # healthy again, whatever the test broke
        for p in (host.home / ".fault").iterdir():
            p.unlink()
        host.start_sshd()
        host.start_pueued()
        host.run("pueue start -g p1", check=False)


def playbook(tmp_path: Path, name: str, n: int) -> Path:
    path = tmp_path / f"{name}.toml"
    values = ", ".join(str(i) for i in range(n))
    path.write_text(f'name = "{name}"\n{PASS}group = "p1"\nworkdir = "~"\n'
                    f'command = "echo {{x}}"\nlabel = "{name}:{{x}}"\n[matrix]\nx = [{values}]\n')
    return path


def inv(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["inv", "-r", str(REPO), "submit-batch", "--json", *args],
                          env=world.env(JOBSAFE_CONNECT_ATTEMPTS="1",
                                        JOBSAFE_CONNECT_TIMEOUT="3"),
                          capture_output=True, text=True, timeout=180, cwd=world.root)


def doc(proc: subprocess.CompletedProcess[str], code: int) -> dict[str, Any]:
    assert proc.returncode == code, proc.stdout + proc.stderr
    return envelope_of(proc.stdout)


def rows(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["host"]: r for r in d["hosts"]}


def where(hosts: dict[str, SimHost], prefix: str) -> dict[str, list[str]]:
    """label -> the hosts whose pueue has a task of it (every task, every host)."""
    out: dict[str, list[str]] = {}
    for name, host in hosts.items():
        for t in host.pueue_status()["tasks"].values():
            if (t["label"] or "").startswith(prefix + ":"):
                out.setdefault(t["label"], []).append(name)
    return out


def assert_once(hosts: dict[str, SimHost], prefix: str, n: int) -> dict[str, str]:
    on = where(hosts, prefix)
    twice = {lbl: hs for lbl, hs in on.items() if len(hs) > 1}
    assert not twice, f"labels on more than one host or twice: {twice}"
    assert sorted(on) == sorted(f"{prefix}:{i}" for i in range(n)), on
    return {lbl: hs[0] for lbl, hs in on.items()}


def recorded(host: SimHost, name: str) -> dict[str, str]:
    path = host.home / BATCHES / name / "spread.tsv"
    return dict(line.rsplit("\t", 1) for line in path.read_text().splitlines())


def test_host_down_at_submit_gets_no_work_and_the_rest_proceed(
        world: World, hosts: dict[str, SimHost], tmp_path: Path) -> None:
    book = str(playbook(tmp_path, "down", 9))
    dry = doc(inv(world, "--host", "xa,xb,xc", "--playbook", book, "--spread", "--dry"), 0)
    plan = {h["host"]: h for h in dry["result"]["hosts"]}
    assert {h: plan[h]["new"] for h in NAMES} == {"xa": 3, "xb": 3, "xc": 3}
    assert "2 slot(s)" in plan["xa"]["why"]
    assert where(hosts, "down") == {}  # --dry changed nothing
    hosts["xc"].stop_sshd()
    first = doc(inv(world, "--host", "xa,xb,xc", "--playbook", book, "--spread"), 5)
    assert not rows(first)["xc"]["ok"] and rows(first)["xc"]["exit_code"] == 4
    assert {h["host"]: h["labels"] for h in first["result"]["hosts"]} == {
        "xa": 5, "xb": 4, "xc": 0}
    owner = assert_once(hosts, "down", 9)
    assert set(owner.values()) == {"xa", "xb"}
    assert recorded(hosts["xa"], "down") == recorded(hosts["xb"], "down") == owner
    hosts["xc"].start_sshd()
    again = doc(inv(world, "--host", "xa,xb,xc", "--playbook", book, "--spread"), 0)
    assert all(r["result"]["counts"]["added"] == 0 for r in again["hosts"])
    assert assert_once(hosts, "down", 9) == owner  # sticky: nothing moved to xc
    # a multi-host submit without --spread would run every label on every host: refused
    plain = inv(world, "--host", "xa,xb", "--playbook", book)
    assert plain.returncode == 3, plain.stderr
    assert "has a spread assignment on xa, xb" in plain.stderr and "--spread" in plain.stderr
    assert assert_once(hosts, "down", 9) == owner


def test_host_killed_mid_feed_then_rerun_converges(
        world: World, hosts: dict[str, SimHost], tmp_path: Path) -> None:
    book = str(playbook(tmp_path, "kill", 12))
    (hosts["xb"].home / ".fault/die").write_text("2")
    first = doc(inv(world, "--host", "xa,xb,xc", "--playbook", book, "--spread"), 5)
    xb = rows(first)["xb"]
    assert not xb["ok"] and xb["exit_code"] == 4 and "pending on xb" in xb["error"]
    (hosts["xb"].home / ".fault/die").unlink()
    owner = recorded(hosts["xa"], "kill")
    assert recorded(hosts["xb"], "kill") == owner  # written before the first add
    on = where(hosts, "kill")
    assert all(len(hs) == 1 and owner[lbl] == hs[0] for lbl, hs in on.items())
    assert len([lbl for lbl in owner if owner[lbl] == "xb" and lbl in on]) < 4
    # rerun with xb's group paused: its share is added (and stays queued there)
    hosts["xb"].run("pueue pause -g p1", check=True)
    doc(inv(world, "--host", "xa,xb,xc", "--playbook", book, "--spread"), 0)
    assert assert_once(hosts, "kill", 12) == owner  # each label on its recorded host
    # xb still answers and has its labels queued: they are not moved
    refused = inv(world, "--host", "xa,xc", "--playbook", book, "--spread",
                  "--reassign-from", "xb")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "--reassign-from xb: it still answers" in refused.stderr
    assert assert_once(hosts, "kill", 12) == owner


def test_two_spread_submits_at_once_add_each_label_once(
        world: World, hosts: dict[str, SimHost], tmp_path: Path) -> None:
    book = str(playbook(tmp_path, "twice", 9))
    argv = ["inv", "-r", str(REPO), "submit-batch", "--json", "--host", "xa,xb,xc",
            "--playbook", book, "--spread"]
    procs = [subprocess.Popen(argv, env=world.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=world.root)
             for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    added = sum(r["result"]["counts"]["added"]
                for out, _ in outs for r in envelope_of(out)["hosts"])
    assert added == 9
    assert_once(hosts, "twice", 9)


def test_reassign_from_a_gone_host_moves_its_labels_once(
        world: World, hosts: dict[str, SimHost], tmp_path: Path) -> None:
    book = str(playbook(tmp_path, "gone", 9))
    (hosts["xc"].home / ".fault/die").write_text("1")  # dies at its first add
    doc(inv(world, "--host", "xa,xb,xc", "--playbook", book, "--spread"), 5)
    theirs = sorted(lbl for lbl, h in recorded(hosts["xa"], "gone").items() if h == "xc")
    assert len(theirs) == 3 and not any(h == ["xc"] for h in where(hosts, "gone").values())
    hosts["xc"].stop_sshd()  # gone for good
    waiting = doc(inv(world, "--host", "xa,xb", "--playbook", book, "--spread"), 0)
    assert waiting["result"]["pending"] == {"xc": 3}  # never moved silently
    moved = doc(inv(world, "--host", "xa,xb", "--playbook", book, "--spread",
                    "--reassign-from", "xc"), 0)
    assert sorted(m["label"] for m in moved["result"]["moved"]) == theirs
    owner = assert_once(hosts, "gone", 9)
    assert set(owner.values()) == {"xa", "xb"}
    journal = Path(world.env()["XDG_STATE_HOME"]) / "jobsafe-ops" / "journal.ndjson"
    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    moves = [e for e in lines if e["action"] == "spread-reassign" and e["playbook"] == "gone"]
    assert sorted(lbl for e in moves for lbl in e["labels"]) == theirs
    assert {e["host"] for e in moves} == {"xc"}
    # the rerun keeps the moved labels where they went
    doc(inv(world, "--host", "xa,xb", "--playbook", book, "--spread"), 0)
    assert assert_once(hosts, "gone", 9) == owner


def settle(hosts: dict[str, SimHost], prefix: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(next(iter(t["status"])) in ("Queued", "Running")
              for h in hosts.values() for t in h.pueue_status()["tasks"].values()
              if (t["label"] or "").startswith(prefix + ":")):
        assert time.monotonic() < deadline, f"{prefix} did not settle in {timeout}s"
        time.sleep(0.2)


def test_monitor_one_board_across_hosts_and_retry_where_it_ran(
        world: World, hosts: dict[str, SimHost], tmp_path: Path) -> None:
    path = tmp_path / "mon.toml"
    path.write_text(f'name = "mon"\n{PASS}group = "p1"\nworkdir = "~"\n'
                    'command = "test {x} -ne 2"\nlabel = "mon:{x}"\n[matrix]\nx = [0, 1, 2, 3]\n')
    doc(inv(world, "--host", "xa,xb", "--playbook", str(path), "--spread"), 0)
    owner = assert_once(hosts, "mon", 4)
    settle(hosts, "mon")
    env = world.env()
    proc = subprocess.run(["inv", "-r", str(REPO), "monitor", "--host", "xa,xb", "--group", "p1",
                           "--playbook", str(path), "--once", "--json"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=world.root)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one label failed
    board = envelope_of(proc.stdout)["result"]
    assert board["totals"] == {"success": 3, "failed": 1}
    assert [(f["label"], f["host"]) for f in board["failures"]] == [("mon:2", owner["mon:2"])]
    assert sum(board["per_host"][h].get("success", 0) for h in ("xa", "xb")) == 3
    # a persistent failure is retried (--retry-all) on the host that ran it, nowhere else
    ran = owner["mon:2"]
    retry = subprocess.run(["inv", "-r", str(REPO), "retry-failed", "--host", "xa,xb",
                            "--group", "p1", "--retry-all", "--json"], env=env,
                           capture_output=True, text=True, timeout=120, cwd=world.root)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    on = where(hosts, "mon")
    assert on["mon:2-retry-1"] == [ran] and on["mon:2"] == [ran]
    # it failed there again: retry-failed --reassign-from moves it to the other host
    settle(hosts, "mon")
    other = "xb" if ran == "xa" else "xa"
    moved = subprocess.run(["inv", "-r", str(REPO), "retry-failed", "--host", "xa,xb",
                            "--group", "p1", "--reassign-from", ran, "--playbook", str(path),
                            "--json"], env=env, capture_output=True, text=True, timeout=120,
                           cwd=world.root)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert envelope_of(moved.stdout)["result"]["moved"] == [
        {"label": "mon:2", "from": ran, "to": other}]
    on = where(hosts, "mon")
    assert on["mon:2"] == sorted([ran, other]) and on["mon:2-retry-1"] == [ran]
    assert all(len(hs) == 1 for lbl, hs in on.items() if lbl != "mon:2")  # the rest stayed

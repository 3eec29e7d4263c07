"""Multi-host fan-out on every task, end to end: three loopback hosts, one made to fail in
a different way per test (sshd stopped, wrong identity, deploy lock held / running jobs
under abort, pueued down, unreachable mid-loop). Every time the healthy hosts did their
work (checked on the hosts), the failing host has its own row in the table and in --json,
and the run exits 5.

Parallelism is proved without timing asserts: each host's `pueue` (the host file's
`pueue` key) is a wrapper whose first call, while a barrier is armed, waits until every
expected host has made its first call. Hosts run one after the other would leave the
first one alone at the barrier until its safety bound, which it records as `alone.<host>`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli import inv
from tests.e2e.pueue_setup import add, settle
from tests.jsonout import lines_of, result_of
from tests.world import SimHost, World

NAMES = ("fa", "fb", "fc")
LOCK = ".local/state/jobsafe-ops/deploy-project.lock"

# The first pueue call of each host waits (while armed) until `armed` hosts have arrived;
# `die.<host>` = "N PID": from call N on, stop that host's sshd (PID) and fail, so the host
# becomes unreachable in the middle of a run. Host-side, so nothing here is timed.
WRAPPER = """#!/bin/sh
b={barrier}
n=$(( $(cat "$b/calls.{name}" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$b/calls.{name}"
if [ -f "$b/die.{name}" ]; then
  read -r from pid < "$b/die.{name}"
  if [ "$n" -ge "$from" ]; then
    kill "$pid" 2>/dev/null
    echo "pueue: lost the daemon" >&2
    exit 70
  fi
fi
if [ -f "$b/armed" ] && mkdir "$b/in.{name}" 2>/dev/null; then
  i=0
  while [ "$(ls -d "$b"/in.* | wc -l)" -lt "$(cat "$b/armed")" ]; do
    i=$((i + 1))
    if [ "$i" -gt 600 ]; then touch "$b/alone.{name}"; break; fi
    sleep 0.05
  done
fi
exec {real} "$@"
"""


class Fleet:
    """The world's three hosts behind an inventory copy whose `pueue` is the wrapper."""

    def __init__(self, world: World, root: Path) -> None:
        self.world = world
        self.hosts = {n: world[n] for n in NAMES}
        self.inventory = root / "inventory"
        self.barrier = root / "barrier"
        shutil.copytree(world.inventory, self.inventory)
        self.barrier.mkdir()
        real = world.pueue_bin_dir / "pueue"
        for name in NAMES:
            wrapper = root / f"pueue-{name}"
            wrapper.write_text(WRAPPER.format(barrier=self.barrier, name=name, real=real))
            wrapper.chmod(0o755)
            toml = self.inventory / f"{name}.toml"
            toml.write_text(f'pueue = "{wrapper}"\n' + toml.read_text())  # before [groups]
        self.ssh_config = self.inventory / "ssh_config"
        self.ssh_config_text = self.ssh_config.read_text()

    def inv(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {"JOBSAFE_INVENTORY": str(self.inventory),
               "JOBSAFE_SSH_CONFIG": str(self.ssh_config),
               "JOBSAFE_CONNECT_ATTEMPTS": "1", "JOBSAFE_CONNECT_TIMEOUT": "5"}
        return inv(self.world, *args, env=env, timeout=timeout)

    def arm(self, hosts: int) -> None:
        for p in self.barrier.iterdir():
            p.unlink() if p.is_file() else p.rmdir()
        (self.barrier / "armed").write_text(str(hosts))

    def arrived(self) -> set[str]:
        """Hosts that reached the barrier; asserts none of them waited there alone."""
        alone = sorted(p.name for p in self.barrier.glob("alone.*"))
        assert not alone, f"hosts did not run in parallel: {alone} waited alone"
        return {p.name.split(".", 1)[1] for p in self.barrier.glob("in.*")}

    def calls(self, name: str) -> int:
        path = self.barrier / f"calls.{name}"
        return int(path.read_text()) if path.exists() else 0


@pytest.fixture(scope="module")
def fleet(world: World, tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    if not world.pueue_available:
        pytest.skip("no pueue stand-in and no real pueue")
    for name in NAMES:
        host = world.add_host(name)
        host.run("pueue group add p1 -p 2 && pueue group add p2 -p 1", check=True)
    return Fleet(world, tmp_path_factory.mktemp("fan"))


@pytest.fixture
def armed(fleet: Fleet) -> Iterator[Fleet]:
    """Every host back to healthy after each test, whatever it broke."""
    yield fleet
    (fleet.barrier / "armed").unlink(missing_ok=True)
    fleet.ssh_config.write_text(fleet.ssh_config_text)
    for host in fleet.hosts.values():
        host.start_sshd()
        host.start_pueued()
        host.run(f"rm -rf ~/{LOCK}", check=True)


def rows(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["host"]: r for r in doc["hosts"]}


def table_row(text: str, host: str) -> str:
    """The line of the human `hosts` table for host."""
    lines = [line for line in text.splitlines() if line.startswith("│")
             and line.split("│")[1].strip() == host]
    assert lines, f"no row for {host} in:\n{text}"
    return " ".join(lines)


def assert_failed_row(doc: dict[str, Any], host: str, code: int, says: str) -> None:
    row = rows(doc)[host]
    assert row["ok"] is False and row["exit_code"] == code and says in row["error"], row


def labels(host: SimHost, group: str) -> list[str]:
    return sorted(t["label"] for t in host.pueue_status()["tasks"].values()
                  if t["group"] == group)


def wait_for(cond: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# ---- probe / audit: sshd stopped -------------------------------------------------------------

def test_probe_and_audit_with_one_host_unreachable(armed: Fleet) -> None:
    fa, fb, fc = armed.hosts.values()
    fc.stop_sshd()
    armed.arm(2)
    out = armed.inv("probe", "--host", "all", "--json")
    assert out.returncode == 5, out.stderr
    doc = result_of(out.stdout)
    assert doc["exit_code"] == 5 and [r["host"] for r in doc["hosts"]] == list(NAMES)
    for h in (fa, fb):
        row = rows(doc)[h.name]
        assert row["ok"] and row["exit_code"] == 0 and row["error"] is None
        assert row["result"]["home"] == str(h.home)  # really that host's facts
    assert_failed_row(doc, "fc", 4, "fc")
    assert out.stderr.count("error:") == 1 and "fc" in out.stderr
    assert armed.arrived() == {"fa", "fb"}

    armed.arm(2)
    add(fa, "p2", "bad@1", "exit 3")
    settle(fa, "p2")
    out = armed.inv("audit", "--host", "fa,fb,fc", "--group", "p2")
    assert out.returncode == 5, out.stderr
    assert "bad@1" in out.stdout  # fa's own audit table
    assert "ok" in table_row(out.stdout, "fb")
    fc_row = table_row(out.stdout, "fc")
    assert "failed" in fc_row and " 4 " in fc_row and "fc" in fc_row
    assert armed.arrived() == {"fa", "fb"}
    fa.run("pueue clean --group p2", check=True)


# ---- submit-batch: wrong identity (authentication fails) -------------------------------------

def test_submit_batch_with_one_host_refusing_our_key(armed: Fleet, tmp_path: Path) -> None:
    fa, fb, fc = armed.hosts.values()
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True, capture_output=True)
    blocks = armed.ssh_config_text.split("Host ")
    armed.ssh_config.write_text("Host ".join(
        b.replace(str(armed.world.key), str(stranger)) if b.startswith("fc\n") else b
        for b in blocks))
    book = tmp_path / "fan.toml"
    book.write_text('name = "fan"\ngroup = "p1"\ncommand = "true {n}"\nlabel = "fan:{n}"\n'
                    'pass_env = ["JOBSAFE_WORLD", "JOBSAFE_WORLD_HOST"]\n'
                    "[matrix]\nn = [1, 2, 3]\n")
    armed.arm(2)
    out = armed.inv("submit-batch", "--host", "fa,fb,fc", "--playbook", str(book), "--json")
    assert out.returncode == 5, out.stdout + out.stderr
    doc = result_of(out.stdout)
    for h in (fa, fb):
        assert rows(doc)[h.name]["result"]["counts"]["added"] == 3
        assert labels(h, "p1") == ["fan:1", "fan:2", "fan:3"]  # on the host itself
    assert_failed_row(doc, "fc", 4, "fc")
    assert labels(fc, "p1") == []
    assert armed.arrived() == {"fa", "fb"}
    # the human table, and a rerun converges: nothing added twice on the healthy hosts
    armed.arm(2)
    out = armed.inv("submit-batch", "--host", "all", "--playbook", str(book))
    assert out.returncode == 5
    assert "skip 3" in table_row(out.stdout, "fa") and "failed" in table_row(out.stdout, "fc")
    assert labels(fa, "p1") == ["fan:1", "fan:2", "fan:3"]
    for h in (fa, fb):
        settle(h, "p1")
        h.run("pueue clean --group p1", check=True)


# ---- deploy: lock held on one host, running jobs under abort on another ----------------------

def test_deploy_one_lock_held_one_refused_the_other_deployed(armed: Fleet) -> None:
    fa, fb, fc = armed.hosts.values()
    before = {h.name: head(h) for h in armed.hosts.values()}
    target = armed.world.commit_to_origin({"NOTES.md": "fan-out deploy\n"}, "fan-out")
    owner = {"operator": "carol@elsewhere", "pid": 1, "hostname": "elsewhere",
             "started": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
             "ttl": 3600.0, "token": "t", "command": "deploy", "proc_start": ""}
    fb.run(f"mkdir -p ~/{LOCK} && cat > ~/{LOCK}/owner.json", input=json.dumps(owner),
           check=True)
    add(fc, "p1", "busy@1", "sleep 60")
    wait_for(lambda: "Running" in json.dumps(fc.pueue_status()["tasks"]), "busy@1 running")
    armed.arm(3)
    out = armed.inv("deploy", "--host", "all", "--on-running", "abort", "--watch", "0",
                    "--json")
    assert out.returncode == 5, out.stdout + out.stderr
    doc = result_of(out.stdout)
    assert rows(doc)["fa"]["ok"] and rows(doc)["fa"]["result"]["commit_after"] == target
    assert head(fa) == target  # applied, and not rolled back by the others' refusals
    assert_failed_row(doc, "fb", 3, "locked by carol@elsewhere")
    assert_failed_row(doc, "fc", 3, "running")
    assert head(fb) == before["fb"] and head(fc) == before["fc"]
    assert (fb.home / LOCK / "owner.json").exists()  # never broken silently
    assert not (fa.home / LOCK).exists() and not (fc.home / LOCK).exists()
    assert out.stderr.count("error:") == 2
    assert armed.arrived() == set(NAMES)
    fc.run("pueue kill --group p1 && pueue clean --group p1", check=True)


# ---- retry-failed: pueued down on one host ---------------------------------------------------

def test_retry_failed_with_one_daemon_down(armed: Fleet) -> None:
    fa, fb, fc = armed.hosts.values()
    for h in (fa, fb):
        add(h, "p2", "oom@1", "exit 137")
        settle(h, "p2")
    fc.stop_pueued()
    armed.arm(3)  # fc's pueue is still called (and fails): it reaches the barrier too
    out = armed.inv("retry-failed", "--host", "fa,fb,fc", "--group", "p2", "--json")
    assert out.returncode == 5, out.stdout + out.stderr
    doc = result_of(out.stdout)
    for h in (fa, fb):
        assert rows(doc)[h.name]["ok"] and "oom@1-retry-1" in labels(h, "p2")
    assert_failed_row(doc, "fc", 4, "fc")
    assert armed.arrived() == set(NAMES)
    for h in (fa, fb):
        settle(h, "p2")
        h.run("pueue clean --group p2", check=True)


# ---- monitor --until-done and clean: pueued down on one host ---------------------------------

def test_monitor_until_done_and_clean_with_one_daemon_down(armed: Fleet) -> None:
    fa, fb, fc = armed.hosts.values()
    for h in (fa, fb):
        add(h, "p1", f"{h.name}:short", "sleep 1")
    fc.stop_pueued()
    armed.arm(3)
    out = armed.inv("monitor", "--host", "all", "--group", "p1", "--until-done",
                    "--interval", "0.5", "--json")
    # no --timeout: a dead host must not keep --until-done waiting forever
    assert out.returncode == 5, out.stdout + out.stderr
    doc = result_of(out.stdout)
    for h in (fa, fb):
        row = rows(doc)[h.name]
        assert row["ok"] and row["exit_code"] == 0
        assert row["result"]["groups"][0]["counts"] == {"success": 1}
    assert_failed_row(doc, "fc", 4, "fc")
    assert armed.arrived() == set(NAMES)

    armed.arm(3)
    out = armed.inv("clean", "--host", "all", "--group", "p1")
    assert out.returncode == 5, out.stderr
    assert labels(fa, "p1") == [] and labels(fb, "p1") == []  # cleaned on the hosts
    assert "ok" in table_row(out.stdout, "fb") and "failed" in table_row(out.stdout, "fc")
    assert out.stderr.count("error:") == 1
    assert armed.arrived() == set(NAMES)


# ---- autoscale --loop: one host becomes unreachable mid-loop ---------------------------------

def test_autoscale_loop_goes_on_when_a_host_dies_mid_loop(armed: Fleet) -> None:
    fc = armed.hosts["fc"]
    assert fc.sshd is not None
    armed.arm(1)
    one = armed.inv("autoscale", "--host", "fc", "--dry", "--json")
    assert one.returncode == 0, one.stderr
    per_tick = armed.calls("fc")  # pueue calls in one tick
    armed.arm(3)
    # fc's second tick loses its daemon and its sshd: unreachable from then on
    (armed.barrier / "die.fc").write_text(f"{per_tick + 1} {fc.sshd.pid}\n")
    out = armed.inv("autoscale", "--host", "all", "--loop", "--ticks", "3", "--interval",
                    "0.2", "--dry", "--json")
    assert out.returncode == 5, out.stdout + out.stderr
    lines = lines_of(out.stdout)  # NDJSON per tick
    ok = {n: sum(1 for d in lines if d["host"] == n and "readings" in d) for n in NAMES}
    failed = [d for d in lines if d["host"] == "fc" and d.get("ok") is False]
    assert ok == {"fa": 3, "fb": 3, "fc": 1}  # the others ticked on
    assert len(failed) == 2 and all(d["exit_code"] == 4 for d in failed)
    assert not fc.sshd_running or fc.sshd.poll() is not None
    assert armed.arrived() == set(NAMES)


def head(host: SimHost) -> str:
    return host.run("git -C ~/project rev-parse HEAD", check=True).stdout.strip()


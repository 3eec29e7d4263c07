"""Foundation end to end: inv probe / audit / hosts over real sshd hosts on loopback,
strict host keys, unreachable hosts, ProxyJump, multi-host fan-out."""

from __future__ import annotations

import pytest

from jobsafe_ops.facts.probe import run_probe
from jobsafe_ops.inventory import load_inventory
from jobsafe_ops.remote import connect
from tests.cli import inv
from tests.jsonout import result_of
from tests.world import SimHost, World


@pytest.fixture(scope="module")
def hosts(world: World) -> tuple[SimHost, SimHost]:
    a = world.add_host("alpha", project=False)
    b = world.add_host("beta", project=False)
    # something to audit on alpha: a success, a failure, a running task
    a.run("pueue group add p1 -p 2 && "
          "pueue add -g p1 -l ok@1 -w /tmp -- true && "
          "pueue add -g p1 -l bad@1 -w /tmp -- 'exit 3' && "
          "pueue add -g p1 -l slow@1 -w /tmp -- 'sleep 120' && "
          "pueue wait -q 0 1", check=True)
    return a, b


def test_probe_table_and_json(world: World, hosts: tuple[SimHost, SimHost]) -> None:
    table = inv(world, "probe", "--host", "alpha")
    assert table.returncode == 0, table.stderr
    assert "cores (nproc)" in table.stdout and "health" in table.stdout
    out = inv(world, "probe", "--host", "alpha", "--json")
    assert out.returncode == 0, out.stderr
    data = result_of(out.stdout)
    assert data["nproc"] >= 1 and data["mem_total"] > 0
    assert data["home"] == str(hosts[0].home)
    assert data["pueue_version"] and data["pueue_error"] is None
    # the host's pueue.yml is the one pueued wrote (pueue_directory: null): the real file
    assert data["state_file"] == str(hosts[0].state_file) and data["state_size"] > 0
    assert data["memcap"] is False and data["memcap_reason"]
    groups = {g["name"]: g for g in data["groups"]}
    assert groups["p1"]["parallel"] == 2
    assert groups["p1"]["counts"] == {"success": 1, "failed": 1, "running": 1}


def test_probe_uses_one_connection_and_one_round_trip(world, hosts) -> None:
    import os

    old = dict(os.environ)
    os.environ.update(world.env())
    try:
        host = load_inventory(world.inventory)["beta"]
        remote = connect(host)
        try:
            probe = run_probe(remote, swap_interval=0.1)
        finally:
            remote.close()
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert probe.pueue_error is None
    assert (remote.connections_opened, remote.round_trips) == (1, 1)


def test_audit_reports_by_label(world: World, hosts) -> None:
    out = inv(world, "audit", "--host", "alpha", "--group", "p1", "--json")
    assert out.returncode == 1, out.stderr  # a failed label is a finding
    data = result_of(out.stdout)
    (p1,) = data["groups"]
    assert [t["label"] for t in p1["running"]] == ["slow@1"]
    assert p1["running"][0]["runtime"] is not None
    assert [(t["label"], t["exit_code"]) for t in p1["failed"]] == [("bad@1", 3)]
    human = inv(world, "audit", "--host", "alpha")
    assert "bad@1" in human.stdout and "slow@1" in human.stdout


def test_fan_out_over_all_hosts(world: World, hosts) -> None:
    out = inv(world, "probe", "--host", "all", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(h["host"] for h in result_of(out.stdout)["hosts"]) == ["alpha", "beta"]


def test_bad_host_file_exit_2_without_touching_hosts(world: World, hosts) -> None:
    bad = world.inventory / "typo.toml"
    bad.write_text('ssh = "alpha"\nproject_dir = "~/p"\npackage = "x"\nparalel = 2\n')
    try:
        out = inv(world, "probe", "--host", "alpha")
    finally:
        bad.unlink()
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "typo.toml" in out.stderr and "paralel" in out.stderr


def test_changed_host_key_is_refused_with_fingerprint(make_world) -> None:
    w = make_world()
    w.add_host("gamma", project=False, pueue=False)
    w.rotate_host_key("gamma")
    out = inv(w, "probe", "--host", "gamma")
    assert out.returncode == 4
    assert "CHANGED" in out.stderr and "SHA256:" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_host_key_is_refused_not_added(make_world) -> None:
    w = make_world()
    w.add_host("delta", project=False, pueue=False)
    w.known_hosts.write_text("")
    out = inv(w, "probe", "--host", "delta")
    assert out.returncode == 4
    assert "unknown host key" in out.stderr and "SHA256:" in out.stderr
    assert "ssh-keyscan" in out.stderr
    assert w.known_hosts.read_text() == ""  # nothing was auto-added


def test_unreachable_host_exit_4_after_retries(make_world) -> None:
    w = make_world()
    host = w.add_host("epsilon", project=False, pueue=False)
    host.stop_sshd()
    out = inv(w, "probe", "--host", "epsilon")
    assert out.returncode == 4
    assert "unreachable" in out.stderr and "3 attempts" in out.stderr


def test_proxyjump_alias_is_honoured_with_strict_keys(world: World, hosts) -> None:
    beta = hosts[1]
    cfg = world.ssh_config.read_text()
    block = (f"\nHost beta-via-alpha\n    HostName 127.0.0.1\n    Port {beta.port}\n"
             f"    User {world.user}\n    IdentityFile {world.key}\n    ProxyJump alpha\n"
             f"    UserKnownHostsFile {world.known_hosts}\n")
    world.ssh_config.write_text(cfg + block)
    toml = (world.inventory / "beta.toml").read_text().replace('ssh = "beta"',
                                                               'ssh = "beta-via-alpha"')
    (world.inventory / "jumped.toml").write_text(toml)
    try:
        out = inv(world, "probe", "--host", "jumped", "--json")
    finally:
        (world.inventory / "jumped.toml").unlink()
        world.ssh_config.write_text(cfg)
    assert out.returncode == 0, out.stderr
    assert result_of(out.stdout)["home"] == str(beta.home)

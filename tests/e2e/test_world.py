"""The e2e world itself: real sshd per host, strict host keys, separate HOMEs, pueue, project."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest
from fabric import Config, Connection

from tests.world import LEAN_PATH, LOOPBACK, SimHost, World

SHOW_ENV = (
    'echo "$HOME"; pwd; cd ~; pwd; echo "$PATH"; echo "$PUEUE_CONFIG_PATH"; echo "$XDG_DATA_HOME"'
)


@pytest.fixture(scope="module")
def hosts(world: World) -> tuple[SimHost, SimHost]:
    """h1: editable install; h2: wheel install, memory_cap on. pueued on both when available."""
    pueue = world.pueue_available
    h1 = world.add_host("h1", pueue=pueue)
    h2 = world.add_host("h2", memory_cap=True, editable=False, pueue=pueue)
    return h1, h2


def require_pueue(world: World) -> None:
    if not world.pueue_available:
        pytest.skip(f"no pueue: {world.pueue_bin_dir}/pueued missing and no real pueue on PATH")


def _expected_env_lines(world: World, host: SimHost) -> list[str]:
    return [
        str(host.home),
        str(host.home),
        str(host.home),
        host.env["PATH"],
        "",  # no PUEUE_CONFIG_PATH: pueue finds the file pueued wrote, as on a real host
        str(host.home / ".local" / "share"),
    ]


def test_system_ssh_into_two_hosts_at_once(world: World, hosts: tuple[SimHost, SimHost]) -> None:
    procs = {
        h.name: subprocess.Popen(
            world.ssh_argv(h.name, SHOW_ENV),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=world.env(),
            stdin=subprocess.DEVNULL,
        )
        for h in hosts
    }
    for host in hosts:
        out, err = procs[host.name].communicate(timeout=30)
        assert procs[host.name].returncode == 0, err
        # SetEnv overrides HOME and PATH; the login wrapper starts the session in $HOME
        assert out.splitlines() == _expected_env_lines(world, host)
        # unkind like a real host: the non-login PATH lacks ~/.local/bin, where pueue,
        # pueued and uv are (the host files say path = ["~/.local/bin"])
        assert host.env["PATH"] == LEAN_PATH
        assert all((host.local_bin / p).exists() for p in ("pueue", "pueued", "uv"))
        if not world.real_pueue:  # (a system-wide real pueue cannot be hidden)
            assert shutil.which("pueue", path=LEAN_PATH) is None
        assert 'path = ["~/.local/bin"]' in (world.inventory / f"{host.name}.toml").read_text()


def test_remote_exit_status_and_stdin_pass_through(
    world: World, hosts: tuple[SimHost, SimHost]
) -> None:
    result = world.ssh("h1", "cat; exit 7", input="piped\n")
    assert (result.returncode, result.stdout) == (7, "piped\n")


def test_system_ssh_refuses_an_unknown_host_key(
    world: World, hosts: tuple[SimHost, SimHost]
) -> None:
    argv = world.ssh_argv("h1", "true")
    argv[3:3] = ["-o", "UserKnownHostsFile=/dev/null"]
    result = subprocess.run(
        argv, capture_output=True, text=True, env=world.env(), timeout=30, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_paramiko_strict_host_keys_and_sftp(world: World, hosts: tuple[SimHost, SimHost]) -> None:
    clients = [world.paramiko_client(h.name) for h in hosts]
    try:
        for host, client in zip(hosts, clients, strict=True):
            _, stdout, _ = client.exec_command(SHOW_ENV)
            assert stdout.read().decode().splitlines() == _expected_env_lines(world, host)
            assert stdout.channel.recv_exit_status() == 0
            with client.open_sftp() as sftp:
                with sftp.open("from-sftp.txt", "w") as fh:  # relative: lands in $HOME
                    fh.write(f"hello {host.name}")
            assert (host.home / "from-sftp.txt").read_text() == f"hello {host.name}"
    finally:
        for client in clients:
            client.close()

    stranger = paramiko.SSHClient()  # no known_hosts loaded: RejectPolicy must refuse
    stranger.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        stranger.connect(
            LOOPBACK,
            port=hosts[0].port,
            username=world.user,
            key_filename=str(world.key),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
    stranger.close()


def test_fabric_connection_via_ssh_config(
    world: World, hosts: tuple[SimHost, SimHost], tmp_path: Path
) -> None:
    config = Config(runtime_ssh_path=str(world.ssh_config))
    conn = Connection(
        "h2", config=config, connect_kwargs={"look_for_keys": False, "allow_agent": False}
    )
    # Fabric auto-adds unknown keys (fabric#1804): tests, like the toolkit, make it strict
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    conn.client.load_host_keys(str(world.known_hosts))
    local = tmp_path / "payload.txt"
    local.write_text("payload")
    try:
        assert conn.run("echo $HOME", hide=True, in_stream=False).stdout.strip() == str(
            hosts[1].home
        )
        conn.put(str(local), "payload.txt")
    finally:
        conn.close()
    assert (hosts[1].home / "payload.txt").read_text() == "payload"


def test_host_run_is_a_login_shell_with_the_ssh_session_environment(
    world: World, hosts: tuple[SimHost, SimHost]
) -> None:
    """host.run is the host's user at a login shell: the SSH session's environment, plus
    ~/.local/bin on PATH (which the non-login SSH session lacks)."""
    keys = (
        "HOME",
        "PATH",
        "PUEUE_CONFIG_PATH",
        "XDG_DATA_HOME",
        "XDG_CONFIG_HOME",
        "XDG_STATE_HOME",
        "XDG_CACHE_HOME",
        "USER",
    )
    show = "; ".join(f'echo "{k}=${k}"' for k in keys) + "; pwd"
    for host in hosts:
        local = host.run(show, check=True).stdout
        remote = world.ssh(host.name, show, check=True).stdout
        assert local == remote.replace("PATH=", f"PATH={host.local_bin}:", 1)


def test_each_host_has_its_own_files_and_pueue_state(
    world: World, hosts: tuple[SimHost, SimHost]
) -> None:
    h1, h2 = hosts
    world.ssh("h1", "echo mine > ~/only-on-h1", check=True)
    assert world.ssh("h2", "test -e ~/only-on-h1").returncode == 1
    assert (h1.home / "only-on-h1").exists() and not (h2.home / "only-on-h1").exists()

    require_pueue(world)
    pueue = "~/.local/bin/pueue"  # the non-login SSH PATH lacks it, as on a real host
    for host in hosts:
        status = json.loads(world.ssh(host.name, f"{pueue} status --json", check=True).stdout)
        assert set(status) >= {"tasks", "groups"}
        assert "default" in status["groups"]
    world.ssh("h1", f"{pueue} add -- true", check=True)
    def tasks(name: str) -> dict[str, object]:
        out = world.ssh(name, f"{pueue} status --json", check=True).stdout
        return dict(json.loads(out)["tasks"])

    assert len(tasks("h1")) == 1 and tasks("h2") == {}
    assert h1.pueued_pid() != h2.pueued_pid()
    assert h1.state_file.is_relative_to(h1.home) and h1.state_file.exists()


def test_pueued_wrote_its_default_config_with_null_paths(
    world: World, hosts: tuple[SimHost, SimHost], fixtures: Path
) -> None:
    # like a real host after `pueued -d`: ~/.config/pueue/pueue.yml is pueue 4.0.4's own
    # default file (pueue_directory: null ...), so the toolkit must resolve null itself
    require_pueue(world)
    for host in hosts:
        assert host.pueue_config.read_bytes() == (fixtures / "default-pueue.yml").read_bytes()
        assert "PUEUE_CONFIG_PATH" not in host.env
        assert host.pueued_pid() is not None and host.pueue_socket.is_socket()
        assert host.state_file == host.home / ".local/share/pueue/state.json"
        assert host.state_file.exists() and not (host.home / "null").exists()


def test_project_is_a_clone_of_origin_with_a_working_venv(
    world: World, hosts: tuple[SimHost, SimHost]
) -> None:
    head = world.origin_head()
    script = (
        "cd ~/project && git rev-parse HEAD && git remote get-url origin && "
        "git rev-parse --abbrev-ref HEAD && git status --porcelain && "
        ".venv/bin/python -c 'import mypkg; print(mypkg.__version__, mypkg.compute(21), "
        "mypkg.__file__)'"
    )
    for host in hosts:
        lines = world.ssh(host.name, script, check=True).stdout.splitlines()
        assert lines[:3] == [head, str(world.origin), "main"]
        version, answer, location = lines[3].split()  # no porcelain lines: a clean checkout
        assert (version, answer) == ("1.0.0", "42")
        if host.editable:
            assert location == str(host.project_dir / "src" / "mypkg" / "__init__.py")
        else:
            assert "site-packages" in location


def test_job_script_runs_on_the_host(world: World, hosts: tuple[SimHost, SimHost]) -> None:
    out = world.ssh(
        "h2", "cd ~/project && .venv/bin/python scripts/job.py --name a --value 4", check=True
    )
    assert json.loads(out.stdout)["result"] == 8
    assert json.loads((hosts[1].project_dir / "out" / "a.json").read_text())["result"] == 8
    failed = world.ssh("h2", "cd ~/project && .venv/bin/python scripts/job.py --name b --fail")
    assert failed.returncode == 3


def test_inventory_describes_every_host(world: World, hosts: tuple[SimHost, SimHost]) -> None:
    known = world.known_hosts.read_text().splitlines()
    assert known == [h.host_key_line for h in hosts]
    assert known[0].startswith(f"[127.0.0.1]:{hosts[0].port} ssh-ed25519 AAAA")
    for host in hosts:
        data = tomllib.loads((world.inventory / f"{host.name}.toml").read_text())
        assert data["ssh"] == host.name
        assert data["memory_cap"] is host.memory_cap
        assert data["index_url"] == "https://pypi.org/simple/"
        assert data["groups"]["p1"] == {"parallel": 2, "min": 1, "max": 4, "job_memory": "1G"}
        assert data["groups"]["p2"] == {"parallel": 1, "min": 1, "max": 3, "job_memory": "1G"}
    env = world.env(EXTRA="1")
    assert env["JOBSAFE_INVENTORY"] == str(world.inventory)
    assert env["JOBSAFE_SSH_CONFIG"] == str(world.ssh_config)
    assert env["HOME"] == str(world.laptop) and env["EXTRA"] == "1"
    assert env["XDG_STATE_HOME"].startswith(str(world.laptop))
    assert "SSH_AUTH_SOCK" not in env


def test_commit_to_origin_reaches_the_host_on_pull(
    world: World, hosts: tuple[SimHost, SimHost]
) -> None:
    sha = world.bump_version("1.1.0", tag="v1.1.0")
    assert world.origin_head() == sha
    out = world.ssh(
        "h1",
        "cd ~/project && git pull -q && git rev-parse HEAD && git tag && "
        ".venv/bin/python -c 'import mypkg; print(mypkg.__version__)'",
        check=True,
    )
    # h1 is an editable install: the pulled source is what imports
    assert out.stdout.split() == [sha, "v1.1.0", "1.1.0"]


def test_rotated_host_key_is_refused(make_world: Callable[..., World]) -> None:
    w = make_world()
    host = w.add_host("r1", pueue=False, project=False)
    w.ssh("r1", "true", check=True)
    port = host.port
    w.rotate_host_key("r1")
    assert host.port == port and host.host_key_line != host.trusted_key

    result = w.ssh("r1", "true")
    assert result.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr
    with pytest.raises(paramiko.BadHostKeyException):
        w.paramiko_client("r1")

    w.trust_host_key("r1")
    w.ssh("r1", "true", check=True)


def test_close_stops_sshd_pueued_and_leftovers(make_world: Callable[..., World]) -> None:
    w = make_world()
    pueue = w.pueue_available
    host = w.add_host("c1", pueue=pueue, project=False)
    # a process left running by an SSH session: close() must end it too
    sleeper = int(w.ssh("c1", "nohup sleep 300 >/dev/null 2>&1 & echo $!", check=True).stdout)
    daemon = host.pueued_pid()
    if pueue:
        assert daemon is not None
    sshd = host.sshd
    assert sshd is not None

    started = time.monotonic()
    w.close()
    assert time.monotonic() - started < 15
    assert sshd.poll() is not None
    assert host.pueued_pid() is None
    assert not Path(f"/proc/{sleeper}").exists() or _is_zombie(sleeper)
    with pytest.raises(OSError):
        socket.create_connection((LOOPBACK, host.port), timeout=1).close()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True

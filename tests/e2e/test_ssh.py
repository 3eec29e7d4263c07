"""SSH as `ssh <alias>` behaves, against the real sshd of the test world: Include,
IdentityAgent, CertificateFile, GlobalKnownHostsFile, known_hosts markers (@revoked,
@cert-authority), an encrypted key without an agent. Each case is also checked with the
system `ssh` where that shows the world is what the case says."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.cli import inv
from tests.jsonout import result_of
from tests.world import LOOPBACK, SimHost, World

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
                                reason="needs the OpenSSH client (ssh, ssh-keygen, ssh-agent)")


def keygen(path: Path, *, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", path.name,
                    "-f", str(path)], check=True, capture_output=True)
    return path


def pub(path: Path) -> str:
    """`ssh-ed25519 AAAA...` of a key pair (or of a .pub file)."""
    src = path if path.suffix == ".pub" else path.with_suffix(".pub")
    return " ".join(src.read_text().split()[:2])


def error_line(r: subprocess.CompletedProcess[str], host: str) -> str:
    """Exit 4, exactly one stderr line naming the host, no traceback."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 4, (r.returncode, r.stdout[-2000:], r.stderr)
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {host}: "), lines
    assert "Traceback" not in r.stderr + r.stdout
    print(lines[0])  # shown with -s: the line an operator reads
    return lines[0]


@pytest.fixture(scope="module")
def host(world: World) -> SimHost:
    return world.add_host("omega", project=False)


@contextmanager
def alias(world: World, host: SimHost, name: str, options: str, *,
          main: str = "") -> Iterator[None]:
    """A host file `name.toml` whose ssh alias `name` has only `options` (plus `main`
    prepended to the inventory's ssh_config); everything restored afterwards."""
    cfg = world.ssh_config.read_text()
    known = world.known_hosts.read_text()
    block = f"Host {name}\n" + "".join(f"    {line.strip()}\n"
                                       for line in options.strip().splitlines())
    world.ssh_config.write_text(main + cfg + "\n" + block)
    toml = (world.inventory / f"{host.name}.toml").read_text()
    (world.inventory / f"{name}.toml").write_text(
        toml.replace(f'ssh = "{host.name}"', f'ssh = "{name}"'))
    try:
        yield
    finally:
        (world.inventory / f"{name}.toml").unlink()
        world.ssh_config.write_text(cfg)
        world.known_hosts.write_text(known)


def basics(world: World, host: SimHost) -> str:
    return (f"HostName {LOOPBACK}\nPort {host.port}\nUser {world.user}\n"
            f"UserKnownHostsFile {world.known_hosts}\nBatchMode yes\n")


def restart_sshd(host: SimHost, *extra: str) -> None:
    """sshd on the same port with `extra` sshd_config lines (removed lines: pass none)."""
    base = [ln for ln in host.sshd_config.read_text().splitlines()
            if not ln.startswith(("TrustedUserCAKeys", "HostCertificate"))]
    host.sshd_config.write_text("\n".join([*base, *extra]) + "\n")
    host.stop_sshd()
    host.start_sshd()


def test_include_resolves_the_alias(world: World, host: SimHost, tmp_path: Path) -> None:
    included = tmp_path / "included.conf"
    included.write_text("Host incl\n" + "".join(
        f"    {line}\n" for line in (basics(world, host) + f"IdentityFile {world.key}\n"
                                     "IdentitiesOnly yes").splitlines()))
    with alias(world, host, "incl-host", "HostName incl", main=f"Include {included}\n"):
        # the toml says ssh = "incl-host"; make it the included alias itself
        toml = world.inventory / "incl-host.toml"
        toml.write_text(toml.read_text().replace('ssh = "incl-host"', 'ssh = "incl"'))
        assert world.ssh("incl", "true").returncode == 0  # OpenSSH resolves it
        out = inv(world, "probe", "--host", "incl-host", "--json")
    assert out.returncode == 0, out.stderr
    data = result_of(out.stdout)
    assert data["home"] == str(host.home)
    assert data["ssh_resolver"] == "ssh -G"


def test_identity_agent_socket_without_identity_file(world: World, host: SimHost,
                                                     tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run(["ssh-add", str(world.key)], env={**env, "SSH_AUTH_SOCK": str(sock)},
                       check=True, capture_output=True)
        with alias(world, host, "agented", basics(world, host) + f"IdentityAgent {sock}"):
            out = inv(world, "probe", "--host", "agented", "--json")
            assert out.returncode == 0, out.stderr
            assert result_of(out.stdout)["home"] == str(host.home)
        # the same alias with `IdentityAgent none`: no key at all, so the agent did it
        with alias(world, host, "agentless", basics(world, host) + "IdentityAgent none"):
            line = error_line(inv(world, "probe", "--host", "agentless"), "agentless")
            assert "authentication failed" in line
    finally:
        agent.terminate()
        agent.wait(10)


def test_certificate_file_user_certificate(world: World, host: SimHost,
                                           tmp_path: Path) -> None:
    ca = keygen(tmp_path / "user_ca")
    key = keygen(tmp_path / "certified")  # not in authorized_keys: only its cert opens
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "e2e", "-n", world.user,
                    str(key.with_suffix(".pub"))], check=True, capture_output=True)
    cert = tmp_path / "certs" / "user.cert"  # not <key>-cert.pub: paramiko would find that
    cert.parent.mkdir()
    (tmp_path / "certified-cert.pub").rename(cert)
    restart_sshd(host, f"TrustedUserCAKeys {ca.with_suffix('.pub')}")
    try:
        options = basics(world, host) + f"IdentityFile {key}\nIdentitiesOnly yes\n"
        with alias(world, host, "plainkey", options):  # the bare key is refused
            assert "authentication failed" in error_line(
                inv(world, "probe", "--host", "plainkey"), "plainkey")
        with alias(world, host, "certified", options + f"CertificateFile {cert}"):
            assert world.ssh("certified", "true").returncode == 0
            out = inv(world, "probe", "--host", "certified", "--json")
            assert out.returncode == 0, out.stderr
    finally:
        restart_sshd(host)


def test_marker_lines_in_known_hosts_break_no_host(world: World, host: SimHost,
                                                   tmp_path: Path) -> None:
    import paramiko

    ca, stranger = keygen(tmp_path / "some_ca"), keygen(tmp_path / "stranger")
    markers = (f"@cert-authority *.example.com {pub(ca)}\n"
               f"@revoked old.example.com {pub(stranger)}\n"
               "# a comment\n")
    with alias(world, host, "marked", basics(world, host) + f"IdentityFile {world.key}"):
        world.known_hosts.write_text(markers + world.known_hosts.read_text())
        # paramiko's own loader dies on such a file: the world is the one that crashed
        with pytest.raises(paramiko.hostkeys.InvalidHostKey):
            paramiko.HostKeys(str(world.known_hosts))
        out = inv(world, "probe", "--host", "marked", "--json")
    assert out.returncode == 0, out.stderr


def test_revoked_host_key_is_refused_naming_the_line(world: World, host: SimHost) -> None:
    with alias(world, host, "revoked", basics(world, host) + f"IdentityFile {world.key}"):
        known = world.known_hosts.read_text()  # the host's own key is listed as trusted
        world.known_hosts.write_text(known + f"@revoked * {pub(host.host_key)}\n")
        line_no = len(known.splitlines()) + 1
        assert world.ssh("revoked", "true").returncode != 0  # OpenSSH refuses it too
        line = error_line(inv(world, "probe", "--host", "revoked"), "revoked")
    assert "@revoked" in line and f"{world.known_hosts}:{line_no}" in line, line


def test_host_certificate_is_refused_with_what_to_add(world: World, host: SimHost,
                                                      tmp_path: Path) -> None:
    ca = keygen(tmp_path / "host_ca")
    hkey = tmp_path / "hostkey"
    shutil.copy(host.host_key, hkey)
    shutil.copy(host.host_key.with_suffix(".pub"), hkey.with_suffix(".pub"))
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-h", "-I", "omega", "-n", LOOPBACK,
                    str(hkey.with_suffix(".pub"))], check=True, capture_output=True)
    restart_sshd(host, f"HostCertificate {tmp_path / 'hostkey-cert.pub'}")
    try:
        with alias(world, host, "hostcert",
                   basics(world, host) + f"IdentityFile {world.key}"):
            world.known_hosts.write_text(
                f"@cert-authority [{LOOPBACK}]:{host.port} {pub(ca)}\n")
            assert world.ssh("hostcert", "true").returncode == 0  # OpenSSH trusts the CA
            line = error_line(inv(world, "probe", "--host", "hostcert"), "hostcert")
    finally:
        restart_sshd(host)
    assert "host certificates are not supported" in line, line
    assert "@cert-authority" in line and "ssh-keyscan" in line, line


def test_global_known_hosts_file_is_read(world: World, host: SimHost, tmp_path: Path) -> None:
    global_file = tmp_path / "ssh_known_hosts"
    global_file.write_text(host.host_key_line + "\n")
    options = basics(world, host) + f"IdentityFile {world.key}\n"
    with alias(world, host, "globalkh", options + f"GlobalKnownHostsFile {global_file}"):
        world.known_hosts.write_text("")  # the user's and the inventory's files: empty
        with alias(world, host, "nokh", options):  # without the global file: unknown
            world.known_hosts.write_text("")
            assert "unknown host key" in error_line(inv(world, "probe", "--host", "nokh"),
                                                    "nokh")
        world.known_hosts.write_text("")
        assert world.ssh("globalkh", "true").returncode == 0
        out = inv(world, "probe", "--host", "globalkh", "--json")
    assert out.returncode == 0, out.stderr


def test_encrypted_key_without_agent_is_one_line_naming_ssh_add(
        world: World, host: SimHost, tmp_path: Path) -> None:
    locked = tmp_path / "locked_key"
    shutil.copy(world.key, locked)
    shutil.copy(world.key.with_suffix(".pub"), locked.with_suffix(".pub"))  # authorized
    locked.chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", "s3cret", "-f", str(locked)],
                   check=True, capture_output=True)
    with alias(world, host, "locked",
               basics(world, host) + f"IdentityFile {locked}\nIdentitiesOnly yes"):
        line = error_line(inv(world, "probe", "--host", "locked"), "locked")
    assert str(locked) in line and f"ssh-add {locked}" in line, line
    assert "encrypted" in line

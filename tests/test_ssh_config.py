"""sshconf without a network: the `ssh -G` parser and mapping, the paramiko fallback,
known_hosts parsing (markers, hashed and [host]:port entries), certificate matching."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest

from jobsafe_ops import remote, sshconf
from jobsafe_ops.errors import ConfigError, RemoteError

needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the ssh client")
needs_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")

SSH_G = """user op
hostname 10.1.2.3
port 2222
identitiesonly yes
identityagent /run/agent.sock
identityfile ~/.ssh/id_%h
identityfile /keys/with space
certificatefile ~/.ssh/%r-cert.pub
globalknownhostsfile /etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2
userknownhostsfile ~/kh/%n /tmp/b
connecttimeout 7
proxyjump jump1,me@jump2:23
"""


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)],
                   check=True, capture_output=True)
    return path


def test_ssh_g_output_maps_to_every_option(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    r = sshconf.from_options("bb", sshconf.parse_ssh_g(SSH_G), sshconf.SSH_G)
    assert (r.hostname, r.port, r.user, r.resolver) == ("10.1.2.3", 2222, "op", "ssh -G")
    # every IdentityFile, in order; ~ and tokens expanded (ssh -G prints them raw)
    assert r.identity_files == (f"{tmp_path}/.ssh/id_10.1.2.3", "/keys/with space")
    assert r.certificate_files == (f"{tmp_path}/.ssh/op-cert.pub",)
    assert r.identity_agent == "/run/agent.sock" and r.identities_only
    assert r.proxy_jump == "jump1,me@jump2:23" and r.connect_timeout == 7
    assert r.user_known_hosts == (f"{tmp_path}/kh/bb", "/tmp/b")
    assert r.global_known_hosts == sshconf.DEFAULT_GLOBAL_KNOWN_HOSTS


def test_defaults_and_none_values():
    r = sshconf.from_options("h", sshconf.parse_ssh_g(
        "hostname h\nport 22\nuser u\nidentitiesonly no\nconnecttimeout none\n"
        "proxyjump none\nidentityagent none\nuserknownhostsfile none\n"), sshconf.SSH_G)
    assert r.connect_timeout is None and r.proxy_jump is None and not r.identities_only
    assert r.identity_agent == "none" and r.user_known_hosts == ()
    assert sshconf.connect_kwargs(r)["allow_agent"] is False


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("SSH_AUTH_SOCK", None), ("none", "none"), ("/s.sock", "/s.sock"),
    ("$MY_SOCK", "/from/env"), ("$UNSET_SOCK_X", "none"),
])
def test_identity_agent_values(monkeypatch, value, expected):
    monkeypatch.setenv("MY_SOCK", "/from/env")
    monkeypatch.delenv("UNSET_SOCK_X", raising=False)
    assert sshconf._agent(value) == expected


def test_token_expansion():
    got = sshconf.expand("%d/%u/%h/%r/%p/%n/%%", hostname="H", user="R", port=2, alias="A")
    assert got == f"{os.path.expanduser('~')}/{getpass.getuser()}/H/R/2/A/%"


@pytest.mark.parametrize(("target", "parts"), [
    ("bigblack", (None, "bigblack", None)),
    ("op@h.invalid:2222", ("op", "h.invalid", 2222)),
    ("me@jump2:23", ("me", "jump2", 23)),
    ("[::1]:22", (None, "::1", 22)),
    ("ssh://u@h", ("u", "h", None)),
])
def test_split_target(target, parts):
    assert sshconf.split_target(target) == parts


@needs_ssh
def test_resolve_runs_openssh_include_and_match(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    inc = tmp_path / "inc.conf"
    inc.write_text("Host bb\n  HostName 10.9.9.9\n  IdentityFile /k/one\n  IdentityFile /k/two\n")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Include {inc}\nMatch host 10.9.9.9\n  Port 2200\n"
                   "Host *\n  GlobalKnownHostsFile /g/known\n")
    r = sshconf.resolve("bb", str(cfg))
    assert r.resolver == "ssh -G" and r.hostname == "10.9.9.9" and r.port == 2200
    assert r.identity_files == ("/k/one", "/k/two")
    assert r.global_known_hosts == ("/g/known",)
    short = sshconf.resolve("op@bb:99", str(cfg))  # an inventory `ssh = "user@host:port"`
    assert (short.hostname, short.port, short.user) == ("10.9.9.9", 99, "op")


@needs_ssh
def test_a_bad_ssh_config_is_one_config_error(tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host x\n  Bogus 1\n")
    with pytest.raises(ConfigError) as err:
        sshconf.resolve("x", str(cfg))
    assert "Bogus" in str(err.value) or "bogus" in str(err.value)
    assert "\n" not in str(err.value)


def test_paramiko_fallback_without_ssh(tmp_path, monkeypatch):
    monkeypatch.setattr(sshconf.shutil, "which", lambda name: None)
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host bb\n  HostName 10.0.0.5\n  User op\n  IdentityFile /k/a\n"
                   "  IdentitiesOnly yes\n  ProxyJump j\n")
    r = sshconf.resolve("bb", str(cfg))
    assert r.resolver == "paramiko"
    assert (r.hostname, r.user, r.port, r.identity_files) == ("10.0.0.5", "op", 22, ("/k/a",))
    assert r.identities_only and r.proxy_jump == "j"
    assert r.global_known_hosts == sshconf.DEFAULT_GLOBAL_KNOWN_HOSTS


def test_connect_kwargs_keep_existing_identities_only(tmp_path):
    key = tmp_path / "k"
    key.write_text("x")
    r = sshconf.Resolved("a", "h", 22, "u", sshconf.SSH_G,
                         identity_files=(str(key), str(tmp_path / "missing")),
                         identities_only=True)
    kw = sshconf.connect_kwargs(r)
    assert kw == {"key_filename": [str(key)], "look_for_keys": False, "allow_agent": True}
    assert r.missing_identities == [str(tmp_path / "missing")]


@needs_keygen
def test_certificate_file_is_loaded_onto_the_key_it_certifies(tmp_path):
    ca, key, other = keygen(tmp_path / "ca"), keygen(tmp_path / "k"), keygen(tmp_path / "o")
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "t", "-n", "u",
                    str(key) + ".pub"], check=True, capture_output=True)
    cert = tmp_path / "elsewhere.cert"
    (tmp_path / "k-cert.pub").rename(cert)
    blob = paramiko.PublicBlob.from_file(str(cert)).key_blob
    assert sshconf.cert_matches(paramiko.PKey.from_path(str(key)), blob)
    assert not sshconf.cert_matches(paramiko.PKey.from_path(str(other)), blob)
    r = sshconf.Resolved("a", "h", 22, "u", sshconf.SSH_G,
                         identity_files=(str(other), str(key)),
                         certificate_files=(str(cert),))
    pkey = sshconf.connect_kwargs(r)["pkey"]
    assert pkey.public_blob is not None
    assert pkey.public_blob.key_type == "ssh-ed25519-cert-v01@openssh.com"
    assert pkey.asbytes() == paramiko.PKey.from_path(str(key)).asbytes()


@needs_keygen
def test_encrypted_key_is_named_with_ssh_add(tmp_path):
    locked = keygen(tmp_path / "locked", passphrase="pw")
    plain = keygen(tmp_path / "plain")
    assert sshconf.encrypted_identities([str(plain), str(locked)]) == [str(locked)]
    conn = SimpleNamespace(user="u", host="h", port=22, resolved=None,
                           connect_kwargs={"key_filename": [str(plain), str(locked)]})
    err = remote._auth_failed(conn, "h1", paramiko.AuthenticationException("denied"))
    assert isinstance(err, RemoteError) and err.exit_code == 4
    assert f"ssh-add {locked}" in str(err) and "\n" not in str(err)


# ---- known_hosts ------------------------------------------------------------------------

def _pub(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def test_known_hosts_lines_plain_hashed_port_and_markers(tmp_path):
    a, b, c, ca = (paramiko.Ed25519Key.from_private_key_file(str(keygen(tmp_path / n)))
                   for n in "abcx")
    hashed = paramiko.HostKeys.hash_host("hashed.example")
    path = tmp_path / "known_hosts"
    path.write_text("\n".join([
        "# comment",
        f"plain.example,alias {_pub(a)}",
        f"{hashed} {_pub(b)}",
        f"[127.0.0.1]:2222 {_pub(c)}",
        f"@cert-authority *.example.com {_pub(ca)}",
        "@cert-authority broken line",
        f"@revoked * {_pub(a)}",
        "garbage ssh-ed25519 !!!notbase64",
        "",
    ]))
    # paramiko's own loader crashes on this file; ours reads every good line
    with pytest.raises(paramiko.hostkeys.InvalidHostKey):
        paramiko.HostKeys(str(path))
    known = sshconf.KnownHosts()
    known.read(path)
    keys = paramiko.HostKeys()
    known.fill(keys)
    assert keys.lookup("plain.example")["ssh-ed25519"] == a
    assert keys.lookup("alias")["ssh-ed25519"] == a
    assert keys.lookup("hashed.example")["ssh-ed25519"] == b
    assert keys.lookup("[127.0.0.1]:2222")["ssh-ed25519"] == c
    assert keys.lookup("127.0.0.1") is None
    assert known.revoked_line("plain.example", a) == f"{path}:7"
    assert known.revoked_line("plain.example", b) is None
    assert known.authority_line("db.example.com") == f"{path}:5"
    assert known.authority_line("plain.example") is None


@pytest.mark.parametrize(("patterns", "name", "hit"), [
    (["*.example.com"], "a.example.com", True),
    (["*.example.com", "!bad.example.com"], "bad.example.com", False),
    (["[127.0.0.1]:2222"], "[127.0.0.1]:2222", True),  # brackets are literal
    (["[127.0.0.1]:2222"], "1", False),
    (["h?st"], "host", True),
    ([paramiko.HostKeys.hash_host("secret.host")], "secret.host", True),
    ([paramiko.HostKeys.hash_host("secret.host")], "other.host", False),
])
def test_host_patterns(patterns, name, hit):
    assert sshconf.host_matches(patterns, name) is hit


def test_known_hosts_files_include_the_global_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBSAFE_INVENTORY", str(tmp_path / "inv"))
    g1, u1 = tmp_path / "global", tmp_path / "user"
    g1.write_text("")
    u1.write_text("")
    files = remote.known_hosts_files({"userknownhostsfile": [str(u1)],
                                      "globalknownhostsfile": [str(g1), "/no/such"]})
    assert u1 in files and g1 in files and Path("/no/such") not in files

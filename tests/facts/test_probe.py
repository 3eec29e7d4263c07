"""probe: the parser against recorded outputs (tests/data/probe), and the verdicts."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from jobsafe_ops.facts.probe import parse_probe, probe_script, verdicts
from jobsafe_ops.facts.views import probe_view
from jobsafe_ops.inventory import load_inventory

DATA = Path(__file__).parents[1] / "data" / "probe"
HOSTS = load_inventory(Path(__file__).resolve().parents[2] / "hosts")


def test_busy_host_with_pueue_and_memcap():
    p = parse_probe("bigblack", (DATA / "bigblack-busy-swapping.txt").read_text())
    assert (p.nproc, p.load) == (32, (30.5, 28.1, 25.0))
    assert p.mem_total == 63963136 * 1024 and p.mem_available == 20971520 * 1024
    assert (p.swap_in, p.swap_out) == (12, 30)
    assert p.pueue_version == "4.0.4" and p.pueue_error is None
    assert p.state_size == 15728640 and p.state_file.endswith("state.json")
    assert p.memcap, p.memcap_reason
    groups = {g.name: g for g in p.groups}
    assert groups["p1"].parallel == 2 and groups["p1"].counts["running"] == 1
    assert p.expand("~/project") == "/home/op/project"
    v = {x.name: x for x in verdicts(p, HOSTS["bigblack"])}
    assert v["load"].level == "alarm"  # 30.5 >= 0.9 x 32 = 28.8
    assert v["swap"].level == "alarm" and "si=12 so=30" == v["swap"].value
    assert v["state file"].level == "warn"  # 15 MB: above 10, below 50
    assert v["memory"].level == "ok"  # 67 % used
    assert v["memory cap"].ok


def test_host_without_pueue_or_systemd():
    p = parse_probe("demo", (DATA / "debian-no-pueue-no-systemd.txt").read_text())
    assert p.nproc and p.nproc >= 1
    assert p.pueue_version is None and "not found" in (p.pueue_error or "")
    assert not p.memcap and "systemd" in p.memcap_reason
    assert p.groups == ()
    v = {x.name: x for x in verdicts(p, HOSTS["demo"])}
    assert not v["pueue"].ok
    assert "memory cap" not in v  # demo host does not ask for caps


def test_gz_state_file_is_found():
    text = (DATA / "bigblack-busy-swapping.txt").read_text().replace(
        "15728640 /home/op/.local/share/pueue/state.json",
        "2048 /home/op/.local/share/pueue/state.json\n"
        "900000 /home/op/.local/share/pueue/state.json.gz")
    p = parse_probe("bigblack", text)
    assert p.state_file.endswith("state.json.gz") and p.state_size == 900000


def test_memcap_scope_without_swap_cap_is_not_a_cap():
    text = (DATA / "bigblack-busy-swapping.txt").read_text().replace(
        "@@memcap\n0\nrc 0", "@@memcap\nmax\nrc 0")
    p = parse_probe("bigblack", text)
    assert not p.memcap and "memory.swap.max is max" in p.memcap_reason


def test_script_checks_both_state_files_and_swap_cap():
    script = probe_script("~/.local/bin/pueue")
    assert "state.json.gz" in script and "MemorySwapMax=0" in script
    assert '"$HOME"/.local/bin/pueue --version' in script


def test_probe_view_renders():
    p = parse_probe("bigblack", (DATA / "bigblack-busy-swapping.txt").read_text())
    buf = io.StringIO()
    Console(file=buf, width=120, color_system=None).print(probe_view(p, HOSTS["bigblack"]))
    out = buf.getvalue()
    assert "cores (nproc)" in out and "32" in out and "alarm" in out and "p1" in out

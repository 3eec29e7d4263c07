"""The host health facts have one parser each (hostside/health.py): the probe's shell lines
(also the monitor's fallback for hosts without python3) and the monitor filter's own reads
of /proc give the same facts on this machine."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from jobsafe_ops.facts import probe
from jobsafe_ops.facts.snapshot import Options, parse_plain
from jobsafe_ops.hostside import health
from jobsafe_ops.hostside import monitor_filter as mf


def shell_facts(env: dict[str, str]) -> dict[str, list[str]]:
    script = "\n".join([probe.NPROC, probe.MEMINFO, probe.LOADAVG,
                        f"echo @@swap; {probe.VMSTAT_SWAP}", probe.PUEUE_DIR,
                        f"echo @@statefile; {probe.STATE_FILES}"])
    # (the last `[ -f ] && stat` exits 1 when there is no .gz: as on a host, not an error)
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True,
                         cwd=env["HOME"]).stdout
    return probe.sections(out)


def test_shell_and_filter_read_the_same_facts(tmp_path: Path) -> None:
    data = tmp_path / "data" / "pueue"
    data.mkdir(parents=True)
    (data / "state.json").write_text("{}" * 50)
    (data / "state.json.gz").write_bytes(b"x" * 7)
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"],
           "XDG_DATA_HOME": str(tmp_path / "data")}
    s = shell_facts(env)
    filt = mf.health(env)
    assert probe.parse_int(s["nproc"][0]) == filt["nproc"]
    mem = probe.parse_meminfo(s["meminfo"])
    assert mem["MemTotal"] == filt["mem_total"] and mem.get("SwapTotal") == filt["swap_total"]
    assert probe.parse_state_file(s["statefile"]) == (filt["state_file"], filt["state_size"])
    assert filt["state_file"] == str(data / "state.json") and filt["state_size"] == 100
    load = probe.parse_load(s["loadavg"])
    assert load is not None and filt["load"] is not None and len(filt["load"]) == 3
    counters = health.parse_swap_counters(s["swap"])
    assert (counters is None) == (mf.swap_counters() is None)


def test_the_fallback_exchanges_the_filters_health_shape(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    s = shell_facts(env)
    lines = ["@@plain", json.dumps({"tasks": {}, "groups": {}}), "rc 0"]
    for name in ("nproc", "meminfo", "loadavg", "swap", "statefile"):
        lines += [f"@@{name}", *s.get(name, [])]
    payload = parse_plain(None, "\n".join(lines), Options())  # type: ignore[arg-type]
    assert payload["via"] == "plain"
    shape = {**mf.health(env), "swap_counters": None, "swap_window": None, "swap_in": None,
             "swap_out": None}
    assert set(payload["health"]) == set(shape)
    assert payload["health"]["mem_total"] == shape["mem_total"]


def test_parsers_take_what_hosts_print_and_skip_the_rest() -> None:
    meminfo = ["MemTotal:       16318540 kB", "MemAvailable:    8000000 kB", "Bogus: x",
               "SwapTotal:             0 kB", "Cached: 12 kB", "garbage"]
    assert health.parse_meminfo(meminfo) == {"MemTotal": 16318540 * 1024,
                                             "MemAvailable": 8000000 * 1024, "SwapTotal": 0}
    assert health.parse_loadavg("0.52 0.58 0.59 1/389 12345") == (0.52, 0.58, 0.59)
    assert health.parse_loadavg("") is None and health.parse_loadavg("a b c") is None
    assert health.parse_swap_counters(["pswpin 12", "pswpout 30", "pgfault 9"]) == (12, 30)
    assert health.parse_swap_counters(["pswpin 12"]) is None
    assert health.largest_state_file([(10, "/s/state.json"), (99, "/s/state.json.gz")]) == \
        ("/s/state.json.gz", 99)
    assert health.largest_state_file([]) == (None, None)
    facts = health.health_facts(2, (0.123, 0.5, 1.0), {"MemTotal": 1}, (1, 2), None, None)
    assert facts["load"] == [0.12, 0.5, 1.0] and facts["swap_counters"] == [1, 2]
    # the probe's two vmstat samples -> pages swapped between them
    assert probe.swap_delta(["pswpin 10", "pswpout 5", "pswpin 14", "pswpout 5"]) == (4, 0)
    assert probe.swap_delta(["pswpin 10", "pswpout 5"]) == (None, None)

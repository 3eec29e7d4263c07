"""The host health facts, one parser each: memory, swap activity, load, the state file.

The probe's shell script (facts/probe.py) and the monitor's fallback for hosts without
python3 print these files' lines; the monitor filter reads the files on the host. All of them
hand the lines to these parsers, and exchange the facts in `health_facts`' shape. Stdlib
only, Python >= 3.8, like the rest of hostside.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MEMINFO_KEYS = ("MemTotal", "MemAvailable", "SwapTotal", "SwapFree")


def parse_meminfo(lines: Iterable[str]) -> dict[str, int]:
    """/proc/meminfo lines -> {MemTotal: bytes, ...} for MEMINFO_KEYS."""
    mem: dict[str, int] = {}
    for line in lines:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if key in MEMINFO_KEYS and parts and parts[0].isdigit():
            mem[key] = int(parts[0]) * 1024
    return mem


def parse_loadavg(text: str) -> tuple[float, float, float] | None:
    """/proc/loadavg -> the 1, 5 and 15 minute load averages."""
    la = text.split()
    try:
        return (float(la[0]), float(la[1]), float(la[2]))
    except (IndexError, ValueError):
        return None


def parse_swap_counters(lines: Iterable[str]) -> tuple[int, int] | None:
    """/proc/vmstat lines -> the cumulative (pswpin, pswpout) pages, None if absent."""
    found: dict[str, int] = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("pswpin", "pswpout") and parts[1].isdigit():
            found[parts[0]] = int(parts[1])
    if "pswpin" not in found or "pswpout" not in found:
        return None
    return found["pswpin"], found["pswpout"]


def largest_state_file(sizes: Iterable[tuple[int, str]]
                       ) -> tuple[str | None, int | None]:
    """(bytes, path) of state.json / state.json.gz -> (path, bytes) of the larger one (the
    .gz is the live one when compress_state_file is on); (None, None) when neither exists."""
    state_file: str | None = None
    state_size: int | None = None
    for size, path in sizes:
        if state_size is None or size > state_size:
            state_file, state_size = path, size
    return state_file, state_size


def health_facts(nproc: int | None, load: Sequence[float] | None,
                 mem: Mapping[str, int], swap_counters: Sequence[int] | None,
                 state_file: str | None, state_size: int | None) -> dict[str, Any]:
    """The health facts as every reader exchanges them (monitor filter, its fallback)."""
    return {
        "nproc": nproc, "load": [round(x, 2) for x in load] if load else None,
        "mem_total": mem.get("MemTotal"), "mem_available": mem.get("MemAvailable"),
        "swap_total": mem.get("SwapTotal"),
        "swap_counters": list(swap_counters) if swap_counters else None,
        "state_file": state_file, "state_size": state_size,
    }

"""Host facts in one round trip: a shell script plus a pure parser, and health verdicts.

The script is sent as one command; its sections are parsed from recorded outputs in tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..checks import Check
from ..hostside import health
from ..inventory import Host
from ..scheduler.pueue import PueueState, parse_status, parse_version, status_failure
from ..shell import program, quote
from . import checks as custom
from .programs import PROBED, key_fix

if TYPE_CHECKING:  # annotations only: the planner loads this without the SSH transport
    from ..remote import Remote

MEMCAP_TEST_MAX = "64M"


# Host facts read by both the probe and the monitor's fallback for hosts without python3
# (snapshot.py); each line prints its own @@section.
NPROC = "echo @@nproc; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN"
MEMINFO = "echo @@meminfo; grep -E '^(MemTotal|MemAvailable|SwapTotal|SwapFree):' /proc/meminfo"
LOADAVG = "echo @@loadavg; cat /proc/loadavg"
VMSTAT_SWAP = "grep -E '^pswp(in|out) ' /proc/vmstat"  # cumulative pages swapped in/out
# pueue's state directory into $dir, for hosts without python3: the shell twin of
# monitor_filter.pueue_paths (the one resolver; tests/test_pueue_paths.py runs both over one
# table of cases). A null, `~` or empty pueue_directory is unset, never a directory "null".
PUEUE_DIR = r"""cfg=${PUEUE_CONFIG_PATH:-}
if [ -z "$cfg" ]; then
  case ${XDG_CONFIG_HOME:-} in /*) cfg=$XDG_CONFIG_HOME;; *) cfg=$HOME/.config;; esac
  cfg=$cfg/pueue/pueue.yml
  [ -f "$cfg" ] || cfg=./pueue.yml
fi
dir=$(awk 'BEGIN { q = "\047"; skip = -1; child = -1 }
{ sub(/\r$/, "") }
/^ *(#|$)/ { next }
{ match($0, /^ */); ind = RLENGTH
  if (skip >= 0 && ind > skip) next
  skip = -1
  if ($0 !~ /^ *[A-Za-z_][A-Za-z0-9_]* *:( |$)/) next
  k = $0; sub(/^ */, "", k); sub(/ *:.*$/, "", k)
  v = $0; sub(/^ *[A-Za-z_][A-Za-z0-9_]* *:/, "", v); sub(/^ +/, "", v); sub(/ +$/, "", v)
  if (ind == 0) { insec = (k == "shared" && v == ""); child = -1; next }
  if (!insec) next
  if (child < 0) child = ind
  if (ind != child) next
  if (v == "" || v ~ /^[|>]/) { if (k == "pueue_directory") exit; skip = ind; next }
  if (k != "pueue_directory") next
  c = substr(v, 1, 1)
  if (c == q) {
    s = substr(v, 2); out = ""; ok = 0
    while ((i = index(s, q)) > 0) {
      out = out substr(s, 1, i - 1)
      if (substr(s, i + 1, 1) != q) { ok = 1; break }
      out = out q; s = substr(s, i + 2)
    }
    if (ok) v = out
  } else if (c == "\"") {
    out = ""; ok = 0
    for (i = 2; i <= length(v); i++) {
      c = substr(v, i, 1)
      if (c == "\\") { i++; out = out substr(v, i, 1) }
      else if (c == "\"") { ok = 1; break }
      else out = out c
    }
    if (ok) v = out
  } else {
    if (v ~ /^#/) v = ""; else sub(/ +#.*$/, "", v)
    sub(/ +$/, "", v)
    if (v ~ /^(~|null|Null|NULL|true|True|TRUE|false|False|FALSE)$/) v = ""
  }
  if (v != "") print "=" v
  exit
}' "$cfg" 2>/dev/null)
case $dir in
  "") case ${XDG_DATA_HOME:-} in /*) dir=$XDG_DATA_HOME/pueue;; *) dir=$HOME/.local/share/pueue;; esac;;
  "=~") dir=$HOME;;
  "=~/"*) dir=$HOME${dir#??};;
  *) dir=${dir#=};;
esac"""
STATE_FILES = ('for f in "$dir/state.json" "$dir/state.json.gz"; do [ -f "$f" ] && '
               "stat -c '%s %n' \"$f\"; done")


def dotenv_script(project_dir: str) -> str:
    """The project's `.env` (AP-16/G-15: where a job's secrets live): exists or not, and its
    mode - `stat` only, the contents are never read. -L: judge the file a symlink points to."""
    f = program(project_dir.rstrip("/") + "/.env")
    return (f"echo @@dotenv; if [ -e {f} ]; then stat -L -c '%a' {f} 2>&1; "
            "else echo absent; fi")


def programs_script(pueue: str = "pueue", uv: str = "uv") -> str:
    """Where each program a command needs resolves (`command -v`, under the PATH every
    remote command gets: the session's with the host file's `path` in front)."""
    names = {"pueue": pueue, "uv": uv}
    lines = [f"printf '%s\\t%s\\n' {quote(name)} \"$(command -v {program(names.get(name, name))}"
             ' 2>/dev/null)"' for name in PROBED]
    return "echo @@path; printf '%s\\n' \"$PATH\"\necho @@programs\n" + "\n".join(lines)


def probe_script(pueue: str, swap_interval: float = 1.0, project_dir: str | None = None,
                 uv: str = "uv", checks: Sequence[Check] = (), nonce: str = "") -> str:
    """One remote round trip. Every section is delimited so a missing tool degrades to
    'unknown' instead of failing the probe. `checks`: the host file's [[checks]] run in it
    (framed with `nonce`, checks.script)."""
    p = program(pueue)
    own = custom.script(checks, nonce)
    dotenv = dotenv_script(project_dir) if project_dir else ""
    return f"""
{programs_script(pueue, uv)}
{NPROC}
{MEMINFO}
{LOADAVG}
echo @@swap; {VMSTAT_SWAP}; sleep {swap_interval}; {VMSTAT_SWAP}
echo @@home; printf '%s\\n' "$HOME"
echo @@pueue_version; {p} --version 2>&1
{PUEUE_DIR}
echo @@statefile; {STATE_FILES}; echo "dir $dir"
echo @@cgroup; stat -fc %T /sys/fs/cgroup 2>&1
echo @@memcap; systemd-run --user --scope -q -p MemoryMax={MEMCAP_TEST_MAX} -p MemorySwapMax=0 \
  sh -c 'cat "/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup | tail -n1)/memory.swap.max"' 2>&1; echo "rc $?"
{dotenv}
echo @@status; {p} status --json 2>&1; rc=$?; echo; echo "rc $rc"
{own}
echo @@end
"""


@dataclass(frozen=True)
class GroupInfo:
    name: str
    status: str
    parallel: int
    counts: Mapping[str, int]


@dataclass(frozen=True)
class Probe:
    host: str
    nproc: int | None
    mem_total: int | None  # bytes
    mem_available: int | None
    swap_total: int | None
    load: tuple[float, float, float] | None
    swap_in: int | None  # pages swapped in during the sample
    swap_out: int | None
    home: str
    pueue_version: str | None
    pueue_error: str | None
    state_file: str | None
    state_size: int | None
    cgroup_fs: str | None
    memcap: bool
    memcap_reason: str
    groups: tuple[GroupInfo, ...] = ()
    state: PueueState | None = field(default=None, compare=False, repr=False)
    dotenv: str | None = None  # the project's .env: "absent", its octal mode, None = unread
    dotenv_path: str | None = None
    # (name, where it resolves or None) for PROBED; the PATH remote commands get
    programs: tuple[tuple[str, str | None], ...] = ()
    path: str | None = None
    ssh_resolver: str | None = None  # how ssh options were resolved: "ssh -G" | "paramiko"
    sizing: tuple[Any, ...] = ()  # per declared group (ops/sizing.py; set by probe_cmd)
    checks: tuple[custom.CheckResult, ...] = ()  # the host file's [[checks]] run with it

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("state")
        d["groups"] = [asdict(g) for g in self.groups]
        d["programs"] = dict(self.programs)
        d["checks"] = [c.to_dict() for c in self.checks]
        return d

    @property
    def unresolved(self) -> list[str]:
        return [name for name, where in self.programs if where is None]

    def expand(self, path: str) -> str:
        """'~/project' -> absolute path on the host (SFTP and -w do not expand ~)."""
        if path == "~" or path.startswith("~/"):
            return self.home.rstrip("/") + path[1:]
        return path


def sections(text: str) -> dict[str, list[str]]:
    """'@@name' lines split a remote script's output into named sections (probe, git)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = line[2:].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def parse_int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def parse_meminfo(lines: list[str]) -> dict[str, int]:
    """The @@meminfo section -> {MemTotal: bytes, ...} (health.parse_meminfo)."""
    return health.parse_meminfo(lines)


def parse_load(lines: list[str]) -> tuple[float, float, float] | None:
    """The @@loadavg section -> the 1, 5 and 15 minute load averages."""
    return health.parse_loadavg((lines or [""])[0])


def parse_state_file(lines: list[str]) -> tuple[str | None, int | None]:
    """The @@statefile section -> (path, bytes) of the larger of state.json/.json.gz."""
    sizes = []
    for line in lines:
        size, _, path = line.partition(" ")
        if not line.startswith("dir ") and parse_int(size) is not None:
            sizes.append((int(size), path))
    return health.largest_state_file(sizes)


def swap_delta(lines: list[str]) -> tuple[int | None, int | None]:
    """The @@swap section (/proc/vmstat's pswpin/pswpout, twice, `swap_interval` apart) ->
    the pages swapped in and out between the two samples."""
    samples = [line for line in lines if len(line.split()) == 2]
    if len(samples) != 4:
        return None, None
    first = health.parse_swap_counters(samples[:2])
    second = health.parse_swap_counters(samples[2:])
    if first is None or second is None:
        return None, None
    return second[0] - first[0], second[1] - first[1]


def parse_probe(host: str, text: str, project_dir: str | None = None) -> Probe:
    s = sections(text)
    nproc = parse_int((s.get("nproc") or [""])[0])
    mem = parse_meminfo(s.get("meminfo", []))
    load = parse_load(s.get("loadavg", []))
    swap_in, swap_out = swap_delta(s.get("swap", []))
    version_lines = s.get("pueue_version", [])
    version = parse_version(version_lines[0]) if version_lines else None
    state_file, state_size = parse_state_file(s.get("statefile", []))
    memcap_lines = [ln for ln in s.get("memcap", []) if ln.strip()]
    rc = memcap_lines[-1] if memcap_lines else "rc 1"
    body = [ln for ln in memcap_lines[:-1]]
    memcap = rc == "rc 0" and bool(body) and body[-1].strip() == "0"
    if memcap:
        reason = "systemd-run --user --scope works; memory.swap.max = 0 verified"
    elif rc == "rc 0":
        reason = f"scope created but memory.swap.max is {body[-1].strip() if body else '?'}"
    else:
        reason = (body[0].strip() if body else "systemd-run failed") + \
            " (needs a user systemd manager, cgroup v2 with the memory controller delegated)"
    status_lines = s.get("status", [])
    status_rc = status_lines[-1] if status_lines else "rc 1"
    status_text = "\n".join(status_lines[:-1]).strip()
    state = None
    pueue_error = None
    groups: tuple[GroupInfo, ...] = ()
    if status_rc == "rc 0" and status_text.startswith("{"):
        state = parse_status(status_text)
        groups = tuple(
            GroupInfo(g.name, g.status, g.parallel, state.counts(g.name))
            for g in state.groups.values()
        )
    else:
        pueue_error = status_failure(status_text, status_rc)
    cg = (s.get("cgroup") or [""])[0] or None
    return Probe(
        host=host, nproc=nproc, mem_total=mem.get("MemTotal"),
        mem_available=mem.get("MemAvailable"), swap_total=mem.get("SwapTotal"), load=load,
        swap_in=swap_in, swap_out=swap_out,
        home=(s.get("home") or [""])[0], pueue_version=version, pueue_error=pueue_error,
        state_file=state_file, state_size=state_size, cgroup_fs=cg, memcap=memcap,
        memcap_reason=reason, groups=groups, state=state,
        dotenv=parse_dotenv(s.get("dotenv")),
        dotenv_path=project_dir.rstrip("/") + "/.env" if project_dir else None,
        programs=parse_programs(s.get("programs", [])),
        path=(s.get("path") or [""])[0] or None,
    )


def parse_programs(lines: list[str]) -> tuple[tuple[str, str | None], ...]:
    """The @@programs section (`name<TAB>path`, empty when it does not resolve)."""
    out = []
    for line in lines:
        name, sep, where = line.partition("\t")
        if sep and name:
            out.append((name, where.strip() or None))
    return tuple(out)


def parse_dotenv(lines: list[str] | None) -> str | None:
    """The @@dotenv section -> "absent", the octal mode ("600"), or None (unreadable)."""
    first = (lines or [""])[0].strip()
    if first == "absent" or (first.isdigit() and set(first) <= set("01234567")):
        return first
    return None


def dotenv_exposed(mode: str) -> bool:
    """Group or world may read (or write) it: any bit of 077."""
    return int(mode, 8) & 0o077 != 0


def run_probe(remote: Remote, swap_interval: float = 1.0, *, readonly: bool = False,
              checks: Sequence[Check] = ()) -> Probe:
    """`readonly`: a poll (deploy's monitor window) that may reconnect (remote.Remote).
    `checks`: custom checks run in the same round trip (Probe.checks, one row each)."""
    host = remote.host
    nonce = custom.new_nonce()
    result = remote.run(probe_script(host.pueue, swap_interval, host.project_dir, host.uv,
                                     checks, nonce),
                        check=False, readonly=readonly)
    text, rows = custom.results(checks, result.stdout, nonce)
    return replace(parse_probe(host.name, text, host.project_dir),
                   ssh_resolver=remote.ssh_resolver, checks=rows)


# ---- health verdicts (reused by monitor and deploy) ---------------------------------

@dataclass(frozen=True)
class Verdict:
    name: str
    ok: bool
    level: str  # ok | warn | alarm | unknown
    value: str
    detail: str


def verdicts(probe: Probe, host: Host) -> list[Verdict]:
    out: list[Verdict] = []
    if probe.load and probe.nproc:
        limit = 0.9 * probe.nproc
        ok = probe.load[0] < limit
        out.append(Verdict("load", ok, "ok" if ok else "alarm", f"{probe.load[0]:.2f}",
                           f"1-min load vs 0.9 x {probe.nproc} cores = {limit:.1f}"))
    else:
        out.append(Verdict("load", True, "unknown", "?", "load or nproc unreadable"))
    if probe.swap_in is not None and probe.swap_out is not None:
        ok = probe.swap_in == 0 and probe.swap_out == 0
        out.append(Verdict("swap", ok, "ok" if ok else "alarm",
                           f"si={probe.swap_in} so={probe.swap_out}",
                           "pages swapped in/out during the sample; must be 0"))
    else:
        out.append(Verdict("swap", True, "unknown", "?", "/proc/vmstat unreadable"))
    if probe.mem_total and probe.mem_available is not None:
        used = 1 - probe.mem_available / probe.mem_total
        level = "ok" if used < 0.8 else "alarm"
        out.append(Verdict("memory", level == "ok", level, f"{used:.0%} used",
                           f"{probe.mem_available / 1024**3:.1f} GiB available of "
                           f"{probe.mem_total / 1024**3:.1f} GiB; alarm at 80%"))
    if probe.state_size is not None:
        mb = probe.state_size / 1024**2
        level = ("alarm" if mb >= host.state_alarm_mb
                 else "warn" if mb >= host.state_warn_mb else "ok")
        out.append(Verdict("state file", level != "alarm", level, f"{mb:.1f} MB",
                           f"{probe.state_file}; warn at {host.state_warn_mb:g} MB, alarm at "
                           f"{host.state_alarm_mb:g} MB (AP-10: every add rewrites it)"))
    out.append(Verdict("pueue", probe.pueue_error is None,
                       "ok" if probe.pueue_error is None else "alarm",
                       probe.pueue_version or "?", probe.pueue_error or "daemon answers"))
    if probe.programs:
        out.append(programs_verdict(probe, host))
    if probe.dotenv is not None:
        out.append(dotenv_verdict(probe.dotenv, probe.dotenv_path or ".env"))
    if host.memory_cap:
        out.append(Verdict("memory cap", probe.memcap, "ok" if probe.memcap else "warn",
                           "available" if probe.memcap else "unavailable", probe.memcap_reason))
    out.extend(check_verdict(c) for c in probe.checks)
    return out


def check_verdict(c: custom.CheckResult) -> Verdict:
    """A [[checks]] row in the health table: `check NAME`, its level, what it printed."""
    return Verdict(f"check {c.name}", c.ok, c.level, c.observed or "-", c.message)


def dotenv_verdict(state: str, path: str) -> Verdict:
    """AP-16/G-15: a job's secrets live in the project's .env, readable by its owner only."""
    if state == "absent":
        return Verdict(".env", True, "ok", "absent",
                       f"no {path}; a job that needs secrets loads them from there (chmod 600)")
    if dotenv_exposed(state):
        return Verdict(".env", False, "warn", f"mode {state}",
                       f"{path} is readable by group or others; fix: chmod 600 {path}")
    return Verdict(".env", True, "ok", f"mode {state}", f"{path}: owner only")


def programs_verdict(probe: Probe, host: Host) -> Verdict:
    """pueue, uv, python3, git, systemd-run: each resolves, or the key that makes it."""
    missing = probe.unresolved
    if not missing:
        return Verdict("programs", True, "ok", "all found",
                       ", ".join(f"{n} {w}" for n, w in probe.programs))
    first = missing[0]
    return Verdict("programs", False, "warn", "missing: " + ", ".join(missing),
                   f"{first} not found on {host.name}'s PATH ({probe.path or '?'}); "
                   f"{key_fix(host, first)}")

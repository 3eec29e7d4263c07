"""Autoscaler: pure `decide(snapshot, host, thresholds) -> actions`, and the loop driver.

Rules (INV-6, as rangebar's pueue-autoscaler.sh does them): CPU% is the 1-minute load average /
nproc; MEM% is 1 - MemAvailable/MemTotal. Strict comparisons.
  load < 40 % AND mem < 60 %  -> +1 for each group with ready queued work and free memory
                                 >= 2 x its job_memory (no job_memory -> never up)
  load > 80 % OR  mem > 80 %  -> -1
  otherwise                    -> hold
Bounds per group from the host file: never below min by our step, never above max, never 0
(pueue reads 0 as unlimited), one step per group per tick (memory grows as jobs age, so
the effect of a step is only visible an interval later). A group found above max is
stepped down by one per tick, never clamped by a jump.

Each tick reads ONE snapshot (the monitor's filter over all groups: load, memory, swap,
parallel and queued counts per group), decides, applies `pueue parallel N --group G`,
journals every change, and checks the changes of the previous tick: load < 0.9 x nproc
and no swapping (the post-bump check), plus the host file's `when = "after-scale"`
[[checks]], run in that same poll. A failing one (severity alarm) holds every scale-up on
that tick, and the checks are run again on each later tick until they pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from .. import journal
from ..cli import MAX_WORKERS
from ..errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, ConfigError, JobsafeError
from ..facts.checks import CheckResult
from ..facts.snapshot import Health, Options, Snapshot, read_snapshot
from ..inventory import GroupSpec, Host
from ..notify import CHECK_FAILED, TICK_FAILED, Alarm, end_message, health_alarms
from ..remote import Remote, session
from ..scheduler.pueue import parallel_argv
from .sizing import SHARE, allowed

ACTION = "autoscale"
CHECK_ACTION = "autoscale-check"


@dataclass(frozen=True)
class Thresholds:
    """Fractions (0.40 = 40 %). Defaults are the rules' above; every one is a flag."""

    up_load: float = 0.40
    up_mem: float = 0.60
    down_load: float = 0.80
    down_mem: float = 0.80
    headroom: float = 2.0  # free memory must be >= headroom x job_memory to add a slot

    def __post_init__(self) -> None:
        if not 0 < self.up_load <= self.down_load or not 0 < self.up_mem <= self.down_mem:
            raise ConfigError(
                f"autoscale thresholds: need 0 < up <= down for load ({self.up_load:.0%} / "
                f"{self.down_load:.0%}) and memory ({self.up_mem:.0%} / {self.down_mem:.0%})"
            )
        if self.headroom < 1:
            raise ConfigError(f"--headroom {self.headroom} must be >= 1 (x job_memory)")

    def to_dict(self) -> dict[str, float]:
        return {"up_load": self.up_load, "up_mem": self.up_mem, "down_load": self.down_load,
                "down_mem": self.down_mem, "headroom": self.headroom}


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Readings:
    """The host's load and memory as the autoscaler sees them (injectable for tests)."""

    nproc: int | None
    load1: float | None
    mem_total: int | None
    mem_available: int | None
    swap_in: int | None = None  # pages during the last interval
    swap_out: int | None = None

    @property
    def load_ratio(self) -> float | None:
        return None if self.load1 is None or not self.nproc else self.load1 / self.nproc

    @property
    def mem_used(self) -> float | None:
        if not self.mem_total or self.mem_available is None:
            return None
        return 1 - self.mem_available / self.mem_total

    @property
    def swapping(self) -> bool:
        return bool(self.swap_in) or bool(self.swap_out)

    def to_dict(self) -> dict[str, Any]:
        return {"nproc": self.nproc, "load1": self.load1, "mem_total": self.mem_total,
                "mem_available": self.mem_available, "swap_in": self.swap_in,
                "swap_out": self.swap_out,
                "load_pct": None if self.load_ratio is None else round(100 * self.load_ratio, 1),
                "mem_pct": None if self.mem_used is None else round(100 * self.mem_used, 1)}


@dataclass(frozen=True)
class GroupLoad:
    name: str
    parallel: int
    status: str = "Running"
    ready: int = 0  # queued tasks not waiting on unfinished dependencies
    running: int = 0


@dataclass(frozen=True)
class ScaleSnapshot:
    host: str
    readings: Readings
    groups: Mapping[str, GroupLoad] = field(default_factory=dict)
    blocked: str = ""  # why no group may scale up (a failing after-scale check)


@dataclass(frozen=True)
class Action:
    group: str
    before: int
    after: int
    reason: str

    @property
    def changed(self) -> bool:
        return self.after != self.before

    @property
    def delta(self) -> int:
        return self.after - self.before

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "before": self.before, "after": self.after,
                "change": "hold" if not self.changed else f"{self.delta:+d}",
                "reason": self.reason}


def _gib(n: float) -> str:
    return f"{n / 1024**3:.1f} GiB"


def decide(snapshot: ScaleSnapshot, host: Host | Mapping[str, GroupSpec],
           thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Action]:
    """One action (maybe a hold) per declared group present on the daemon. Pure."""
    specs = host.groups if isinstance(host, Host) else host
    t, r = thresholds, snapshot.readings
    load, mem = r.load_ratio, r.mem_used
    known = pressure = idle = False
    figures = "load/memory unreadable"
    if load is not None and mem is not None:
        known = True
        pressure = load > t.down_load or mem > t.down_mem
        idle = load < t.up_load and mem < t.up_mem
        figures = f"load {load:.0%} mem {mem:.0%}"
    budget = float(r.mem_available or 0)
    out: list[Action] = []
    for name in sorted(specs):
        spec, g = specs[name], snapshot.groups.get(name)
        if g is None:
            continue  # declared but not on the daemon: nothing to tune
        p = g.parallel

        def act(after: int, why: str, p: int = p, name: str = name) -> None:
            out.append(Action(name, p, after, why))

        if p <= 0:
            # pueue reads 0 as unlimited: every queued task may start. Any finite value is
            # a decrease, so this is the one case that moves by more than one.
            act(spec.max, "parallel 0 means unlimited in pueue; set to max")
        elif p > spec.max:
            act(p - 1, f"above max {spec.max}: stepping down one per tick")
        elif not known:
            act(p, figures + ": hold")
        elif pressure:
            if p - 1 >= spec.min:
                act(p - 1, f"{figures}: above {t.down_load:.0%} load or {t.down_mem:.0%} memory")
            else:
                act(p, f"{figures}: under pressure but at min {spec.min}")
        elif p < spec.min:
            act(p + 1, f"below min {spec.min}: stepping up one per tick")
        elif not idle:
            act(p, f"{figures}: between thresholds")
        elif r.swapping:
            act(p, f"{figures} but swap active (si {r.swap_in} so {r.swap_out}): no scale-up")
        elif snapshot.blocked:
            act(p, f"{figures} but {snapshot.blocked}: no scale-up")
        elif g.status != "Running":
            act(p, f"group {g.status.lower()}: no scale-up")
        elif g.ready <= 0:
            act(p, "no queued work ready to start")
        elif spec.job_memory is None:
            act(p, "no job_memory estimate in the host file: never scale up blind")
        elif p >= spec.max:
            act(p, f"at max {spec.max}")
        elif budget < t.headroom * spec.job_memory:
            act(p, f"free memory {_gib(budget)} < {t.headroom:g} x job_memory "
                   f"{_gib(spec.job_memory)}")
        elif (cap := allowed(r.mem_available, r.nproc, spec)) is not None and p + 1 > cap:
            act(p, f"at the sizing limit {cap}: min(available x {SHARE:g} / job_memory, "
                   f"cores x {SHARE:g} / job_cpu {spec.job_cpu:g})")
        else:
            # reserve this slot's estimate so two groups do not both count the same memory
            budget -= spec.job_memory
            act(p + 1, f"{figures} below {t.up_load:.0%}/{t.up_mem:.0%}; {g.ready} ready; "
                       f"free {_gib(budget + spec.job_memory)} >= {t.headroom:g} x "
                       f"{_gib(spec.job_memory)}")
    return out


# ---- the loop driver ---------------------------------------------------------------------

Reader = Callable[[Snapshot], Readings]


def readings_from(snap: Snapshot) -> Readings:
    h = snap.health
    return Readings(nproc=h.nproc, load1=h.load[0] if h.load else None, mem_total=h.mem_total,
                    mem_available=h.mem_available, swap_in=h.swap_in, swap_out=h.swap_out)


def scale_snapshot(snap: Snapshot, readings: Readings) -> ScaleSnapshot:
    return ScaleSnapshot(snap.host, readings, {
        g.name: GroupLoad(g.name, g.parallel, g.status, g.ready, g.count("running"))
        for g in snap.groups if g.status != "missing"
    })


@dataclass(frozen=True)
class PostCheck:
    """The changes of the previous tick, checked on this one."""

    ok: bool
    changes: tuple[Mapping[str, Any], ...]
    load1: float | None
    limit: float | None  # 0.9 x nproc
    swap_in: int | None
    swap_out: int | None
    problems: tuple[str, ...] = ()
    checks: tuple[CheckResult, ...] = ()  # the host file's after-scale [[checks]]

    @property
    def blocking(self) -> list[str]:
        """The after-scale checks that failed at severity alarm: no scale-up."""
        return [c.name for c in self.checks if c.alarm]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "changes": [dict(c) for c in self.changes], "load1": self.load1,
                "limit": self.limit, "swap_in": self.swap_in, "swap_out": self.swap_out,
                "problems": list(self.problems), "checks": [c.to_dict() for c in self.checks]}


def post_check(changes: Sequence[Mapping[str, Any]], snap: Snapshot,
               readings: Readings) -> PostCheck:
    """load < 0.9 x nproc, no pages swapped since the last tick, pueue really runs with
    the parallel value we set (verify, never assume), and the after-scale [[checks]] run
    in this poll pass (snap.checks)."""
    problems = [f"check {c.name} {c.level}: {c.message}" for c in snap.checks if not c.ok]
    limit = 0.9 * readings.nproc if readings.nproc else None
    if readings.load1 is None or limit is None:
        problems.append("load unreadable")
    elif readings.load1 >= limit:
        problems.append(f"load {readings.load1:.2f} >= 0.9 x {readings.nproc} = {limit:.1f}")
    if readings.swapping:
        problems.append(f"swapping: si {readings.swap_in} so {readings.swap_out}")
    by = {g.name: g for g in snap.groups}
    for c in changes:
        g = by.get(str(c["group"]))
        if g is not None and g.parallel != c["after"]:
            problems.append(f"group {c['group']}: parallel is {g.parallel}, "
                            f"expected {c['after']}")
    ok = not [p for p in problems if not p.startswith("check ")] and \
        all(c.ok or not c.alarm for c in snap.checks)  # a warn check is reported only
    return PostCheck(ok, tuple(changes), readings.load1, limit, readings.swap_in,
                     readings.swap_out, tuple(problems), snap.checks)


def pending_changes(host: str, max_age: float = 3600.0,
                    now: datetime | None = None) -> list[dict[str, Any]]:
    """Changes journaled since this host's last post-bump check (a one-shot run from cron
    checks the previous run's changes the same way the loop checks its previous tick).
    Changes older than `max_age` seconds are stale: today's load says nothing about them."""
    now = now or datetime.now(UTC)
    changes: list[dict[str, Any]] = []
    for entry in journal.entries(host=host):
        try:
            age = (now - datetime.fromisoformat(str(entry.get("time")))).total_seconds()
        except ValueError:
            continue
        if age > max_age:
            continue
        if entry.get("action") == CHECK_ACTION:
            changes = []
        elif entry.get("action") == ACTION and entry.get("result") == "ok":
            changes = [c for c in changes if c.get("group") != entry.get("group")]
            changes.append({k: entry.get(k) for k in ("group", "before", "after", "time")})
    return changes


def checks_blocking(host: str, max_age: float = 3600.0, now: datetime | None = None) -> bool:
    """The host's last post-bump check (within `max_age` seconds) had a failing
    after-scale check: run them again this tick, and hold scale-ups until they pass."""
    now = now or datetime.now(UTC)
    last: Mapping[str, Any] | None = None
    for entry in journal.entries(host=host):
        if entry.get("action") == CHECK_ACTION:
            last = entry
    if last is None:
        return False
    try:
        age = (now - datetime.fromisoformat(str(last.get("time")))).total_seconds()
    except ValueError:
        return False
    return age <= max_age and any(
        isinstance(c, Mapping) and c.get("verdict") == "alarm" for c in last.get("checks") or ())


@dataclass(frozen=True)
class Tick:
    host: str
    at: datetime
    readings: Readings
    actions: tuple[Action, ...]
    dry: bool
    check: PostCheck | None = None
    groups: Mapping[str, GroupLoad] = field(default_factory=dict)
    health: Health | None = None  # the tick's snapshot health (--notify's alarms; not in JSON)

    @property
    def changes(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.changed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host, "at": self.at.isoformat(), "dry": self.dry,
            "readings": self.readings.to_dict(),
            "actions": [a.to_dict() for a in self.actions],
            "applied": [] if self.dry else [a.to_dict() for a in self.changes],
            "check": None if self.check is None else self.check.to_dict(),
        }


class Autoscaler:
    """One host's loop state: its session, the previous snapshot (swap deltas over the
    interval), the thresholds and the reader."""

    def __init__(self, host: Host, remote: Remote, *, thresholds: Thresholds = DEFAULT_THRESHOLDS,
                 reader: Reader | None = None, dry: bool = False,
                 swap_window: float = 0.25, close: Callable[[], object] | None = None) -> None:
        self.host = host
        self.remote = remote
        self._close = close or remote.close
        self.thresholds = thresholds
        self.reader = reader or readings_from
        self.dry = dry
        self.opts = Options(group=None, log_lines=0, log_labels=0, limit=0,
                            swap_window=swap_window)
        self.previous: Snapshot | None = None

    def close(self) -> None:
        """End the session (remote.session: the journal lines still queued for the host's
        team journal travel first)."""
        self._close()

    def tick(self) -> Tick:
        pending = pending_changes(self.host.name)
        if self.host.is_slurm:  # squeue + ledgers; the cluster's CPUs/memory as health
            from ..facts.slurm_snapshot import read_slurm_snapshot

            snap = read_slurm_snapshot(self.remote, self.opts, self.previous)
        else:
            # the ONE read per tick; with the after-scale [[checks]] after a change, or
            # while they failed last time
            own = self.host.checks_for("after-scale") \
                if pending or checks_blocking(self.host.name) else ()
            snap = read_snapshot(self.remote, self.opts, self.previous, own)
        self.previous = snap
        readings = self.reader(snap)
        check = None
        if pending or snap.checks:
            check = post_check(pending, snap, readings)
            if not self.dry:
                journal.append(self.host.name, CHECK_ACTION, result="ok" if check.ok else
                               "failed", **check.to_dict())
        state = scale_snapshot(snap, readings)
        if check is not None and check.blocking:
            state = replace(state, blocked=f"after-scale check {', '.join(check.blocking)} "
                            "failed")
        actions = tuple(decide(state, self.host, self.thresholds))
        if not self.dry:
            for a in actions:
                if a.changed:
                    self.apply(a, readings)
        return Tick(self.host.name, snap.at, readings, actions, self.dry, check, state.groups,
                    snap.health)

    def apply(self, action: Action, readings: Readings) -> None:
        extra = {"group": action.group, "before": action.before, "after": action.after,
                 "reason": action.reason, **readings.to_dict()}
        try:
            if self.host.is_slurm:  # the group's arrays' ArrayTaskThrottle, live
                from ..scheduler.slurm import throttle_script

                self.remote.run(throttle_script(action.group, action.after))
            else:
                self.remote.run(parallel_argv(self.host.pueue, action.group, action.after))
        except JobsafeError as exc:
            journal.append(self.host.name, ACTION, result="error", error=str(exc), **extra)
            raise
        journal.append(self.host.name, ACTION, result="ok", **extra)


# ---- the command -------------------------------------------------------------------------

def tick_line(t: Tick) -> str:
    r = t.readings
    load = "?" if r.load_ratio is None else f"{r.load1:.2f}/{r.nproc} ({r.load_ratio:.0%})"
    mem = "?" if r.mem_used is None else f"{r.mem_used:.0%}"
    parts = [f"{t.at:%H:%M:%S} {t.host}: load {load} mem {mem}"]
    for a in t.actions:
        verb = "hold" if not a.changed else ("would set" if t.dry else "set")
        parts.append(f"  {a.group} {a.before}" + (f" -> {a.after}" if a.changed else "")
                     + f" [{verb}] {a.reason}")
    if t.check is not None:
        status = "ok" if t.check.ok else "FAILED"
        if t.check.problems:
            status += ": " + "; ".join(t.check.problems)
        groups = ", ".join(f"{c['group']}={c['after']}" for c in t.check.changes)
        parts.append(f"  post-bump check ({groups or 'checks failed last time'}): {status}")
    return "\n".join(parts)


@dataclass
class Slot:
    """One host in the loop: its autoscaler once connected, or the last error."""

    host: Host
    scaler: Autoscaler | None = None
    error: JobsafeError | None = None


def run_loop(
    slots: Sequence[Slot],
    make: Callable[[Host], Autoscaler],
    *,
    interval: float,
    ticks: int | None = None,
    on_tick: Callable[[Host, Tick | JobsafeError], None] = lambda h, r: None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Tick every host (in parallel), `ticks` times or forever, `interval` seconds apart.
    A host that fails is reconnected on the next tick; the others carry on."""

    def one(slot: Slot) -> Tick | JobsafeError:
        try:
            if slot.scaler is None:
                slot.scaler = make(slot.host)
            return slot.scaler.tick()
        except JobsafeError as exc:
            if slot.scaler is not None:
                slot.scaler.close()
                slot.scaler = None
            return exc

    count = 0
    while True:
        # a pool even for one host (not cli.each): Ctrl-C then waits for the running tick,
        # so a `pueue parallel` change is never left without its journal line
        with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(slots))) as pool:
            results = list(pool.map(one, slots))
        count += 1
        for slot, res in zip(slots, results, strict=True):
            slot.error = res if isinstance(res, JobsafeError) else None
            on_tick(slot.host, res)
        if ticks is not None and count >= ticks:
            return
        sleep(interval)


def tick_alarms(h: Host, res: Tick | JobsafeError) -> list[Alarm]:
    """--notify: a tick's alarms: the host's tick failed, its post-bump check failed, it
    swaps, its state file is over its alarm (the health verdicts monitor uses). Pure."""
    if isinstance(res, JobsafeError):
        return [Alarm(TICK_FAILED, h.name, f"tick failed (exit {res.exit_code}): {res}")]
    out = []
    if res.check is not None and not res.check.ok:
        out.append(Alarm(CHECK_FAILED, h.name, "post-bump check failed: "
                         + "; ".join(res.check.problems)))
    return out + ([] if res.health is None else health_alarms(h.name, res.health, h))


def autoscale_cmd(host: str, loop: bool, interval: float, ticks: int | str | None, dry: bool,
                  up_load: float, up_mem: float, down_load: float, down_mem: float,
                  headroom: float, inventory: str | None, json_out: bool,
                  notify: Sequence[str] | None = None, notify_command: str | None = None) -> int:
    from ..cli import HostRow, combined_exit_code, hosts_for, positive_int, print_error, print_json
    from ..config import setting
    from ..console import console
    from ..secrecy import redact_text

    # a flag not given takes the ops repo's [autoscale] value, if any (jobsafe.toml)
    interval, up_load, up_mem, down_load, down_mem, headroom = (
        setting(v, "autoscale", k) for v, k in (
            (interval, "interval"), (up_load, "up_load"), (up_mem, "up_mem"),
            (down_load, "down_load"), (down_mem, "down_mem"), (headroom, "headroom")))
    if interval <= 0:
        raise ConfigError("--interval must be > 0 seconds")
    ticks = positive_int(ticks, "--ticks")
    thresholds = Thresholds(up_load / 100, up_mem / 100, down_load / 100, down_mem / 100,
                            headroom)
    if (notify or notify_command is not None) and not loop:
        raise ConfigError("--notify/--notify-command need --loop: autoscale sends its message "
                          "when the loop ends (a one-shot run from cron mails its own output)")
    from ..notifier import notifier_for

    notifier = notifier_for(notify, notify_command)  # a bad URL: exit 2 before any SSH
    command = f"autoscale --loop --host {host}" + (" --dry" if dry else "")
    slots = [Slot(h) for h in hosts_for(host, inventory)]
    last: dict[str, HostRow] = {}
    seen = {"ticks": 0, "changes": 0}

    def make(h: Host) -> Autoscaler:
        # a session, so the journal lines of each tick reach the host's team journal
        # (in front of the next tick's command, or at close)
        stack = ExitStack()
        remote = stack.enter_context(session(h))
        return Autoscaler(h, remote, thresholds=thresholds, dry=dry, close=stack.close)

    def report(h: Host, res: Tick | JobsafeError) -> None:
        # a host that fails this tick keeps its line (stdout) and one stderr line; the
        # other hosts' ticks go on (run_loop), and it is retried on the next tick
        if isinstance(res, JobsafeError):
            print_error(res)
            row = HostRow(h.name, False, res.exit_code, redact_text(str(res)), None)
            if not json_out:
                console.print(f"{datetime.now(UTC):%H:%M:%S} {h.name}: FAILED (exit "
                              f"{res.exit_code}) {res}", markup=False, highlight=False,
                              soft_wrap=True)
        else:
            row = HostRow(h.name, True, EXIT_OK, None, res)
            if not json_out:
                console.print(tick_line(res), markup=False, highlight=False, soft_wrap=True)
        # counted before the line is out: a Ctrl-C right after it sees this tick
        last[h.name] = row
        if isinstance(res, Tick):
            seen["changes"] += 0 if res.dry else len(res.changes)
        if h is slots[-1].host:
            seen["ticks"] += 1
        if json_out and loop:  # NDJSON: one envelope line per host per tick
            print_json(row.exit_code, [row], line=True)
        if notifier is not None:
            # a failed tick saw nothing: the host's other alarms stay as they were
            notifier.alarms(command, tick_alarms(h, res),
                            looked=[] if isinstance(res, JobsafeError) else [h.name])

    def end(code: int, word: str) -> None:
        if notifier is None:
            return
        rows = [last[s.host.name] for s in slots if s.host.name in last]
        ok = sum(r.ok for r in rows)
        notifier.send(end_message(
            command, [s.host.name for s in slots], word, code,
            {**seen, "hosts ok": ok, "hosts failed": len(rows) - ok},
            explain="the last tick decides", details=[f"{r.host}: {r.error}" for r in rows
                                                      if r.error],
            alarms=notifier.alarms_seen))

    try:
        run_loop(slots, make, interval=interval, ticks=ticks if loop else 1, on_tick=report)
    except KeyboardInterrupt:  # Ctrl-C is how a loop usually ends: say so
        end(EXIT_INTERRUPTED, "interrupted")
        raise
    finally:
        for slot in slots:
            if slot.scaler is not None:
                slot.scaler.close()
    rows = [last[s.host.name] for s in slots if s.host.name in last]
    code = combined_exit_code([(r.ok, r.exit_code) for r in rows])  # the last tick decides
    end(code, {EXIT_OK: "ok", EXIT_PARTIAL: "partial"}.get(code, "failed"))
    if json_out and not loop:
        print_json(code, rows)
    return code

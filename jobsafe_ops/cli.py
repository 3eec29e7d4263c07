"""The glue under tasks.py: one exception-to-exit-code wrapper, per-host fan-out, and the
probe/audit commands. Tasks stay thin; this module owns the exit codes (errors.EXIT_CODES)."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from rich.markup import escape

from .console import console, err_console
from .errors import (
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_NOTHING_SELECTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_REFUSED,
    ConfigError,
    JobsafeError,
    exit_closed_stdout,
    stdout_closed,
)
from .flags import positive_int as positive_int  # re-exported: autoscale, submit
from .inventory import Host, inventory_dir, load_inventory, select_hosts
from .secrecy import redact_text

T = TypeVar("T")
R = TypeVar("R")


# ---- --json: one versioned envelope for every task ---------------------------------------

SCHEMA = "jobsafe/1"


@dataclass
class _Run:
    """The command cli.main is running: its name goes into the envelope, and whether the
    envelope is printed already (an error after it prints no second one)."""

    command: str = "jobsafe"
    printed: bool = False


RUN = _Run()


def command_name(fn: Callable[..., Any]) -> str:
    """probe_cmd -> probe, submit_batch_cmd -> submit-batch, run_demo -> demo."""
    name = fn.__name__.removesuffix("_cmd").removeprefix("run_")
    return name.replace("_", "-")


def envelope(exit_code: int, rows: Sequence[HostRow] = (), *, error: str | None = None,
             result: Any = None, notifications: list[Any] | None = None) -> dict[str, Any]:
    """{"schema": "jobsafe/1", "command", "exit_code", "error", "hosts": [row...], "result"}:
    the same shape for every task, host count and outcome (jobsafe_ops/schemas/<command>.json).
    `error` is a failure not tied to one host (bad input, internal error, interrupted);
    `result` is for commands without hosts (lint); `notifications` (--notify: each message
    sent or failed, the target masked) only when given."""
    doc = {"schema": SCHEMA, "command": RUN.command, "exit_code": exit_code,
           "error": error, "hosts": [r.to_dict() for r in rows],
           "result": result.to_dict() if hasattr(result, "to_dict") else result}
    if notifications is not None:
        doc["notifications"] = notifications
    return doc


def print_json(exit_code: int, rows: Sequence[HostRow] = (), *, error: str | None = None,
               result: Any = None, line: bool = False,
               notifications: list[Any] | None = None) -> None:
    """Print the envelope: indented, or one line (`line`: NDJSON, one per autoscale tick)."""
    doc = envelope(exit_code, rows, error=error, result=result, notifications=notifications)
    print(json.dumps(doc, indent=None if line else 2, default=str), flush=line)
    RUN.printed = True


def main(fn: Callable[..., int | None], **kwargs: Any) -> NoReturn:
    """Run a command body; map every outcome to one exit code and a one-line error (and,
    with --json, an envelope carrying it when the command printed none)."""
    from contextlib import nullcontext

    from .config import activated

    debug = bool(kwargs.pop("debug", False))
    json_out = bool(kwargs.get("json_out"))
    RUN.command, RUN.printed = command_name(fn), False
    error: str | None = None
    try:
        try:
            # one ops repo per host command: the inventory, its playbooks/ and its config
            # file (init, lint, demo take no inventory: a broken jobsafe.toml does not stop
            # them)
            with activated(kwargs["inventory"]) if "inventory" in kwargs else nullcontext():
                code = fn(**kwargs) or EXIT_OK
        except JobsafeError as exc:
            if debug:
                traceback.print_exc()
            print_error(exc)
            code, error = exc.exit_code, redact_text(str(exc))
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted; rerun the same command to converge")
            code, error = EXIT_INTERRUPTED, "interrupted; rerun the same command to converge"
        except BrokenPipeError:
            if stdout_closed():
                exit_closed_stdout()
            raise
        if json_out and not RUN.printed and error is not None:
            print_json(code, error=error)
        sys.stdout.flush()
    except BrokenPipeError:
        if stdout_closed():
            exit_closed_stdout()
        code = _internal(BrokenPipeError("broken pipe"), debug, json_out)
    except Exception as exc:  # noqa: BLE001 - last resort: still one line, still an exit code
        code = _internal(exc, debug, json_out)
    finally:
        RUN.command = _Run.command
    sys.exit(code)


def _internal(exc: BaseException, debug: bool, json_out: bool) -> int:
    if debug:
        traceback.print_exc()
    text = f"{type(exc).__name__}: {redact_text(str(exc))}"
    err_console.print(f"[bold red]internal error:[/] {escape(text)} "
                      "(rerun with --debug for the traceback)", highlight=False)
    if json_out and not RUN.printed:
        with suppress(BrokenPipeError):
            print_json(EXIT_INTERNAL, error=f"internal error: {text}")
    return EXIT_INTERNAL


def print_error(error: object) -> None:
    """The operator's one line on stderr (what, where, the fix), credentials masked (a remote error
    can quote a command line)."""
    # escaped: the fix often names a TOML table ("add [groups.p9]"), which rich would
    # otherwise swallow as a style tag
    err_console.print(f"[bold red]error:[/] {escape(redact_text(str(error)))}",
                      highlight=False, soft_wrap=True)


# ---- several hosts: one row per host, one exit code --------------------------------------

MAX_WORKERS = 8  # hosts handled at once: SSH sessions and local threads stay bounded
VERDICTS = frozenset({EXIT_OK, EXIT_FAILED})  # codes of a run that completed on its host
# the most urgent verdict wins when every host completed: failed jobs (1) need action more
# than work still running (monitor's 3), which beats nothing selected (monitor's 6: a host
# with an empty group is suspicious), which beats all done (0)
_URGENCY = {EXIT_FAILED: 3, EXIT_REFUSED: 2, EXIT_NOTHING_SELECTED: 1, EXIT_OK: 0}


def combined_exit_code(rows: Sequence[tuple[bool, int]]) -> int:
    """One exit code for a run over several hosts, from each host's (completed, code). Pure.

    One host: its code. Every host the same code: that code (all 0, all 1, all 4...).
    Some host did not complete (unreachable, refused, bad input, deploy failed): 5 (partial;
    the per-host codes are in the table and in --json). Every host completed with different
    verdicts: the most urgent one, 1 (jobs failed) over 3 (monitor: still running) over 6
    (monitor: nothing selected) over 0.
    """
    codes = [code for _, code in rows]
    if not codes:
        return EXIT_OK
    if len(set(codes)) == 1:
        return codes[0]
    if not all(completed for completed, _ in rows):
        return EXIT_PARTIAL
    return max(codes, key=lambda c: _URGENCY.get(c, len(_URGENCY)))


def error_dict(host: str, error: JobsafeError) -> dict[str, Any]:
    """A host's error in --json, in the shape of every host row (credentials masked)."""
    return HostRow(host, False, error.exit_code, redact_text(str(error)), None).to_dict()


def errors_exit_code(errors: Sequence[JobsafeError], hosts: int) -> int:
    """The combined exit code when each host either succeeded (0) or raised."""
    rows = [(False, e.exit_code) for e in errors] + [(True, EXIT_OK)] * (hosts - len(errors))
    return combined_exit_code(rows)


def hosts_for(spec: str, inventory: str | None = None) -> list[Host]:
    return select_hosts(load_inventory(inventory_dir(inventory)), spec)


@dataclass(frozen=True)
class HostRow:
    """One host's outcome: the same shape in every task's --json and human table."""

    host: str
    ok: bool  # the command completed on this host (its verdict may still be 1)
    exit_code: int
    error: str | None
    result: Any  # the host's report (to_dict-able) or None

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {"host": self.host, "ok": self.ok, "exit_code": self.exit_code,
                "error": self.error, "result": r.to_dict() if hasattr(r, "to_dict") else r}


@dataclass
class Outcome:
    host: str
    result: Any = None
    error: JobsafeError | None = None

    def row(self, code_of: Callable[[Any], int] = lambda r: EXIT_OK,
            verdicts: Collection[int] = VERDICTS,
            error_of: Callable[[Any], str | None] = lambda r: None) -> HostRow:
        """A raised error, or a report whose code is not a verdict, is a failed host."""
        if self.error is not None:
            return HostRow(self.host, False, self.error.exit_code,
                           redact_text(str(self.error)), None)
        code = code_of(self.result)
        ok = code in verdicts
        return HostRow(self.host, ok, code, None if ok else error_of(self.result) or
                       f"{self.host}: exit {code}", self.result)

    def to_dict(self) -> dict[str, Any]:
        return self.row().to_dict()


def fan_out(hosts: list[Host], fn: Callable[[Host], Any]) -> list[Outcome]:
    """Every host at once (at most MAX_WORKERS); a host's failure never aborts or rolls
    back another's. Not Fabric's ThreadingGroup: its GroupException stops the whole run
    on any partial failure and does not say which host failed."""

    def one(host: Host) -> Outcome:
        try:
            return Outcome(host.name, fn(host))
        except JobsafeError as exc:
            return Outcome(host.name, error=exc)

    return each(hosts, one)


def each(items: Sequence[T], fn: Callable[[T], R]) -> list[R]:
    """`fn` over items in order, in parallel (at most MAX_WORKERS); one item runs inline."""
    if len(items) == 1:
        return [fn(items[0])]
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(items))) as pool:
        return list(pool.map(fn, items))


def host_rows_table(rows: Sequence[HostRow], summary: Callable[[Any], str]) -> Any:
    """The human table of a multi-host run: one row per host, a failed host included."""
    from rich.table import Table

    t = Table(title="hosts")
    for col in ("host", "outcome", "exit", "detail"):
        t.add_column(col, overflow="fold")
    for r in rows:
        outcome = "[green]ok" if r.ok else "[bold red]failed"
        detail = summary(r.result) if r.ok else (r.error or "")
        t.add_row(r.host, outcome, str(r.exit_code), detail)
    return t


def finish(outcomes: list[Outcome], json_out: bool,
           render: Callable[[Any], None], code_of: Callable[[Any], int] = lambda r: 0,
           *, verdicts: Collection[int] = VERDICTS,
           error_of: Callable[[Any], str | None] = lambda r: None,
           summary: Callable[[Any], str] = lambda r: "",
           before_print: Callable[[list[HostRow], int], list[Any] | None] | None = None) -> int:
    """Print results and return one exit code (combined_exit_code). Several hosts: each
    host's report, then a table with one row per host (a failed host's row carries its
    error), and one stderr line per failed host; --json gives the envelope, one row per
    host ({host, ok, exit_code, error, result}), whatever the host count. `before_print`
    (rows, code) runs before anything is printed (deploy's --notify); what it returns is
    the envelope's `notifications`."""
    rows = [o.row(code_of, verdicts, error_of) for o in outcomes]
    code = combined_exit_code([(r.ok, r.exit_code) for r in rows])
    notifications = before_print(rows, code) if before_print is not None else None
    if json_out:
        print_json(code, rows, notifications=notifications)
    else:
        for o in outcomes:
            if o.error is None:
                render(o.result)
        if len(rows) > 1:
            console.print(host_rows_table(rows, summary))
    for r in rows:
        if not r.ok and r.error:
            print_error(r.error)
    return code


def require(value: Any, flag: str) -> None:
    if value in (None, ""):
        raise ConfigError(f"{flag} is required")


def optional_group(group: str | None) -> str | None:
    """--group on commands where it is optional: absent means every group, but an empty
    value (`--group ''`, an unset shell variable) is a mistake, not "every group"."""
    if group is not None and not group.strip():
        raise ConfigError("--group '' is empty; pass a group name, or leave --group out "
                          "for every group")
    return group


# ---- commands ------------------------------------------------------------------------

def hosts_cmd(inventory: str | None, json_out: bool) -> int:
    from .facts.views import hosts_table

    inv = load_inventory(inventory_dir(inventory))
    if json_out:
        print_json(EXIT_OK, [HostRow(n, True, EXIT_OK, None, _host_dict(h))
                             for n, h in inv.items()])
    else:
        console.print(hosts_table(inv))
    return 0


def _host_dict(h: Host) -> dict[str, Any]:
    return {"ssh": h.ssh, "project_dir": h.project_dir, "package": h.package,
            "branch": h.branch, "memory_cap": h.memory_cap, "path": list(h.path),
            "groups": {g.name: {"parallel": g.parallel, "min": g.min, "max": g.max,
                                "job_memory": g.job_memory} for g in h.groups.values()},
            "checks": [c.to_dict() for c in h.checks]}


def probe_cmd(host: str, inventory: str | None, json_out: bool) -> int:
    from .facts import slurm_probe
    from .facts.probe import run_probe
    from .facts.views import probe_view
    from .remote import session

    def one(h: Host) -> Any:
        from dataclasses import replace

        from .ops.sizing import sizing

        with session(h) as remote:
            if h.is_slurm:
                return slurm_probe.run_probe(remote)
            p = run_probe(remote, checks=h.checks_for("probe"))  # same round trip
        return replace(p, sizing=sizing(p.mem_available, p.nproc, dict(h.groups),
                                        {g.name: g.parallel for g in p.groups}))

    def view(p: Any) -> Any:
        if isinstance(p, slurm_probe.SlurmProbe):
            return slurm_probe.probe_view(p, inv[p.host])
        return probe_view(p, inv[p.host])

    def summary(p: Any) -> str:
        if isinstance(p, slurm_probe.SlurmProbe):
            return f"slurm {p.version or p.error}, {len(p.partitions)} partition(s)"
        return f"pueue {p.pueue_version or p.pueue_error}, {len(p.groups)} group(s)"

    hosts = hosts_for(host, inventory)
    inv = {h.name: h for h in hosts}
    return finish(fan_out(hosts, one), json_out, lambda p: console.print(view(p)),
                  summary=summary)

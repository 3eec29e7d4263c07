"""The glue under tasks.py: one exception-to-exit-code wrapper, per-host fan-out, and the
probe/audit commands. Tasks stay thin; this module owns the exit codes (STYLE 12)."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from .console import console, err_console
from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, ConfigError, JobsafeError
from .inventory import Host, inventory_dir, load_inventory, select_hosts

T = TypeVar("T")
R = TypeVar("R")


def main(fn: Callable[..., int | None], **kwargs: Any) -> NoReturn:
    """Run a command body; map every outcome to one exit code and a one-line error."""
    debug = bool(kwargs.pop("debug", False))
    try:
        code = fn(**kwargs) or EXIT_OK
    except JobsafeError as exc:
        if debug:
            traceback.print_exc()
        print_error(exc)
        code = exc.exit_code
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted; rerun the same command to converge")
        code = EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - last resort: still one line, still an exit code
        if debug:
            traceback.print_exc()
        from rich.markup import escape

        err_console.print(f"[bold red]internal error:[/] {type(exc).__name__}: "
                          f"{escape(str(exc))} "
                          "(rerun with --debug for the traceback)", highlight=False)
        code = 1
    sys.exit(code)


def print_error(error: object) -> None:
    """The operator's one line on stderr (STYLE 10)."""
    from rich.markup import escape

    # escaped: the fix often names a TOML table ("add [groups.p9]"), which rich would
    # otherwise swallow as a style tag
    err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False,
                      soft_wrap=True)


def error_dict(host: str, error: JobsafeError) -> dict[str, Any]:
    """A host's error in --json: what went wrong and the exit code it maps to."""
    return {"host": host, "error": str(error), "exit_code": error.exit_code}


def errors_exit_code(errors: Sequence[JobsafeError], hosts: int) -> int:
    """0 without errors; 5 (partial) when only some of several hosts failed; else the
    first error's own code (a single host's error keeps its code)."""
    if not errors:
        return EXIT_OK
    return EXIT_PARTIAL if len(errors) < hosts else errors[0].exit_code


def hosts_for(spec: str, inventory: str | None = None) -> list[Host]:
    return select_hosts(load_inventory(inventory_dir(inventory)), spec)


@dataclass
class Outcome:
    host: str
    result: Any = None
    error: JobsafeError | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return error_dict(self.host, self.error)
        r = self.result
        return r.to_dict() if hasattr(r, "to_dict") else r  # type: ignore[no-any-return]


def fan_out(hosts: list[Host], fn: Callable[[Host], Any]) -> list[Outcome]:
    """One worker per host; a host's failure never aborts another's (unlike Fabric's
    ThreadingGroup, whose GroupException does not say which host failed)."""

    def one(host: Host) -> Outcome:
        try:
            return Outcome(host.name, fn(host))
        except JobsafeError as exc:
            return Outcome(host.name, error=exc)

    return each(hosts, one)


def each(items: Sequence[T], fn: Callable[[T], R]) -> list[R]:
    """`fn` over items in order, one worker each (at most 8); a single item runs inline."""
    if len(items) == 1:
        return [fn(items[0])]
    with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
        return list(pool.map(fn, items))


def finish(outcomes: list[Outcome], json_out: bool,
           render: Callable[[Any], None], code_of: Callable[[Any], int] = lambda r: 0) -> int:
    """Print results (JSON or rich) and compute the exit code: a single host's error keeps
    its own code; some hosts failing among several gives 5 (partial)."""
    if json_out:
        if len(outcomes) == 1 and outcomes[0].error is None:
            payload: Any = outcomes[0].to_dict()
        else:
            payload = {"hosts": [o.to_dict() for o in outcomes]}
        print(json.dumps(payload, indent=2, default=str))
    else:
        for o in outcomes:
            if o.error is None:
                render(o.result)
    errors = [o.error for o in outcomes if o.error is not None]
    for error in errors:
        if not json_out or len(outcomes) == 1:
            print_error(error)
    if errors:
        return errors_exit_code(errors, len(outcomes))
    return max((code_of(o.result) for o in outcomes), default=0)


def require(value: Any, flag: str) -> None:
    if value in (None, ""):
        raise ConfigError(f"{flag} is required")


def positive_int(value: Any, flag: str) -> int | None:
    """An optional whole-number flag (no default: Invoke hands over the text): None stays
    None, anything but an integer >= 1 is bad input."""
    if value in (None, ""):
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{flag} must be a positive integer, got {value!r}; e.g. {flag} 10")
    return n


def optional_group(group: str | None) -> str | None:
    """--group on commands where it is optional: absent means every group, but an empty
    value (`--group ''`, an unset shell variable) is a mistake, not "every group"."""
    if group is not None and not group.strip():
        raise ConfigError("--group '' is empty; pass a group name, or leave --group out "
                          "for every group")
    return group


# ---- commands ------------------------------------------------------------------------

def hosts_cmd(inventory: str | None, json_out: bool) -> int:
    from .views import hosts_table

    inv = load_inventory(inventory_dir(inventory))
    if json_out:
        print(json.dumps({n: _host_dict(h) for n, h in inv.items()}, indent=2))
    else:
        console.print(hosts_table(inv))
    return 0


def _host_dict(h: Host) -> dict[str, Any]:
    return {"ssh": h.ssh, "project_dir": h.project_dir, "package": h.package,
            "branch": h.branch, "memory_cap": h.memory_cap,
            "groups": {g.name: {"parallel": g.parallel, "min": g.min, "max": g.max,
                                "job_memory": g.job_memory} for g in h.groups.values()}}


def probe_cmd(host: str, inventory: str | None, json_out: bool) -> int:
    from .probe import run_probe
    from .remote import session
    from .views import probe_view

    def one(h: Host) -> Any:
        with session(h) as remote:
            return run_probe(remote)

    hosts = hosts_for(host, inventory)
    inv = {h.name: h for h in hosts}
    return finish(fan_out(hosts, one), json_out,
                  lambda p: console.print(probe_view(p, inv[p.host])))


def audit_cmd(host: str, group: str | None, inventory: str | None, json_out: bool) -> int:
    from .audit import build_audit, read_state
    from .remote import session
    from .views import audit_view

    group = optional_group(group)

    def one(h: Host) -> Any:
        with session(h) as remote:
            state = read_state(remote, group)
        if group and group not in state.groups and group not in h.groups:
            # a typo must not read as an empty, healthy group (monitor does the same)
            raise ConfigError(f"{h.name}: group {group!r} is neither on the pueue daemon nor "
                              f"in {h.source}; check --group (known: "
                              f"{', '.join(sorted({*state.groups, *h.groups})) or 'none'})")
        return build_audit(h.name, state, group)

    def code(a: Any) -> int:
        return 1 if a.failed else 0

    return finish(fan_out(hosts_for(host, inventory), one), json_out,
                  lambda a: console.print(audit_view(a)), code)

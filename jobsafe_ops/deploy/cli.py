"""The commands `inv deploy` and `inv retry-failed` (tasks.py calls these through
cli.main): options from flags, one deploy per host (fanned out), the TTY prompt for the
running-tasks policy, SIGTERM/SIGHUP unwinding like Ctrl-C so the lock is released, and one
exit code for all hosts."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..batch import retry as retries
from ..cli import HostRow, Outcome, fan_out, finish, hosts_for, require
from ..console import console, err_console
from ..errors import EXIT_OK, ConfigError
from ..facts.audit import Audit
from ..inventory import Host
from ..notify import FAILURES, SWAPPING, Alarm, end_message
from ..remote import session
from .context import POLICIES, DeployContext, DeployOptions, Say
from .steps import CANCELLED, DeployReport, Sample, retry_failed_steps, run_deploy

if TYPE_CHECKING:
    from ..notifier import Notifier

_PROMPT_LOCK = threading.Lock()


def prompt_policy(audit_: Audit) -> str:
    """TTY only: show the audit, ask what to do with the running tasks."""
    from rich.prompt import Prompt

    from ..facts.views import audit_view

    with _PROMPT_LOCK:  # several hosts: one question at a time
        err_console.print(audit_view(audit_))
        return Prompt.ask(f"{audit_.host}: {len(audit_.running)} task(s) running; what now",
                          choices=list(POLICIES), default="abort", console=err_console)


@contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM / SIGHUP (a closed terminal) unwind like Ctrl-C, so the lock is released."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        CANCELLED.set()
        raise KeyboardInterrupt

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for s in saved:
        signal.signal(s, handler)
    CANCELLED.clear()
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def _say_for(host: Host) -> Say:
    from rich.markup import escape

    # a label or path in the text may hold [brackets]: shown, never read as markup
    return lambda text: err_console.print(f"[dim]{host.name}:[/] {escape(text)}",
                                          highlight=False, soft_wrap=True)


def deploy_host(host: Host, opts: DeployOptions,
                ask: Callable[[Audit], str] | None = None) -> DeployReport:
    with session(host) as remote:
        ctx = DeployContext(host=host, remote=remote, options=opts, say=_say_for(host),
                            ask=ask)
        if host.is_slurm:  # the same protocol, the scheduler's steps (deploy/slurm_steps.py)
            from .slurm_steps import STEPS as SLURM_STEPS

            return run_deploy(ctx, SLURM_STEPS)
        return run_deploy(ctx)


def deploy_alarms(report: DeployReport) -> list[Alarm]:
    """--notify: the alarms of a deploy's monitor window (its step's samples): re-added
    tasks that failed, and swapping. Pure."""
    step = next((s for s in report.steps if s.name == "monitor"), None)
    samples = [Sample(**d) for d in (step.data.get("samples", []) if step else [])]
    out = []
    failed = sorted({k for s in samples for k in s.failed})
    if failed:
        out.append(Alarm(FAILURES, report.host, f"{len(failed)} re-added task"
                         f"{'s' if len(failed) != 1 else ''} failed: {', '.join(failed[:5])}"))
    swapping = next((s for s in samples if not s.swap_ok), None)
    if swapping is not None:
        out.append(Alarm(SWAPPING, report.host, f"host swapping ({swapping.swap}) in the "
                         "monitor window"))
    return out


DEPLOY_WORDS = {0: "ok", 1: "attention", 2: "bad input", 3: "refused", 4: "unreachable",
                5: "partial"}


def notify_deploy(notifier: Notifier, command: str, outcomes: Sequence[Outcome],
                  rows: Sequence[HostRow], code: int) -> list[Any]:
    """The alarms of every host's monitor window (one message), then the end message."""
    from ..errors import EXIT_CODES

    reports = [o.result for o in outcomes if isinstance(o.result, DeployReport)]
    notifier.alarms(command, [a for r in reports for a in deploy_alarms(r)],
                    looked=[r.host for r in reports])
    dry = bool(reports) and all(r.dry for r in reports)
    word = ("dry run: " if dry else "") + DEPLOY_WORDS.get(code, "failed")
    details = [(r.result.verdict if isinstance(r.result, DeployReport) else None)
               or r.error or f"{r.host}: exit {r.exit_code}" for r in rows]
    ok = sum(r.ok and r.exit_code == EXIT_OK for r in rows)
    notifier.send(end_message(command, [r.host for r in rows], word, code,
                              {"hosts ok": ok, "hosts failed": len(rows) - ok},
                              explain=EXIT_CODES.get(code, "").split(";")[0],
                              details=details, alarms=notifier.alarms_seen))
    return notifier.to_list()


def _finish(outcomes: list[Outcome], json_out: bool, notifier: Notifier | None = None,
            command: str = "deploy") -> int:
    """Tables (or JSON) per host, one row per host, each stopped run's error as one line
    on stderr, and one exit code (cli.combined_exit_code): the host's own, or 5 when only
    some of several hosts failed. A deploy that did not end in 0 (refused, lock held,
    verify failed) is a failed host: deploys of the other hosts are neither stopped nor
    rolled back."""
    from ..facts.views import deploy_view

    def notify(rows: list[HostRow], code: int) -> list[Any] | None:
        return None if notifier is None else notify_deploy(notifier, command, outcomes,
                                                            rows, code)

    return finish(outcomes, json_out, lambda r: console.print(deploy_view(r)),
                  lambda r: int(r.exit_code), verdicts={EXIT_OK},
                  error_of=lambda r: r.error or r.verdict, summary=lambda r: r.verdict,
                  before_print=notify)


def deploy_cmd(host: str, inventory: str | None, json_out: bool,
               notify: Sequence[str] | None = None, notify_command: str | None = None,
               **flags: Any) -> int:
    from ..notifier import notifier_for

    opts = DeployOptions(**flags)
    opts.validate()
    notifier = notifier_for(notify, notify_command)  # a bad URL: exit 2 before any SSH
    hosts = hosts_for(host, inventory)
    interactive = opts.on_running is None and sys.stdin.isatty() and not opts.dry
    with interrupts_as_keyboard_interrupt():
        outcomes = fan_out(hosts, lambda h: deploy_host(h, opts,
                                                        prompt_policy if interactive else None))
    return _finish(outcomes, json_out, notifier, f"deploy --host {host}" + (
        " --dry" if opts.dry else ""))


def retry_failed_cmd(host: str, group: str, inventory: str | None, json_out: bool,
                     retry_all: bool = False, retry_budget: int = retries.DEFAULT_BUDGET,
                     dry: bool = False) -> int:
    """`inv retry-failed`: the RESTART step alone, for one group, under the deploy lock."""
    require(group, "--group")
    if retry_budget < 0:
        raise ConfigError(f"--retry-budget {retry_budget}: must be >= 0")
    hosts = hosts_for(host, inventory)
    for h in hosts:
        h.group(group)  # unknown group: exit 2 before connecting
    opts = DeployOptions(retry_all=retry_all, retry_budget=retry_budget, dry=dry, watch=0)

    def one(h: Host) -> DeployReport:
        if h.is_slurm:  # a fresh array of the failed lines (batch/slurm_retry.py)
            from ..batch.slurm_retry import retry_failed

            with session(h) as remote:
                return retry_failed(remote, group, budget=retry_budget, retry_all=retry_all,
                                    dry=dry)
        with session(h) as remote:
            ctx = DeployContext(host=h, remote=remote, options=opts, say=_say_for(h),
                                command=f"retry-failed --group {group}")
            return run_deploy(ctx, retry_failed_steps(group))

    with interrupts_as_keyboard_interrupt():
        outcomes = fan_out(hosts, one)
    return _finish(outcomes, json_out)


def audit_cmd(host: str, group: str | None, inventory: str | None, json_out: bool) -> int:
    """`inv audit`: deploy's AUDIT read alone (what is queued, running and failed, by group
    and label), on pueue hosts and Slurm login nodes alike; read-only."""
    from ..cli import optional_group
    from ..facts.audit import build_audit, read_state
    from ..facts.ledger import read_merged
    from ..facts.views import audit_view

    group = optional_group(group)

    def one(h: Host) -> Audit:
        with session(h) as remote:
            if h.is_slurm:  # squeue + every Slurm batch's ledger (and sacct), one round trip
                from .slurm_steps import read_records

                state = read_records(remote, readonly=True).state
            else:
                # + the ledger: a failure `pueue clean` removed stays failed until a retry
                # succeeds
                state = read_merged(remote, read_state(remote, group), group)
        if group and group not in state.groups and group not in h.groups:
            # a typo must not read as an empty, healthy group (monitor does the same)
            where = "in the cluster's batches" if h.is_slurm else "on the pueue daemon"
            raise ConfigError(f"{h.name}: group {group!r} is neither {where} nor "
                              f"in {h.source}; check --group (known: "
                              f"{', '.join(sorted({*state.groups, *h.groups})) or 'none'})")
        return build_audit(h.name, state, group)

    def code(a: Audit) -> int:
        return 1 if a.failed else 0

    return finish(fan_out(hosts_for(host, inventory), one), json_out,
                  lambda a: console.print(audit_view(a)), code,
                  summary=lambda a: f"{len(a.running)} running, {len(a.failed)} failed")

"""Monitor: the watch loop behind `inv monitor` over the snapshots of several hosts
(snapshot.py reads one), and the command. The board (one result per host) and its exit
code for cron live in board.py, rendering in view.py.

Exit codes (cron): 0 every label of the group done and succeeded; 1 some failed (or are
blocked forever behind a failed dependency); 3 still running or queued at the end (timeout,
or `--once` while work remains); 4 host unreachable or pueue not answering; 6 nothing
selected (the group has no tasks, or no label matches --label-glob: nothing can ever
finish, so --until-done stops after one confirming poll). Several hosts
(cli.combined_exit_code): all the same code -> that code; some host unreadable -> 5;
every host read -> 1 if any shows failures, else 3 if work remains, else 6 if some host
selected nothing, else 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ..cli import each, hosts_for, print_error, print_json
from ..errors import (
    EXIT_BAD_INPUT,
    EXIT_NOTHING_SELECTED,
    ConfigError,
    JobsafeError,
)
from ..facts.snapshot import Options, Snapshot, read_snapshot
from ..flags import seconds
from ..inventory import Host
from ..notify import Alarm, Message, end_message, snapshot_alarms, snapshot_counts
from ..remote import Remote, connect
from .board import HostResult, board_exit_code

# ---- several hosts, many polls -----------------------------------------------------------

GIVE_UP_POLLS = 3  # --until-done: a host failing this many polls in a row stops being awaited
# --until-done: an empty selection on this many polls in a row is final (the second poll
# confirms it: a submit that was adding the first tasks at the first poll shows by then)
EMPTY_POLLS = 2


class Watcher:
    """One host's session for the whole watch (one connection per host per command);
    a lost connection is reopened on the next poll."""

    def __init__(self, host: Host, opts: Options,
                 connector: Callable[[Host], Remote] = connect) -> None:
        self.host = host
        self.opts = opts
        self.connector = connector
        self.remote: Remote | None = None
        self.previous: Snapshot | None = None

    def poll(self) -> HostResult:
        try:
            if self.remote is None:
                self.remote = self.connector(self.host)
            if self.host.is_slurm:  # squeue + the ledgers (facts/slurm_snapshot.py)
                from ..facts.slurm_snapshot import read_slurm_snapshot

                snap = read_slurm_snapshot(self.remote, self.opts, self.previous)
            else:
                snap = read_snapshot(self.remote, self.opts, self.previous)
            group = self.opts.group
            if group and snap.view(group).status == "missing" and group not in self.host.groups:
                # a typo must not read as "still running" (exit 3) forever
                raise ConfigError(
                    f"{self.host.name}: group {group!r} is neither on the pueue daemon nor in "
                    f"{self.host.source or 'the host file'}; check --group"
                )
        except JobsafeError as exc:
            self.close()
            return HostResult(self.host.name, error=exc)
        self.previous = snap
        return HostResult(self.host.name, snapshot=snap)

    def close(self) -> None:
        if self.remote is not None:
            try:
                self.remote.close()
            finally:
                self.remote = None


def poll_all(watchers: Sequence[Watcher]) -> list[HostResult]:
    return each(watchers, lambda w: w.poll())


def watch(
    watchers: Sequence[Watcher],
    *,
    once: bool = False,
    timeout: float | None = None,
    interval: float = 30.0,
    stop_when_settled: bool = True,
    on_poll: Callable[[list[HostResult]], None] = lambda board: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[HostResult]:
    """Poll every host until all watched groups are settled (`stop_when_settled`), the
    timeout passes, or once. A host whose selection is empty on EMPTY_POLLS polls in a
    row counts as settled (exit 6, not "still running" forever). A host error is retried
    on the next poll while the others are watched on; a host failing GIVE_UP_POLLS polls
    in a row (or with bad input) is no longer awaited, so one dead host does not keep
    --until-done alive forever. The last poll decides the exit code."""
    deadline = None if timeout is None else clock() + timeout
    misses = [0] * len(watchers)
    empties = [0] * len(watchers)
    while True:
        board = poll_all(watchers)
        on_poll(board)
        if once:
            return board
        misses = [0 if r.snapshot is not None else n + 1 for r, n in zip(board, misses,
                                                                         strict=True)]
        empties = [n + 1 if r.snapshot is not None and r.snapshot.empty else 0
                   for r, n in zip(board, empties, strict=True)]
        if stop_when_settled and all(_finished(r, n, e) for r, n, e in zip(
                board, misses, empties, strict=True)):
            return board
        if deadline is not None and clock() >= deadline:
            return board
        wait = interval if deadline is None else max(0.0, min(interval, deadline - clock()))
        sleep(wait)


def _finished(r: HostResult, misses: int, empties: int = 0) -> bool:
    """Nothing more to wait for on this host: settled, nothing selected on EMPTY_POLLS
    polls in a row, or given up on."""
    if r.snapshot is not None:
        return r.snapshot.settled or empties >= EMPTY_POLLS
    bad_input = r.error is not None and r.error.exit_code == EXIT_BAD_INPUT
    return bad_input or misses >= GIVE_UP_POLLS


# ---- the command -------------------------------------------------------------------------

def end_of(command: str, board: Sequence[HostResult], group: str,
           alarms: Sequence[Alarm] = ()) -> Message:
    """--notify: the watch's end message, from the board (its counts and exit code)."""
    from .view import EXIT_TEXT

    code = board_exit_code(board)
    snaps = [r.snapshot for r in board if r.snapshot is not None]
    details = [f"{r.host}: {r.error}" for r in board if r.error is not None]
    details += [s.nothing_selected() for s in snaps if s.exit_code == EXIT_NOTHING_SELECTED]
    return end_message(command, [r.host for r in board], VERDICT_WORDS.get(code, "?"), code,
                       snapshot_counts(snaps), group=group, explain=EXIT_TEXT.get(code, ""),
                       details=details, alarms=alarms)


VERDICT_WORDS = {0: "done", 1: "failed", 3: "still running", 4: "unreachable", 2: "bad input",
                 5: "partial", 6: "nothing selected"}


def monitor_cmd(host: str, group: str | None, label_glob: str | None, once: bool,
                until_done: bool, timeout: str | float | None, interval: float,
                log_lines: int, inventory: str | None, json_out: bool,
                playbook: str | None = None, notify: Sequence[str] | None = None,
                notify_command: str | None = None) -> int:
    from rich.live import Live

    from ..console import console
    from . import fleet
    from .view import monitor_view

    if not group:
        raise ConfigError("--group is required: monitor watches one pueue group by label")
    if once and until_done:
        raise ConfigError("--once and --until-done exclude each other; pick one")
    timeout = seconds(timeout, "--timeout")
    if (timeout is not None and timeout < 0) or interval <= 0:
        raise ConfigError("--timeout must be >= 0 and --interval > 0 (seconds)")
    if log_lines < 0:
        raise ConfigError("--log-lines must be >= 0")
    if (notify or notify_command is not None) and not until_done:
        raise ConfigError("--notify/--notify-command need --until-done: monitor sends its "
                          "message when the watch ends (cron's --once mails its own output)")
    from ..notifier import notifier_for

    notifier = notifier_for(notify, notify_command)  # bad URL: exit 2 before any SSH
    hosts = hosts_for(host, inventory)
    label_glob, batch = fleet.select(playbook, label_glob, hosts)  # monitor/fleet.py
    on = len(hosts) > 1 or batch is not None  # one board by label across the hosts

    def view_of(b: list[HostResult]) -> Any:
        return fleet.with_fleet(monitor_view(b, by_name), b, group, batch, on)

    opts = Options(group=group, label_glob=label_glob, log_lines=log_lines)
    watchers = [Watcher(h, opts) for h in hosts]
    by_name = {h.name: h for h in hosts}
    # Not a terminal, or --json: no live view; cron gets the final result only (the rule:
    # plain output when not a TTY). Without --once/--until-done on a terminal the live
    # view keeps refreshing until Ctrl-C (or --timeout).
    live = console.is_terminal and not json_out and not once
    if not live and not once and not until_done:
        once = timeout is None
    command = f"monitor --until-done --host {host} --group {group}"

    def alarms(b: list[HostResult]) -> None:  # --notify: each poll's new alarms (notify.py)
        if notifier is not None:
            notifier.alarms(command, [a for r in b if r.snapshot is not None
                                      for a in snapshot_alarms(r.snapshot, by_name[r.host])],
                            looked=[r.host for r in b if r.snapshot is not None], group=group)

    def polled(view: Any, b: list[HostResult]) -> None:
        view.update(view_of(b), refresh=True)
        alarms(b)

    try:
        if live:
            with Live(console=console, auto_refresh=False, transient=False) as view:
                board = watch(
                    watchers, timeout=timeout, interval=interval, stop_when_settled=until_done,
                    on_poll=lambda b: polled(view, b))
            if notifier is not None:
                notifier.send(end_of(command, board, group, notifier.alarms_seen))
        else:
            board = watch(watchers, once=once, timeout=timeout, interval=interval,
                          stop_when_settled=True, on_poll=alarms)
            if notifier is not None:
                notifier.send(end_of(command, board, group, notifier.alarms_seen))
            if json_out:
                print_json(board_exit_code(board), [r.row for r in board],
                           result=fleet.build(board, group, batch) if on else None,
                           notifications=None if notifier is None else notifier.to_list())
            else:
                console.print(view_of(board))
    finally:
        for w in watchers:
            w.close()
    for r in board:
        if r.error is not None:
            print_error(r.error)
        elif r.snapshot is not None and r.snapshot.exit_code == EXIT_NOTHING_SELECTED:
            print_error(r.snapshot.nothing_selected())
    return board_exit_code(board)

"""Monitor (monitor.py): the board's exit code over several hosts, a watcher's checks,
the watch loop."""

from __future__ import annotations

from typing import Any

from jobsafe_ops.errors import ConfigError, RemoteError
from jobsafe_ops.facts.snapshot import Options
from jobsafe_ops.monitor.board import HostResult, board_exit_code
from jobsafe_ops.monitor.watch import Watcher, watch
from jobsafe_ops.remote import LocalRemote
from tests.status_data import QUEUED, RUNNING, done, snap_of, state, task

# ---- exit codes over several hosts -----------------------------------------------------------

def test_board_exit_code_precedence() -> None:
    ok = HostResult("a", snap_of(state(task(1, "a", done("Success"))), host="a"))
    running = HostResult("b", snap_of(state(task(1, "a", RUNNING)), host="b"))
    failed = HostResult("c", snap_of(state(task(1, "a", done({"Failed": 9}))), host="c"))
    down = HostResult("d", error=RemoteError("d: unreachable"))
    bad = HostResult("e", error=ConfigError("e: group 'x' is nowhere"))
    assert board_exit_code([ok]) == 0
    assert board_exit_code([ok, running]) == 3
    assert board_exit_code([ok, failed, running]) == 1  # every host read: failures win
    assert board_exit_code([ok, down, running]) == 5  # a host unreadable among several
    assert board_exit_code([failed, down]) == 5
    assert board_exit_code([down, down]) == 4
    assert board_exit_code([bad]) == 2


def test_unknown_group_nowhere_declared_is_bad_input(scripted: dict[str, Any]) -> None:
    w = Watcher(scripted["host"], Options(group="nope", swap_window=0), LocalRemote)
    result = w.poll()
    assert isinstance(result.error, ConfigError)
    assert board_exit_code([result]) == 2


# ---- the watch loop --------------------------------------------------------------------------

class Scripted:
    """A watcher whose polls come from a list (the last one repeats)."""

    def __init__(self, results: list[HostResult]) -> None:
        self.results = results
        self.polls = 0

    def poll(self) -> HostResult:
        self.polls += 1
        return self.results[min(self.polls - 1, len(self.results) - 1)]

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_until_done_stops_when_settled() -> None:
    running = HostResult("h", snap_of(state(task(1, "a", RUNNING))))
    finished = HostResult("h", snap_of(state(task(1, "a", done("Success")))))
    w, clock = Scripted([running, running, finished]), Clock()
    board = watch([w], interval=10, timeout=100, sleep=clock.sleep, clock=clock)  # type: ignore[list-item]
    assert w.polls == 3 and clock.t == 20 and board_exit_code(board) == 0


def test_until_done_timeout_gives_still_running() -> None:
    running = HostResult("h", snap_of(state(task(1, "a", RUNNING))))
    w, clock = Scripted([running]), Clock()
    board = watch([w], interval=10, timeout=25, sleep=clock.sleep, clock=clock)  # type: ignore[list-item]
    assert clock.t == 25 and w.polls == 4 and board_exit_code(board) == 3


def test_a_blocked_chain_ends_the_wait_as_failed() -> None:
    data = state(task(1, "a", done({"Failed": 1})), task(2, "b", QUEUED, deps=(1,)),
                 groups={"p1": "Paused"})
    w, clock = Scripted([HostResult("h", snap_of(data))]), Clock()
    board = watch([w], interval=10, timeout=100, sleep=clock.sleep, clock=clock)  # type: ignore[list-item]
    assert w.polls == 1 and board_exit_code(board) == 1


def test_a_host_error_is_retried_on_the_next_poll() -> None:
    down = HostResult("h", error=RemoteError("h: connection lost"))
    finished = HostResult("h", snap_of(state(task(1, "a", done("Success")))))
    w, clock = Scripted([down, finished]), Clock()
    board = watch([w], interval=5, timeout=60, sleep=clock.sleep, clock=clock)  # type: ignore[list-item]
    assert w.polls == 2 and board_exit_code(board) == 0


def test_until_done_gives_up_on_a_dead_host_and_watches_the_others() -> None:
    down = HostResult("d", error=RemoteError("d: connection refused"))
    running = HostResult("h", snap_of(state(task(1, "a", RUNNING)), host="h"))
    finished = HostResult("h", snap_of(state(task(1, "a", done("Success"))), host="h"))
    dead, live = Scripted([down]), Scripted([running, running, running, running, finished])
    clock = Clock()
    board = watch([dead, live], interval=5, sleep=clock.sleep, clock=clock)  # type: ignore[list-item]
    # no timeout: the dead host alone would keep --until-done polling forever
    assert live.polls == 5 and dead.polls == 5
    assert board[1].snapshot is not None and board[1].snapshot.settled
    assert board_exit_code(board) == 5


def test_until_done_waits_for_a_dead_host_while_others_still_run() -> None:
    down = HostResult("d", error=RemoteError("d: connection refused"))
    finished = HostResult("h", snap_of(state(task(1, "a", done("Success"))), host="h"))
    dead, live = Scripted([down, down, finished]), Scripted([finished])
    clock = Clock()
    board = watch([dead, live], interval=5, sleep=clock.sleep, clock=clock)  # type: ignore[list-item]
    assert dead.polls == 3 and board_exit_code(board) == 0  # it came back in time


# ---- nothing selected (exit 6) ---------------------------------------------------------------

def test_an_empty_group_is_nothing_selected_not_still_running() -> None:
    empty = snap_of(state())  # a cleaned group: declared, no task
    assert empty.exit_code == 6 and empty.verdict == "nothing_selected"
    assert empty.to_dict()["verdict"] == "nothing_selected"
    assert "nothing selected: group 'p1' has no tasks" in empty.nothing_selected()
    running = snap_of(state(task(1, "a", RUNNING)))
    assert running.exit_code == 3 and running.verdict == "running"


def test_a_label_glob_matching_nothing_is_nothing_selected() -> None:
    data = state(task(1, "BTC@1", RUNNING), task(2, "BTC@2", done("Success")))
    typo = snap_of(data, glob="BCT*")
    assert typo.exit_code == 6
    line = typo.nothing_selected()
    assert "matching --label-glob 'BCT*'" in line and "check --group and --label-glob" in line
    assert snap_of(data, glob="BTC*").exit_code == 3


def test_until_done_stops_on_an_empty_selection_after_one_confirming_poll() -> None:
    empty = HostResult("h", snap_of(state()))
    w, clock = Scripted([empty]), Clock()
    # no timeout: before exit 6 this polled forever ("exit 3: still running")
    board = watch([w], interval=10, sleep=clock.sleep, clock=clock)  # type: ignore[list-item]
    assert w.polls == 2 and clock.t == 10 and board_exit_code(board) == 6


def test_until_done_keeps_waiting_when_an_empty_group_fills() -> None:
    empty = HostResult("h", snap_of(state()))
    running = HostResult("h", snap_of(state(task(1, "a", RUNNING))))
    finished = HostResult("h", snap_of(state(task(1, "a", done("Success")))))
    w, clock = Scripted([empty, running, empty, running, finished]), Clock()
    board = watch([w], interval=10, sleep=clock.sleep, clock=clock)  # type: ignore[list-item]
    assert w.polls == 5 and board_exit_code(board) == 0  # one empty poll alone never ends it


def test_nothing_selected_over_several_hosts() -> None:
    empty = HostResult("e", snap_of(state(), host="e"))
    ok = HostResult("a", snap_of(state(task(1, "a", done("Success"))), host="a"))
    running = HostResult("b", snap_of(state(task(1, "a", RUNNING)), host="b"))
    failed = HostResult("c", snap_of(state(task(1, "a", done({"Failed": 9}))), host="c"))
    down = HostResult("d", error=RemoteError("d: unreachable"))
    assert board_exit_code([empty, empty]) == 6
    assert board_exit_code([ok, empty]) == 6  # a host with nothing to watch is suspicious
    assert board_exit_code([running, empty]) == 3  # work remains
    assert board_exit_code([failed, empty]) == 1
    assert board_exit_code([down, empty]) == 5

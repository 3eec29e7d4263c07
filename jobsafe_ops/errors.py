"""One exception hierarchy; each class carries the exit code the CLI returns for it.

Exit codes (the README's table is generated from EXIT_CODES):
0 ok, 1 jobs failed / findings, 2 bad input or config, 3 refused for safety,
4 host unreachable / remote error, 5 partial (some hosts failed), 6 monitor: nothing
selected (empty group, or no label matches --label-glob), 70 internal error (a bug: rerun
with --debug), 130 interrupted, 141 stdout closed early (`| head -1`).
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4
EXIT_PARTIAL = 5
EXIT_NOTHING_SELECTED = 6
EXIT_INTERNAL = 70  # sysexits EX_SOFTWARE: never 1, which means "jobs failed"
EXIT_INTERRUPTED = 130
EXIT_CLOSED_STDOUT = 141  # 128 + SIGPIPE, what a shell reports for `yes | head -1`

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success; for monitor: every job of the group is done and succeeded",
    EXIT_FAILED: "jobs failed (monitor/audit/deploy verdict) or lint findings",
    EXIT_BAD_INPUT: "bad input or configuration (host file, playbook, flag; a job's program "
    "not found on the host); nothing was changed",
    EXIT_REFUSED: "refused for safety: lock held, running jobs under --on-running abort, "
    "memory cap unavailable, retry budget spent; for monitor: still running at timeout",
    EXIT_UNREACHABLE: "host unreachable, host key refused, or a remote command failed (or "
    "its program was not found)",
    EXIT_PARTIAL: "partial: some hosts of a multi-host run failed",
    EXIT_NOTHING_SELECTED: "monitor: nothing selected (the group has no tasks, or no label "
    "matches --label-glob); --until-done stops on it; logs/cancel: no task matches",
    EXIT_INTERNAL: "internal error (a bug in jobsafe-ops: one line; rerun with --debug for "
    "the traceback)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_CLOSED_STDOUT: "stdout was closed early (`jobsafe audit ... | head -1`): the rest "
    "of the output is dropped quietly",
}


def stdout_closed() -> bool:
    """After a BrokenPipeError: was it our stdout (the reader went away), not a socket?
    A pipe whose reader closed polls as POLLERR; a flush of what is left raises again."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        if any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0)):
            return True
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):
        return True
    return False


def exit_closed_stdout() -> NoReturn:
    """The reader of stdout went away (`| head -1`): end quietly, no traceback and no
    "Exception ignored" from the interpreter's final flush, exit 141."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(EXIT_CLOSED_STDOUT)


class JobsafeError(Exception):
    """Base class: the message is one line for the operator (what, where, the fix)."""

    exit_code = EXIT_FAILED


class ConfigError(JobsafeError):
    """A host file, playbook or flag is wrong. Raised before anything touches a host."""

    exit_code = EXIT_BAD_INPUT


class RefusedError(JobsafeError):
    """A safety rule forbids the mutation (lock held, running jobs, uncapped memory...)."""

    exit_code = EXIT_REFUSED


class RemoteError(JobsafeError):
    """The host could not be reached, its key was refused, or a remote command failed."""

    exit_code = EXIT_UNREACHABLE


class HostKeyError(RemoteError):
    """The host presented an unknown or changed key; never trusted silently."""


class JobsFailedError(JobsafeError):
    """The work ran but some jobs failed."""

    exit_code = EXIT_FAILED

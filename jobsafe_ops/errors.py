"""Every error class of jobsafe-ops, and the exit code the CLI returns for each.

The whole tree (tests/test_layout.py checks this drawing against the classes; the number is
the class's exit code, `-` when the instance sets it):

Exception
├── JobsafeError ............ 1  base: one line for the operator (what, where, the fix)
│   ├── ConfigError ......... 2  bad host file, playbook or flag; before any host is touched
│   ├── RefusedError ........ 3  a safety rule forbids the mutation (lock held, jobs running)
│   ├── RemoteError ......... 4  host unreachable, or a remote command failed
│   │   ├── HostKeyError .... 4  unknown, changed or revoked host key (remote, sshconf)
│   │   ├── ConnectionDropped 4  the connection died under a command or before it (remote)
│   │   └── VersionNotVisible 4  the index does not list the version yet: retried (deploy)
│   ├── JobsFailedError ..... 1  the work ran but some jobs failed
│   ├── NothingSelected ..... 6  no task has that label (logs, cancel)
│   └── StepFailed .......... -  a deploy step failed; carries its partial result (deploy)
├── TransientConnectError ... -  internal: refused/reset/timeout, retried by remote.connect
└── UploadRefused ........... -  internal: a write refused by the host (Remote.put_text)

ValueError
└── JobkitError ............. 2  jobkit/errors.py: stdlib only, it runs in the job's venv
    ├── ParamError .......... 2  a checkpoint path with a missing, extra or bad parameter
    ├── UnscopedGlobError ... 2  a glob over a category-scoped family pins not every category
    ├── ContaminationError .. 1  a merged result holds category values it must not
    └── CursorRemovalRefused  3  remove() of a cursor/checkpoint file without a reason

The two internal ones never reach the operator: remote turns them into a RemoteError.
jobkit keeps its own classes (it imports nothing outside itself) with the same exit-code
numbers. The test world (jobsafe_ops/testing) and its pueue stand-in, a separate program,
keep theirs, and so do the programs in hostside/ (run by the host's python3, stdlib
only): no command an operator runs raises them.

Exit codes (the README's table is generated from EXIT_CODES):
0 ok, 1 jobs failed / findings, 2 bad input or config, 3 refused for safety,
4 host unreachable / remote error, 5 partial (some hosts failed), 6 monitor: nothing
selected (empty group, or no label matches --label-glob), 70 internal error (a bug: rerun
with --debug), 130 interrupted, 141 stdout closed early (`| head -1`).
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

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


class NothingSelected(JobsafeError):
    """No task has the label asked for (logs, cancel): exit 6, as monitor's empty
    selection."""

    exit_code = EXIT_NOTHING_SELECTED


class StepFailed(JobsafeError):
    """A deploy step failed, and its result (facts gathered so far) belongs in the report.
    `result` is the step's deploy.plan.StepResult."""

    def __init__(self, message: str, result: Any, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.result = result
        self.exit_code = exit_code


class ConnectionDropped(RemoteError):
    """The connection died under a command, or was found dead before one (exit 4)."""


class VersionNotVisible(RemoteError):
    """The index does not list the version (yet): the only outcome worth a retry (AP-4)."""


class TransientConnectError(Exception):
    """Refused / reset / timed out: worth a retry, unlike auth and host-key failures.
    Internal to remote.connect, which reports the last one as a RemoteError."""


class UploadRefused(Exception):
    """The host refused a file write (read-only, full, over quota, not a directory).
    Internal to Remote.put_text, which reports it as a RemoteError."""

    @classmethod
    def of(cls, exc: BaseException) -> UploadRefused:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if reason == "Failure":  # SFTP's generic status: sftp-server does not say why
            reason = "the host refused the write (disk full or over quota?)"
        return cls(reason)

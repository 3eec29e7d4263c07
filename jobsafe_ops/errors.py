"""One exception hierarchy; each class carries the exit code the CLI returns for it.

Exit codes (the README's table is generated from EXIT_CODES):
0 ok, 1 jobs failed / findings, 2 bad input or config, 3 refused for safety,
4 host unreachable / remote error, 5 partial (some hosts failed), 6 monitor: nothing
selected (empty group, or no label matches --label-glob), 130 interrupted.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4
EXIT_PARTIAL = 5
EXIT_NOTHING_SELECTED = 6
EXIT_INTERRUPTED = 130

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
    "matches --label-glob); --until-done stops on it",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


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

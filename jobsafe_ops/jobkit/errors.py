"""jobkit's own errors: jobkit runs in the job's venv with the standard library only, so it
imports nothing outside itself, not even jobsafe_ops.errors (whose docstring draws this
branch too). The exit codes are the package's numbers (tests/test_layout.py checks them).

Every class is a ValueError, so a job that only knows the standard library can still
catch them; each carries the exit code a job script may hand back (`sys.exit(e.exit_code)`).
Messages are one line: what is wrong, which parameter or path, and the fix.
"""

from __future__ import annotations

EXIT_FAILED = 1  # jobsafe_ops.errors.EXIT_FAILED
EXIT_BAD_INPUT = 2  # jobsafe_ops.errors.EXIT_BAD_INPUT
EXIT_REFUSED = 3  # jobsafe_ops.errors.EXIT_REFUSED


class JobkitError(ValueError):
    """Base of every jobkit error."""

    exit_code = EXIT_BAD_INPUT


class ParamError(JobkitError):
    """A path was asked for with a missing, extra or unusable parameter (INV-1, INV-9)."""


class UnscopedGlobError(JobkitError):
    """A glob over a category-scoped artifact family did not pin every category (AP-17)."""


class ContaminationError(JobkitError):
    """A merged result holds category values it must not (INV-9 post-merge assertion)."""

    exit_code = EXIT_FAILED


class CursorRemovalRefused(JobkitError):
    """`remove()` was pointed at a cursor/checkpoint file without a reason (AP-15)."""

    exit_code = EXIT_REFUSED

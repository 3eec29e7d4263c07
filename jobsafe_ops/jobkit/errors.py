"""The jobkit branch of the one exception hierarchy (jobsafe_ops.errors).

Every class is also a ValueError, so a job that only knows the standard library can still
catch them; each carries the exit code a job script may hand back (`sys.exit(e.exit_code)`).
Messages are one line: what is wrong, which parameter or path, and the fix.
"""

from __future__ import annotations

from ..errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_REFUSED, JobsafeError


class JobkitError(JobsafeError, ValueError):
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

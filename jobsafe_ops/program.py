"""The `jobsafe` console script: an Invoke Program over the packaged Collection
(jobsafe_ops.tasks), so `jobsafe <task>` and `inv <task>` in the checkout take the same
tasks, flags and help; `jobsafe --version` prints this package's version."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from invoke.program import Program


def _version() -> str:
    try:
        return version("jobsafe-ops")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def main() -> None:
    """Run; a closed stdout (`jobsafe --list | head -1`) ends quietly with exit 141."""
    import sys

    from .errors import exit_closed_stdout
    from .tasks import ns

    try:
        try:
            Program(namespace=ns, version=_version(), name="jobsafe", binary="jobsafe").run()
        finally:
            sys.stdout.flush()  # here, not in the interpreter's exit (which cannot be quiet)
    except BrokenPipeError:
        exit_closed_stdout()

"""The `jobsafe` console script: an Invoke Program over the packaged Collection
(jobsafe_ops.tasks), so `jobsafe <task>` and `inv <task>` in the checkout take the same
tasks, flags and help; `jobsafe --version` prints this package's version."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

from invoke.program import Program


def _version() -> str:
    try:
        return version("jobsafe-ops")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def positional_init(argv: list[str]) -> list[str]:
    """`jobsafe init DIR` -> `jobsafe init --directory=DIR`: Invoke has no optional
    positional arguments (a bare DIR would be read as a task name). Only when `init` is the
    first word that is not a flag, and DIR the word right after it."""
    for i, word in enumerate(argv[1:], 1):
        if word.startswith("-"):
            continue
        if word == "init" and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            return [*argv[:i + 1], f"--directory={argv[i + 1]}", *argv[i + 2:]]
        break
    return argv


def main() -> None:
    from .tasks import ns

    Program(namespace=ns, version=_version(), name="jobsafe", binary="jobsafe").run(
        positional_init(sys.argv))

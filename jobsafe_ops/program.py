"""The `jobsafe` console script: an Invoke Program over the packaged Collection
(jobsafe_ops.tasks), so `jobsafe <task>` and `inv <task>` in the checkout take the same
tasks, flags and help; `jobsafe --version` prints this package's version."""

from __future__ import annotations

import sys

from invoke.exceptions import Exit, ParseError
from invoke.program import Program

from . import installed_version


class JobsafeProgram(Program):
    """Invoke's Program, with a command line it cannot parse (`--no-such-flag`, a flag
    without its value) as bad input: one line, exit 2 (Invoke's own exits 1, which here
    means "jobs failed")."""

    def parse_core(self, argv: list[str] | None) -> None:
        try:
            super().parse_core(argv)
        except ParseError as exc:
            raise Exit(f"error: {exc}; see jobsafe --help", code=2) from None

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise Exit(f"error: {exc}; see jobsafe --help <task>", code=2) from None


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
    """Run; a closed stdout (`jobsafe --list | head -1`) ends quietly with exit 141."""
    from .errors import exit_closed_stdout
    from .tasks import ns

    try:
        try:
            JobsafeProgram(namespace=ns, version=installed_version(), name="jobsafe",
                           binary="jobsafe").run(positional_init(sys.argv))
        finally:
            sys.stdout.flush()  # here, not in the interpreter's exit (which cannot be quiet)
    except BrokenPipeError:
        exit_closed_stdout()

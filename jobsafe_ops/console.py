"""One Console per process (rich, for people). Plain output when not a TTY; --json bypasses it."""

from __future__ import annotations

from rich.console import Console


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """stdout closed early (`| head -1`): quiet, exit 141 (rich's own exits 1, which
        means "jobs failed" here)."""
        from .errors import exit_closed_stdout

        exit_closed_stdout()


console = _Console()
err_console = _Console(stderr=True)

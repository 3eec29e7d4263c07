"""One Console per process (STYLE: rich). Plain output when not a TTY; --json bypasses it."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)

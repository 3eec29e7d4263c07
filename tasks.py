"""`inv <task>` in this checkout: the same tasks the installed `jobsafe` command runs
(jobsafe_ops/tasks.py, the packaged Collection)."""

from jobsafe_ops.tasks import ns

__all__ = ["ns"]

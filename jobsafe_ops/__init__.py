"""jobsafe-ops: drive long batch pipelines on remote pueue hosts without silent failures."""

__version__ = "0.1.0"

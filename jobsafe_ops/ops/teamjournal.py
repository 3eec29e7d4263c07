"""The team journal on the host: `~/.local/state/jobsafe-ops/journal.ndjson` there, one
NDJSON line per mutation by any operator, laptop, cron job or agent (flock + fsync,
ops_agent.append_journal). The local journal (journal.py) stays as it is; this one is what
every operator of a host shares.

- logs/cancel/pause/resume append on the host in the same run as their mutation;
- every other mutation (journal.append) is mirrored: `pending_line` rides on the next
  command the same session sends to that host (no extra round trip per job), and what is
  left when the session closes is sent once (`flush`).
- `jobsafe journal --host H [--since T] [--label GLOB]` reads it.
- `read_entries` gives retry budgets their shared count (every operator's re-adds), and
  `readds_last_hour` the host-wide mutation budget (`max_readds_per_hour`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import ConfigError
from ..remote import Remote
from .agent import HOST_JOURNAL, run_agent

RE_ADD = "re-add"  # batch.retry.RE_ADD_ACTION (not imported: this module stays light)
DEFAULT_MAX_READDS_PER_HOUR = 100



# ---- reading --------------------------------------------------------------------------

def parse_since(text: str | None, now: datetime | None = None) -> str | None:
    """--since: an ISO time, or a span back from now (90m, 6h, 2d). -> ISO UTC. Pure."""
    if text is None or not text.strip():
        return None
    value = text.strip()
    now = now or datetime.now(UTC)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return (now - timedelta(seconds=int(value[:-1]) * units[value[-1]])).isoformat()
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since {text!r} is neither an ISO time nor a span; e.g. --since "
                          "2026-12-01T08:00 or --since 6h") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat()


def read_entries(remote: Remote, since: str | None = None, glob: str | None = None,
                 action: str | None = None) -> list[dict[str, Any]]:
    reply = run_agent(remote, "journal", {"since": since, "glob": glob, "action": action})
    out = []
    for line in reply.body:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def merged(host_entries: Iterable[Mapping[str, Any]],
           local_entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The host's journal plus local lines it lacks (a mirror that never arrived), each
    once: a mirrored line is the same (time, operator, action, labels). Pure."""
    def key(e: Mapping[str, Any]) -> tuple[str, str, str, str]:
        return (str(e.get("time")), str(e.get("operator")), str(e.get("action")),
                json.dumps(e.get("labels") or []))

    out = [dict(e) for e in host_entries]
    seen = {key(e) for e in out}
    for e in local_entries:
        if key(e) not in seen:
            seen.add(key(e))
            out.append(dict(e))
    return out


def readds_last_hour(entries: Iterable[Mapping[str, Any]], now: datetime) -> int:
    """Labels re-added on the host in the hour before `now`, by anyone. Pure."""
    start = (now - timedelta(hours=1)).isoformat()
    n = 0
    for e in entries:
        if e.get("action") != RE_ADD or e.get("result") != "ok":
            continue
        when = str(e.get("time") or "")
        if when >= start:
            n += len(e.get("labels") or ())
    return n


def check_readd_budget(host: str, entries: Iterable[Mapping[str, Any]], adding: int,
                       limit: int, now: datetime) -> None:
    """Refuse (exit 3) re-adds beyond the host-wide budget, whoever asks. Pure."""
    from ..errors import RefusedError

    if adding <= 0:
        return
    used = readds_last_hour(entries, now)
    if used + adding > limit:
        raise RefusedError(f"{host}: refusing {adding} re-add(s): the host's budget "
                           f"max_readds_per_hour = {limit} has {max(limit - used, 0)} left "
                           f"({used} re-added in the last hour by every operator); "
                           "investigate the failures, or raise max_readds_per_hour in the "
                           "host file")


def team_readds(remote: Remote, local: Iterable[Mapping[str, Any]]
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every re-add on record: the host's journal plus local lines it lacks, the host's
    alone) for retry budgets shared by every operator. One round trip; a host without
    python3 has no team journal: the local lines only."""
    from ..errors import RemoteError

    mine = [dict(e) for e in local if e.get("action") == RE_ADD]
    try:
        on_host = read_entries(remote, action=RE_ADD)
    except RemoteError:
        return mine, []
    return merged(on_host, mine), on_host


def guard_readds(remote: Remote, on_host: Iterable[Mapping[str, Any]], adding: int,
                 now: datetime | None = None) -> None:
    """The host-wide budget (`max_readds_per_hour` in the host file) before re-adding."""
    check_readd_budget(remote.host.name, on_host, adding, remote.host.max_readds_per_hour,
                       now or datetime.now(UTC))


def journal_cmd(host: str, since: str | None, label: str | None, inventory: str | None,
                json_out: bool) -> int:
    from rich.table import Table

    from ..cli import fan_out, finish, hosts_for
    from ..console import console
    from ..inventory import Host
    from ..remote import session

    after = parse_since(since)
    if label is not None and not label.strip():
        raise ConfigError("--label '' is empty; pass a glob, e.g. --label 'BTC*'")
    hosts = hosts_for(host, inventory)

    def one(h: Host) -> dict[str, Any]:
        with session(h) as remote:
            return {"host": h.name, "path": HOST_JOURNAL,
                    "entries": read_entries(remote, after, label)}

    def render(r: dict[str, Any]) -> None:
        t = Table(title=f"journal {r['host']} ({r['path']} on the host)")
        for col in ("time", "operator", "action", "labels", "result", "detail"):
            t.add_column(col, overflow="fold")
        for e in r["entries"]:
            labels = e.get("labels") or []
            shown = ", ".join(map(str, labels[:3])) + (f" +{len(labels) - 3}" if
                                                        len(labels) > 3 else "")
            detail = " ".join(f"{k}={e[k]}" for k in ("group", "where") if e.get(k))
            t.add_row(str(e.get("time", ""))[:23], str(e.get("operator", "")),
                      str(e.get("action", "")), shown, str(e.get("result", "")), detail)
        console.print(t)

    return finish(fan_out(hosts, one), json_out, render,
                  summary=lambda r: f"{len(r['entries'])} entries")

"""Notifications, pure: the messages `--notify URL` / `--notify-command CMD` send, the alarms
they raise, the rule that sends each alarm once, and the masking of notify URLs.

Sent by monitor --until-done, deploy and autoscale --loop (notifier.py does the I/O):

* one end message when the command ends: the command, host(s), group, the verdict word and
  the exit code, the counts (done / failed / running / queued for monitor; hosts ok /
  failed for deploy; ticks and changes for autoscale) and the alarms seen on the way;
* an alarm message when an alarm is raised: failures in the watched group, a host
  swapping, a pueue state file over its alarm size (the health verdicts monitor and
  autoscale already compute: facts/probe.verdicts), a post-bump check that failed or a
  host whose tick failed (autoscale), failed re-added tasks or swapping in deploy's
  monitor window.

Alarms are deduplicated per run by (host, kind) (AlarmGate): an alarm is sent when it is
raised, not again while it stays raised (3 failures growing to 5 is the same alarm; the end
message has the final counts), and again only after it cleared on a poll and came back.

No secret in a message: every title and body goes through secrecy.redact_text (a remote
error quoting `TOKEN=...`, a credential-shaped label), and a notify URL, which often holds
a token itself (ntfy topics, Slack webhooks), is shown only masked (mask_url) in logs,
errors and --json, and never in a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .secrecy import redact_text

if TYPE_CHECKING:
    from .facts.snapshot import Health, Snapshot
    from .inventory import Host

# apprise's notification types (NotifyType values), one per message
INFO, SUCCESS, WARNING, FAILURE = "info", "success", "warning", "failure"
END, ALARM = "end", "alarm"

# Alarm kinds (each sent once per run and host, again only after it cleared)
FAILURES = "failures"
SWAPPING = "swapping"
STATE_FILE = "state file"
CHECK_FAILED = "post-bump check"
TICK_FAILED = "tick failed"
ALARM_KINDS = (FAILURES, SWAPPING, STATE_FILE, CHECK_FAILED, TICK_FAILED)


@dataclass(frozen=True)
class Alarm:
    kind: str
    host: str
    text: str  # "3 failures in group p1 (first: bad@1 exit 7)"

    @property
    def key(self) -> tuple[str, str]:
        return (self.host, self.kind)

    def line(self) -> str:
        return redact_text(f"{self.host}: {self.text}")


class AlarmGate:
    """Which alarms to send: those raised now and not raised on the previous look at the
    same host (an alarm that stays raised is sent once; cleared and back: sent again)."""

    def __init__(self) -> None:
        self.active: set[tuple[str, str]] = set()
        self.seen: dict[tuple[str, str], Alarm] = {}  # every alarm raised in the run, last text

    def update(self, alarms: Iterable[Alarm], hosts: Iterable[str] | None = None) -> list[Alarm]:
        """`alarms`: every alarm raised now; `hosts`: the hosts looked at now (default: all
        of the alarms'). A host not looked at (unreadable this poll) keeps its alarms."""
        now = list(alarms)
        looked = set(hosts) if hosts is not None else {a.host for a in now}
        raised = {a.key for a in now}
        new = [a for a in now if a.key not in self.active]
        self.active = {k for k in self.active if k[0] not in looked} | raised
        for a in now:
            self.seen[a.key] = a
        return new


@dataclass(frozen=True)
class Message:
    kind: str  # end | alarm
    title: str
    body: str
    verdict: str  # the verdict word (end), "alarm"
    level: str  # info | success | warning | failure (apprise's notify type)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "title": self.title, "verdict": self.verdict,
                "level": self.level}


def _message(kind: str, title: str, lines: Sequence[str], verdict: str, level: str) -> Message:
    return Message(kind, redact_text(title), "\n".join(redact_text(x) for x in lines),
                   verdict, level)


def _hosts(hosts: Sequence[str]) -> str:
    shown = ", ".join(hosts[:5])
    return shown + (f" and {len(hosts) - 5} more" if len(hosts) > 5 else "")


def counts_line(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def end_message(command: str, hosts: Sequence[str], verdict: str, exit_code: int,
                counts: Mapping[str, int], *, group: str | None = None,
                explain: str = "", details: Sequence[str] = (),
                alarms: Sequence[Alarm] = ()) -> Message:
    """The one message at the end: `verdict` is a word (done, failed, still running, ok,
    interrupted...), `explain` the exit code's meaning, `details` one line per host."""
    where = _hosts(hosts) + (f" group {group}" if group else "")
    title = f"jobsafe {command.split()[0]}: {verdict} (exit {exit_code}) on {where}"
    lines = [f"command: jobsafe {command}", f"host(s): {_hosts(hosts)}"]
    if group:
        lines.append(f"group: {group}")
    lines.append(f"verdict: {verdict} (exit {exit_code}{': ' + explain if explain else ''})")
    lines.append(f"counts: {counts_line(counts)}")
    lines += list(details)
    if alarms:
        lines.append("alarms during the run: " + "; ".join(a.line() for a in alarms))
    level = SUCCESS if exit_code == 0 else FAILURE if exit_code in (1, 4, 5) else WARNING
    return _message(END, title, lines, verdict, level)


def alarm_message(command: str, alarms: Sequence[Alarm], *, group: str | None = None
                  ) -> Message:
    """One message for the alarms raised at one look (a poll, a tick, a deploy's end)."""
    hosts = sorted({a.host for a in alarms})
    what = ", ".join(sorted({a.kind for a in alarms}))
    title = f"jobsafe {command.split()[0]}: ALARM {what} on {_hosts(hosts)}"
    lines = [f"command: jobsafe {command}", f"host(s): {_hosts(hosts)}"]
    if group:
        lines.append(f"group: {group}")
    lines += [f"alarm: {a.line()}" for a in alarms]
    return _message(ALARM, title, lines, "alarm", FAILURE)


# ---- alarms from what the board and the health verdicts computed -----------------------

def health_alarms(host_name: str, health: Health, host: Host) -> list[Alarm]:
    """Swapping and a state file over its alarm size: the probe's own verdicts."""
    out = []
    for v in health.verdicts(host):
        if v.level != "alarm":
            continue
        if v.name == "swap":
            out.append(Alarm(SWAPPING, host_name, f"host swapping ({v.value})"))
        elif v.name == "state file":
            out.append(Alarm(STATE_FILE, host_name,
                             f"pueue state file {v.value} over its alarm "
                             f"{host.state_alarm_mb:g} MB"))
    return out


def snapshot_alarms(snap: Snapshot, host: Host) -> list[Alarm]:
    """A monitor poll's alarms: failures in the watched group(s), then health."""
    out = []
    if snap.failures:
        failed = [t for g in snap.watched for t in (*g.failed, *g.blocked)]
        first = failed[0] if failed else None
        code = "" if first is None or first.exit_code is None else f" exit {first.exit_code}"
        groups = ", ".join(g.name for g in snap.watched if g.failures)
        out.append(Alarm(FAILURES, snap.host,
                         f"{snap.failures} failure{'s' if snap.failures != 1 else ''} in group "
                         f"{groups}" + (f" (e.g. {first.label}{code})" if first else "")))
    return out + health_alarms(snap.host, snap.health, host)


def snapshot_counts(snaps: Iterable[Snapshot]) -> dict[str, int]:
    """done / failed / running / queued over the watched groups of every snapshot."""
    from .facts.snapshot import PENDING

    counts = {"done": 0, "failed": 0, "running": 0, "queued": 0}
    for s in snaps:
        for g in s.watched:
            counts["done"] += g.count("success")
            counts["failed"] += g.failures
            counts["running"] += g.count("running")
            counts["queued"] += g.count(*PENDING) - g.count("running")
    return counts


# ---- notify URLs: masked wherever they are shown ---------------------------------------

_DNS = re.compile(r"^(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|\[[0-9A-Fa-f:.]+\])"
                  r"(?::\d+)?$")
MASK_SHORT = 6  # path segments up to this length are shown (a path, a channel)


def _segment(text: str) -> str:
    if len(text) <= MASK_SHORT:
        return text
    return f"{text[0]}***{text[-1]}"


def mask_url(url: str) -> str:
    """A notify URL as logs, errors and --json show it: the scheme and a DNS host (or IP)
    kept; user:password, the query and the fragment masked; every other segment (tokens,
    webhook ids, ntfy topics) cut to its first and last character when longer than 6."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest, q, _ = rest.partition("?")
    rest = rest.partition("#")[0]
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    host = hostport if _DNS.match(hostport) else _segment(hostport)
    parts = [_segment(p) for p in path.split("/")] if slash else []
    out = (f"{scheme}://" if sep else "") + ("***@" if at else "") + host
    if slash:
        out += "/" + "/".join(parts)
    return out + ("?***" if q else "")


_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def mask_urls_in(text: str) -> str:
    """Every URL inside a line of text masked (apprise's reasons can quote a webhook URL)."""
    def one(m: re.Match[str]) -> str:
        url = m.group(0).rstrip(".,;:!)]")
        return mask_url(url) + m.group(0)[len(url):]

    return _URL_IN_TEXT.sub(one, text)


def command_name(argv: Sequence[str]) -> str:
    """A --notify-command as shown: its program only (its arguments may hold a token)."""
    return "command " + (argv[0].rsplit("/", 1)[-1] if argv else "?")


@dataclass
class Delivery:
    """One message to one target: sent, or the reason it was not (for --json and stderr)."""

    to: str  # masked
    kind: str
    ok: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"to": self.to, "kind": self.kind, "ok": self.ok, "error": self.error}


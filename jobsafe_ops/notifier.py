"""Notifications, the I/O: `--notify URL` through apprise (ntfy://, slack://, mailto://,
json://...) and `--notify-command CMD` run locally; the messages are built in notify.py.

* Checked before any SSH (`notifier_for`): a URL apprise cannot parse, or a command whose
  program is not found, is bad input (exit 2, one line, the URL masked).
* apprise is imported only when --notify is given (it loads its plugins: ~1 s).
* A command runs without a shell (shlex.split), the message on its stdin and in
  JOBSAFE_NOTIFY_TITLE / JOBSAFE_NOTIFY_BODY / JOBSAFE_NOTIFY_VERDICT / JOBSAFE_NOTIFY_KIND,
  never in its argv.
* Every send is bounded (JOBSAFE_NOTIFY_TIMEOUT, default 30 s) and never raises: a failed
  one is one stderr line, `notify: <masked target>: <reason>`, and the command's exit code
  is unchanged.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError
from .flags import env_number
from .notify import (
    Alarm,
    AlarmGate,
    Delivery,
    Message,
    alarm_message,
    command_name,
    mask_url,
    mask_urls_in,
)
from .secrecy import redact_text

DEFAULT_TIMEOUT = 30.0
APPRISE_HINT = "(e.g. ntfy://topic, json://host/path); see apprise docs"


class Notifier:
    """The run's targets: apprise URLs (each checked) and at most one local command."""

    def __init__(self, urls: Sequence[str] = (), command: str | None = None, *,
                 timeout: float | None = None) -> None:
        self.timeout = timeout if timeout is not None else env_number(
            "JOBSAFE_NOTIFY_TIMEOUT", DEFAULT_TIMEOUT, minimum=0.1)
        self.deliveries: list[Delivery] = []
        self.gate = AlarmGate()
        self.plugins: list[tuple[str, Any]] = []  # (masked URL, apprise plugin)
        for url in urls:
            self.plugins.append((mask_url(url), _plugin(url)))
        self.argv: list[str] | None = None
        if command is not None:
            self.argv = _command(command)

    # ---- sending -------------------------------------------------------------------------

    def send(self, message: Message) -> list[Delivery]:
        """Every target, in order; each failure printed as one stderr line."""
        out = [self._one(to, lambda p=plugin: _apprise_send(p, message, self.timeout),
                         message) for to, plugin in self.plugins]
        if self.argv is not None:
            argv = self.argv
            out.append(self._one(command_name(argv),
                                 lambda: _run_command(argv, message, self.timeout), message))
        self.deliveries += out
        return out

    def alarms(self, command: str, alarms: Sequence[Alarm], *,
               looked: Sequence[str] | None = None, group: str | None = None) -> None:
        """One alarm message for the alarms newly raised at this look (AlarmGate)."""
        new = self.gate.update(alarms, looked)
        if new:
            self.send(alarm_message(command, new, group=group))

    @property
    def alarms_seen(self) -> list[Alarm]:
        """Every alarm raised during the run (the end message lists them)."""
        return list(self.gate.seen.values())

    def _one(self, to: str, send: Any, message: Message) -> Delivery:
        try:
            error = send()
        except Exception as exc:  # noqa: BLE001 - a notification never changes the outcome
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            from .console import err_console

            error = mask_urls_in(redact_text(error))
            err_console.print(f"notify: {to}: {error}", highlight=False, soft_wrap=True,
                              markup=False)
        return Delivery(to, message.kind, error is None, error)

    def to_list(self) -> list[dict[str, Any]]:
        return [d.to_dict() for d in self.deliveries]


def notifier_for(urls: Sequence[str] | None, command: str | None) -> Notifier | None:
    """The flags' Notifier, or None when neither --notify nor --notify-command is given."""
    urls = [u for u in (urls or [])]
    if not urls and command is None:
        return None
    return Notifier(urls, command)


# ---- apprise ---------------------------------------------------------------------------

def _plugin(url: str) -> Any:
    if not url.strip():
        raise ConfigError(f"--notify '': not an apprise URL {APPRISE_HINT}")
    apprise = _apprise()

    plugin = apprise.Apprise.instantiate(url.strip(), asset=_asset(), suppress_exceptions=True)
    if plugin is None:
        raise ConfigError(f"--notify {mask_url(url)!r}: not an apprise URL {APPRISE_HINT}")
    return plugin


def _apprise() -> Any:
    """The apprise module, imported on first use (its plugins load then: ~1 s), without the
    DeprecationWarnings some of them raise on import."""
    import warnings

    # its plugins import deprecated modules, some only when they send (imghdr)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="apprise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise
    return apprise


def _asset() -> Any:
    apprise = _apprise()

    try:  # no persistent cache files under ~/.local/share/apprise for a CLI run
        return apprise.AppriseAsset(storage_mode=apprise.PersistentStoreMode.MEMORY)
    except (AttributeError, TypeError):
        return apprise.AppriseAsset()


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


_LOG_LOCK = threading.Lock()


def _apprise_send(plugin: Any, message: Message, timeout: float) -> str | None:
    """None when sent, else the reason (apprise logs it: captured, not printed)."""
    apprise = _apprise()

    a = apprise.Apprise(asset=_asset())
    a.add(plugin)
    logger = logging.getLogger("apprise")
    capture = _Capture()
    result: list[bool] = []

    def run() -> None:
        result.append(bool(a.notify(body=message.body, title=message.title,
                                    notify_type=apprise.NotifyType(message.level))))

    with _LOG_LOCK:
        propagate = logger.propagate
        logger.addHandler(capture)
        logger.propagate = False  # apprise's warnings are ours to print, as one line
        try:
            worker = threading.Thread(target=run, name="notify", daemon=True)
            worker.start()
            worker.join(timeout)
        finally:
            logger.removeHandler(capture)
            logger.propagate = propagate
    if worker.is_alive():
        return f"timed out after {timeout:g}s"
    if result and result[0]:
        return None
    reason = capture.lines[-1] if capture.lines else "not delivered"
    return reason.strip().rstrip(".")


# ---- a local command -------------------------------------------------------------------

def _command(command: str) -> list[str]:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ConfigError(f"--notify-command: {exc}; quote it as one shell word, e.g. "
                          "--notify-command '~/bin/page-me --quiet'") from None
    if not argv:
        raise ConfigError("--notify-command '' is empty; give a program, e.g. "
                          "--notify-command ~/bin/page-me")
    argv[0] = os.path.expanduser(argv[0])
    if shutil.which(argv[0]) is None:
        raise ConfigError(f"--notify-command: program {argv[0]!r} not found or not "
                          "executable; give its path or put it on PATH")
    return argv


def _run_command(argv: list[str], message: Message, timeout: float) -> str | None:
    env = {**os.environ, "JOBSAFE_NOTIFY_TITLE": message.title,
           "JOBSAFE_NOTIFY_BODY": message.body, "JOBSAFE_NOTIFY_VERDICT": message.verdict,
           "JOBSAFE_NOTIFY_KIND": message.kind, "JOBSAFE_NOTIFY_LEVEL": message.level}
    try:
        proc = subprocess.run(argv, input=f"{message.title}\n\n{message.body}\n", text=True,
                              env=env, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:g}s"
    except OSError as exc:
        return exc.strerror or str(exc)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        return f"exit {proc.returncode}" + (f": {last}" if last else "")
    return None

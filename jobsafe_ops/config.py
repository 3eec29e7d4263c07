"""Where the operator's ops repo is, and its optional config file.

The ops repo holds `hosts/` (host files, `ssh_config`, `known_hosts`), `playbooks/` and
optionally `jobsafe.toml` (or `[tool.jobsafe]` in its pyproject.toml). The inventory is,
first match wins:

1. `--inventory DIR` (the flag: what the operator typed for this command),
2. `$JOBSAFE_INVENTORY`,
3. `hosts/` of the ops repo found from the current directory: the nearest of it and its
   parents holding `jobsafe.toml`, a `[tool.jobsafe]` pyproject.toml or a `hosts/`
   directory, as git finds `.git`.

An explicit inventory (1, 2) belongs to the ops repo around it: its parent, when that holds
`jobsafe.toml`, `[tool.jobsafe]` or `playbooks/` (the layout `jobsafe init` writes);
otherwise the ops repo found from the current directory, if any. Playbook names and the
config file come from that ops repo. The config file holds defaults; a flag (or the
`JOBSAFE_*` variable of a setting) always overrides it.

cli.main activates one OpsRepo per command (`activated`); code below it asks `active()`.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

CONFIG_FILE = "jobsafe.toml"
HOSTS_DIR = "hosts"
PLAYBOOKS_DIR = "playbooks"

# [autoscale] keys = the autoscale flags (their defaults stay in tasks.py)
AUTOSCALE_KEYS = ("interval", "up_load", "up_mem", "down_load", "down_mem", "headroom")
_PERCENT = {"up_load", "up_mem", "down_load", "down_mem"}
TOP_KEYS = ("connect_timeout", "journal", "autoscale", "lint")  # [lint]: jobsafe_ops.lint.config


@dataclass(frozen=True)
class Settings:
    """The config file's values; None / absent = the built-in default."""

    connect_timeout: float | None = None
    journal: Path | None = None
    autoscale: Mapping[str, float] = field(default_factory=dict)
    source: str = ""  # the file they came from ("" = no config file)


@dataclass(frozen=True)
class OpsRepo:
    root: Path | None  # None: no ops repo found (an explicit inventory can still work)
    inventory: Path
    inventory_from: str  # "--inventory" | "JOBSAFE_INVENTORY" | "discovered" | "default"
    start: Path  # where discovery started (the current directory)
    settings: Settings = Settings()

    @property
    def playbooks(self) -> Path:
        return (self.root or self.start) / PLAYBOOKS_DIR

    def missing_inventory(self) -> ConfigError:
        """One line: where it looked, and the fix."""
        if self.inventory_from in ("--inventory", "JOBSAFE_INVENTORY"):
            return missing_explicit(self.inventory, self.inventory_from)
        return ConfigError(
            f"no inventory: no hosts/ directory in {self.start} or its parents (and neither "
            "--inventory nor JOBSAFE_INVENTORY is set); run `jobsafe init` to create an ops "
            "repo here, or pass --inventory DIR")


def missing_explicit(inventory: Path, how: str) -> ConfigError:
    make = (f"create it with `jobsafe init {inventory.parent}`" if inventory.name == HOSTS_DIR
            else "`jobsafe init DIR` creates DIR/hosts")
    fix = "--inventory DIR" if how == "--inventory" else f"${how}"
    return ConfigError(f"inventory {inventory} (from {how}) is not a directory; fix {fix}, "
                       f"or {make}")


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A host file or playbook as a dict. A UTF-8 byte-order mark is accepted (Windows
    editors write one; it changes nothing), and so are CRLF line endings (TOML allows them
    and folds them in multi-line strings). An empty file is a mistake, not an empty
    config."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror}); check the path") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start}); save the file as UTF-8") \
            from None
    if not text.strip():
        raise ConfigError(f"{path}: the file is empty; write the {what} (see the README) "
                          "or delete the file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax") from None


def _pyproject_table(path: Path) -> dict[str, Any] | None:
    """`[tool.jobsafe]` of a pyproject.toml, or None when it has none."""
    data = read_toml(path, "pyproject")
    tool = data.get("tool")
    table = tool.get("jobsafe") if isinstance(tool, dict) else None
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.jobsafe] must be a table; write [tool.jobsafe]")
    return table


def _has_tool_table(directory: Path) -> bool:
    py = directory / "pyproject.toml"
    return py.is_file() and _pyproject_table(py) is not None


def find_root(start: Path) -> Path | None:
    """The nearest of `start` and its parents that is an ops repo (see the module doc)."""
    for d in (start, *start.parents):
        if (d / CONFIG_FILE).is_file() or (d / HOSTS_DIR).is_dir() or _has_tool_table(d):
            return d
    return None


def _owner(inventory: Path, start: Path) -> Path | None:
    parent = inventory.absolute().parent
    if (parent / CONFIG_FILE).is_file() or (parent / PLAYBOOKS_DIR).is_dir() \
            or _has_tool_table(parent):
        return parent
    return find_root(start)


def locate(explicit: str | os.PathLike[str] | None = None, start: Path | None = None,
           env: Mapping[str, str] | None = None) -> OpsRepo:
    """The ops repo and inventory for this command; reads (and checks) the config file."""
    env = os.environ if env is None else env
    start = (start or Path.cwd()).absolute()
    if explicit:
        inv, how = Path(explicit).expanduser(), "--inventory"
    elif env.get("JOBSAFE_INVENTORY"):
        inv, how = Path(env["JOBSAFE_INVENTORY"]).expanduser(), "JOBSAFE_INVENTORY"
    else:
        inv, how = Path(), "discovered"
    if how == "discovered":
        root = find_root(start)
        if root is None:
            inv, how = start / HOSTS_DIR, "default"
        else:
            inv = root / HOSTS_DIR
    else:
        root = _owner(inv, start)
    return OpsRepo(root, inv, how, start, load_settings(root) if root else Settings())


def load_settings(root: Path) -> Settings:
    own, py = root / CONFIG_FILE, root / "pyproject.toml"
    table = _pyproject_table(py) if py.is_file() else None
    if own.is_file():
        if table is not None:
            raise ConfigError(f"{own} and [tool.jobsafe] in {py} both configure jobsafe; "
                              "keep one of them")
        return parse_settings(read_toml(own, "settings (see the README)"), str(own), root)
    if table is not None:
        return parse_settings(table, f"{py} [tool.jobsafe]", root)
    return Settings()


def _number(value: Any, where: str, key: str, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}: {key} must be a number > 0, got {value!r}; "
                          f"write {key} = {example}")
    return float(value)


def parse_settings(data: Mapping[str, Any], where: str, base: Path) -> Settings:
    """The config file's table, checked: an unknown key or bad value is one line (exit 2)."""
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}; allowed: {', '.join(TOP_KEYS)} "
                              "(fix the spelling or remove it)")
    timeout = None
    if "connect_timeout" in data:
        timeout = _number(data["connect_timeout"], where, "connect_timeout", "10")
    journal = None
    if "journal" in data:
        j = data["journal"]
        if not isinstance(j, str) or not j.strip():
            raise ConfigError(f"{where}: journal must be a file path, got {j!r}; write "
                              'journal = "~/ops/journal.ndjson"')
        journal = Path(j).expanduser()
        if not journal.is_absolute():  # relative to the ops repo, not to where one stands
            journal = base / journal
    scale: dict[str, float] = {}
    table = data.get("autoscale", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: autoscale must be a table; write [autoscale]")
    for key, value in table.items():
        if key not in AUTOSCALE_KEYS:
            raise ConfigError(f"{where} [autoscale]: unknown key {key!r}; allowed: "
                              f"{', '.join(AUTOSCALE_KEYS)} (fix the spelling or remove it)")
        scale[key] = _number(value, f"{where} [autoscale]", key, "40")
        if key in _PERCENT and scale[key] > 100:
            raise ConfigError(f"{where} [autoscale]: {key} = {value!r} is a percentage; "
                              f"write a value up to 100, e.g. {key} = 40")
    return Settings(timeout, journal, scale, where)


_active: OpsRepo | None = None


def active() -> OpsRepo:
    """The command's ops repo (cli.main activates it); outside a command, found afresh."""
    return _active if _active is not None else locate()


@contextmanager
def activated(explicit: str | None) -> Iterator[OpsRepo]:
    global _active
    saved, _active = _active, locate(explicit)
    try:
        yield _active
    finally:
        _active = saved


def setting(value: Any, section: str, key: str) -> Any:
    """A flag's value, or the config file's when the flag was not given (its value is the
    task's own default object, jobsafe_ops.flags.is_default)."""
    from .flags import is_default

    if not is_default(value):
        return value
    table = getattr(active().settings, section)
    return type(value)(table[key]) if key in table else value

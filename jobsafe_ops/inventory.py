"""Host inventory: hosts/*.toml loaded and validated into frozen dataclasses.

Every mistake gives one line naming the file, the field and the fix (exit code 2), before
anything touches a host.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import Check, parse_checks, selected
from .config import active, missing_explicit, read_toml
from .errors import ConfigError
from .hostside.model import GROUP_NAME as _GROUP_NAME  # the feeder checks the same

DEFAULTS_FILE = "_defaults.toml"
LOCAL_SSH = "local"

# More than any host has: "9999999T" is a typo, not a cap (systemd would take it as none).
MAX_SIZE = 1024**5
# pueue spawns that many workers; a value beyond any machine's cores is a typo.
MAX_PARALLEL = 4096
# the official uv and pueue installers (and pip --user, pipx) put programs here, and a
# login shell has it on PATH (Debian/Ubuntu ~/.profile); a non-login SSH session does not
DEFAULT_PATH = ("~/.local/bin",)
SCHEDULERS = ("pueue", "slurm")
# partition/account/qos names as Slurm accepts them (no spaces, commas or shell syntax)
_SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SLURM_ONLY = ("partition", "account", "qos")
_SSH_TARGET = re.compile(r"^[^\s-][^\s]*$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """'5G' -> bytes (binary units, as systemd's MemoryMax reads them)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 512M, 5G)")
    size = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if not 0 < size <= MAX_SIZE:
        raise ValueError(f"size {text!r} is out of range (use 1 byte .. 1024T, e.g. 5G)")
    return size


@dataclass(frozen=True)
class GroupSpec:
    name: str
    parallel: int
    min: int
    max: int
    job_memory: int | None = None  # bytes; the autoscaler never adds a slot without it
    cpus: int | None = None  # Slurm: --cpus-per-task of each job of the group
    job_cpu: float = 1.0  # cores one job uses: the sizing formula's divisor (INV-6)

    @property
    def job_memory_text(self) -> str | None:
        return None if self.job_memory is None else f"{self.job_memory // 1024**2}M"


@dataclass(frozen=True)
class Host:
    name: str
    ssh: str
    project_dir: str
    package: str
    python: str = ".venv/bin/python"
    dist: str = ""
    branch: str = "main"
    index_url: str = "https://pypi.org/simple/"
    memory_cap: bool = True
    pueue: str = "pueue"
    uv: str = "uv"
    # directories prepended to PATH for every remote command and every job (~ = the host's
    # HOME): a non-login SSH session's PATH lacks ~/.local/bin, where uv and pueue install
    path: tuple[str, ...] = DEFAULT_PATH
    checkpoints: tuple[str, ...] = ()
    state_warn_mb: float = 10.0
    state_alarm_mb: float = 50.0
    # re-adds per hour on this host, by every operator together (ops/teamjournal.py)
    max_readds_per_hour: int = 100
    groups: Mapping[str, GroupSpec] = field(default_factory=dict)
    source: str = ""
    # "pueue" (default) or "slurm": then `ssh` is the cluster's login node and each group's
    # parallel/min/max is its job arrays' throttle (%P)
    scheduler: str = "pueue"
    partition: str = ""  # Slurm only: sbatch --partition/--account/--qos ("" = the default)
    account: str = ""
    qos: str = ""
    checks: tuple[Check, ...] = ()  # [[checks]]: the operator's own health checks

    def checks_for(self, when: str) -> tuple[Check, ...]:
        """The checks run at `when`: "probe", "deploy-watch" or "after-scale"."""
        return selected(self.checks, when)

    @property
    def is_slurm(self) -> bool:
        return self.scheduler == "slurm"

    @property
    def dist_name(self) -> str:
        return self.dist or self.package

    @property
    def is_local(self) -> bool:
        return self.ssh == LOCAL_SSH

    @property
    def python_path(self) -> str:
        if self.python.startswith(("/", "~")):
            return self.python
        return f"{self.project_dir.rstrip('/')}/{self.python}"

    def group(self, name: str) -> GroupSpec:
        try:
            return self.groups[name]
        except KeyError:
            known = ", ".join(sorted(self.groups)) or "none"
            raise ConfigError(
                f"{self.source}: group {name!r} is not declared (known: {known}); "
                f"add [groups.{name}] to the host file"
            ) from None


# field -> (type, required, default)
_HOST_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "ssh": (str, True),
    "project_dir": (str, True),
    "package": (str, True),
    "python": (str, False),
    "dist": (str, False),
    "branch": (str, False),
    "index_url": (str, False),
    "memory_cap": (bool, False),
    "pueue": (str, False),
    "uv": (str, False),
    "path": (list, False),
    "checkpoints": (list, False),
    "state_warn_mb": ((int, float), False),
    "state_alarm_mb": ((int, float), False),
    "max_readds_per_hour": (int, False),
    "groups": (dict, False),
    "scheduler": (str, False),
    "partition": (str, False),
    "account": (str, False),
    "qos": (str, False),
    "checks": (list, False),
}
_GROUP_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "parallel": (int, True),
    "min": (int, False),
    "max": (int, False),
    "job_memory": (str, False),
    "cpus": (int, False),
    "job_cpu": ((int, float), False),
}


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {str: "a string", bool: "true/false", int: "an integer", list: "a list",
             dict: "a table", float: "a number"}
    if isinstance(t, tuple):
        return "a number"
    return names.get(t, t.__name__)


def _example(key: str, t: type | tuple[type, ...]) -> str:
    """How the field is written, for the fix in a wrong-type error."""
    if t is dict:
        return f"[{key}.NAME]"
    if key == "checks":
        return '[[checks]] tables (name, command, expect)'
    shapes = {str: '"..."', bool: "true", int: "4", list: '["..."]'}
    return f"{key} = {shapes.get(t, '10') if not isinstance(t, tuple) else '10'}"


def _check_fields(
    data: Mapping[str, Any],
    spec: Mapping[str, tuple[type | tuple[type, ...], bool]],
    where: str,
) -> None:
    for key in data:
        if key not in spec:
            raise ConfigError(
                f"{where}: unknown key {key!r}; allowed: {', '.join(sorted(spec))} "
                "(fix the spelling or remove it)"
            )
    for key, (typ, required) in spec.items():
        if key not in data:
            if required:
                raise ConfigError(f"{where}: missing required field {key!r}; add {key} = ...")
            continue
        value = data[key]
        # bool is an int subclass: `parallel = true` must not pass as 1
        bad_bool = isinstance(value, bool) and typ is not bool
        if bad_bool or not isinstance(value, typ):
            raise ConfigError(
                f"{where}: field {key!r} must be {_type_name(typ)}, got {_shown(value)}; "
                f"write {_example(key, typ)}"
            )
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{where}: field {key!r} is empty; write {_example(key, typ)} "
                              "or remove the line for the default")


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _group(name: str, data: Any, where: str, scheduler: str = "pueue") -> GroupSpec:
    gwhere = f"{where} [groups.{name}]"
    if not _GROUP_NAME.match(name):
        raise ConfigError(f"{where}: group name {name!r}: use letters, digits, '.', '_', '-' "
                          "(it is passed to pueue and shown in every report)")
    if not isinstance(data, dict):
        raise ConfigError(f"{gwhere}: must be a table with parallel/min/max/job_memory")
    _check_fields(data, _GROUP_FIELDS, gwhere)
    parallel = data["parallel"]
    lo = data.get("min", 1)
    hi = data.get("max", max(parallel, lo))
    if parallel < 1:
        raise ConfigError(
            f"{gwhere}: parallel = {parallel} is invalid (pueue reads 0 as unlimited); "
            "set parallel >= 1"
        )
    if lo < 1:
        raise ConfigError(f"{gwhere}: min = {lo} is invalid; set min >= 1 (0 means unlimited)")
    if hi < lo:
        raise ConfigError(f"{gwhere}: max = {hi} is below min = {lo}; set max >= min")
    for key, n in (("parallel", parallel), ("max", hi)):
        if n > MAX_PARALLEL:
            raise ConfigError(f"{gwhere}: {key} = {n} is beyond any host's cores; set "
                              f"{key} <= {MAX_PARALLEL}")
    if not lo <= parallel <= hi:
        raise ConfigError(
            f"{gwhere}: parallel = {parallel} is outside min..max ({lo}..{hi}); adjust one"
        )
    memory = None
    if "job_memory" in data:
        try:
            memory = parse_size(data["job_memory"])
        except ValueError as exc:
            raise ConfigError(f"{gwhere}: job_memory: {exc}") from None
    cpus = data.get("cpus")
    if cpus is not None:
        if scheduler != "slurm":
            raise ConfigError(f"{gwhere}: cpus is a Slurm setting (--cpus-per-task); remove it "
                              'or set scheduler = "slurm"')
        if not 1 <= cpus <= MAX_PARALLEL:
            raise ConfigError(f"{gwhere}: cpus = {cpus} is invalid; set 1 <= cpus <= "
                              f"{MAX_PARALLEL}")
    cpu = data.get("job_cpu", 1.0)
    if not cpu > 0:
        raise ConfigError(f"{gwhere}: job_cpu = {cpu} is invalid; set the cores one job uses, "
                          "e.g. job_cpu = 1 (or 0.5)")
    return GroupSpec(name=name, parallel=parallel, min=lo, max=hi, job_memory=memory,
                     cpus=cpus, job_cpu=float(cpu))


def _scheduler(data: Mapping[str, Any], where: str) -> str:
    """`scheduler = "pueue" | "slurm"`; partition/account/qos only with slurm, and each a
    plain Slurm name (it is passed to sbatch)."""
    scheduler = data.get("scheduler", "pueue")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"{where}: scheduler {scheduler!r} is unknown; write "
                          'scheduler = "pueue" (the default) or scheduler = "slurm"')
    for key in SLURM_ONLY:
        if key not in data:
            continue
        if scheduler != "slurm":
            raise ConfigError(f"{where}: {key} is a Slurm setting; remove it or set "
                              'scheduler = "slurm"')
        if not _SLURM_NAME.match(data[key]):
            raise ConfigError(f"{where}: {key} {data[key]!r} is not a Slurm name; use "
                              "letters, digits, '.', '_', '-' (e.g. partition = \"batch\")")
    return str(scheduler)



def load_host_file(path: Path, defaults: Mapping[str, Any] | None = None) -> Host:
    data = {**(defaults or {}), **read_toml(path, "host's fields (ssh, project_dir, ...)")}
    where = str(path)
    _check_fields(data, _HOST_FIELDS, where)
    if not _SSH_TARGET.match(data["ssh"]):
        raise ConfigError(f"{where}: ssh {data['ssh']!r} must be an ssh_config alias or "
                          "user@host[:port] (no spaces, no leading '-')")
    scheduler = _scheduler(data, where)
    groups = {name: _group(name, g, where, scheduler)
              for name, g in data.get("groups", {}).items()}
    checkpoints = data.get("checkpoints", [])
    if not all(isinstance(c, str) for c in checkpoints):
        raise ConfigError(f"{where}: field 'checkpoints' must be a list of path patterns")
    dirs = _path_dirs(data.get("path", list(DEFAULT_PATH)), where)
    if not data["project_dir"].startswith(("/", "~")):
        raise ConfigError(
            f"{where}: project_dir {data['project_dir']!r} must be absolute or start with ~"
        )
    if data.get("max_readds_per_hour", 0) < 0:
        raise ConfigError(f"{where}: max_readds_per_hour = {data['max_readds_per_hour']} is "
                          "invalid; set it >= 0 (default 100; 0 refuses every re-add)")
    checks = parse_checks(data.get("checks", []), where, scheduler)
    kwargs = {k: v for k, v in data.items()
              if k not in ("groups", "checkpoints", "path", "checks")}
    return Host(
        name=path.stem, groups=groups, checkpoints=tuple(checkpoints), path=dirs,
        source=where, checks=checks, **kwargs
    )


def _path_dirs(dirs: list[Any], where: str) -> tuple[str, ...]:
    """`path = ["~/.local/bin", "/opt/x/bin"]`: absolute or ~/ directories, no ':'."""
    for d in dirs:
        if not isinstance(d, str) or not d.strip():
            raise ConfigError(f"{where}: field 'path' must be a list of directories, got "
                              f"{_shown(d)}; write path = [\"~/.local/bin\"]")
        if not (d.startswith("/") or d == "~" or d.startswith("~/")) or ":" in d \
                or any(ch in d for ch in "\n\r\0"):
            raise ConfigError(f"{where}: path entry {d!r} must be an absolute or ~/ directory "
                              "without ':' (it is prepended to PATH on the host); write e.g. "
                              'path = ["~/.local/bin", "/opt/tools/bin"]')
    return tuple(dirs)


def inventory_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """--inventory DIR, else $JOBSAFE_INVENTORY, else the ops repo's hosts/ found from the
    current directory (jobsafe_ops.config)."""
    if explicit:
        return Path(explicit).expanduser()
    return active().inventory


def host_inventory(host: Host) -> Path:
    """The directory a host was loaded from: its ssh_config and known_hosts are used for
    it, whatever --inventory / $JOBSAFE_INVENTORY / the current directory say."""
    return Path(host.source).parent if host.source else inventory_dir()


def load_inventory(directory: Path) -> dict[str, Host]:
    if not directory.is_dir():

        repo = active()
        if repo.inventory.absolute() == directory.absolute():
            raise repo.missing_inventory()
        raise missing_explicit(directory, "--inventory")
    defaults: dict[str, Any] = {}
    dpath = directory / DEFAULTS_FILE
    if dpath.exists():
        defaults = read_toml(dpath, "keys shared by every host")
        # blame a bad shared key on _defaults.toml, not on every host file
        _check_fields(defaults, {k: (t, False) for k, (t, _) in _HOST_FIELDS.items()},
                      str(dpath))
    hosts = {}
    for path in sorted(directory.glob("*.toml")):
        if path.name == DEFAULTS_FILE:
            continue
        host = load_host_file(path, defaults)
        hosts[host.name] = host
    return hosts


def select_hosts(inventory: Mapping[str, Host], spec: str) -> list[Host]:
    """--host a,b | all -> hosts, in the order given. Pure. An empty name (`a,,b`), a name
    given twice (the same host would run twice at once and race itself for the deploy
    lock) or an unknown name is bad input (exit 2), caught before any host is touched."""
    known = ", ".join(sorted(inventory)) or "none"
    spec = (spec or "").strip()
    if not spec:
        raise ConfigError("--host is required: a host name, a,b, or all")
    names = [n.strip() for n in spec.split(",")]
    if names == ["all"]:
        if not inventory:
            raise ConfigError("the inventory has no hosts; add hosts/<name>.toml")
        return list(inventory.values())
    if "all" in names and "all" not in inventory:
        raise ConfigError(f"--host {spec!r}: 'all' cannot be combined with names; use "
                          f"--host all or a list of names (inventory has: {known})")
    if "" in names:
        raise ConfigError(f"--host {spec!r}: empty host name; separate names with one "
                          f"comma (inventory has: {known})")
    seen: set[str] = set()
    out = []
    for name in names:
        if name not in inventory:
            raise ConfigError(
                f"unknown host {name!r} in --host {spec!r} (inventory has: {known}); "
                f"add hosts/{name}.toml or fix the name"
            )
        if name in seen:
            raise ConfigError(f"--host {spec!r}: host {name!r} is given twice; name each "
                              f"host once (inventory has: {known})")
        seen.add(name)
        out.append(inventory[name])
    return out

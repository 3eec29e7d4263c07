"""`jobsafe init [DIR]`: a new ops repo — a commented example host, playbook, config file and
README. Never overwrites: if any file it would write exists, nothing is written (exit 2
naming the file). The examples load with the tool's own loaders (tests/test_init.py)."""

from __future__ import annotations

from pathlib import Path

from .console import console
from .errors import ConfigError

HOST_EXAMPLE = """\
# One host per file: hosts/<name>.toml, and <name> is what --host takes (this one: example).
# `jobsafe hosts` checks every file; `jobsafe probe --host example` reaches the host.
#
# ssh: an alias from hosts/ssh_config or ~/.ssh/config (HostName, Port, User,
# IdentityFile, ProxyJump are honoured), or user@host[:port]. The host key must already be
# in ~/.ssh/known_hosts or hosts/known_hosts: `ssh-keyscan HOST >> hosts/known_hosts`
# after checking the fingerprint.
ssh = "ops@gpu1.example.org"
project_dir = "~/project"        # the git checkout deploy pulls into (absolute or ~)
package = "mypkg"                # import name deploy's VERIFY step checks
# python = ".venv/bin/python"    # relative to project_dir
# branch = "main"
# memory_cap = true              # jobs run under systemd-run MemoryMax (needs user systemd)
# path = ["~/.local/bin"]        # in front of PATH for every remote command and job

# One table per pueue group: parallel is set at deploy; autoscale keeps it in min..max,
# adding a slot only with job_memory (x headroom) free.
[groups.cpu]
parallel = 2
min = 1
max = 8
job_memory = "2G"
"""

PLAYBOOK_EXAMPLE = """\
# A batch: one job per combination of the [matrix] values. Plan without changing anything:
#   jobsafe submit-batch --host example --playbook example --dry
name = "example"
description = "2 inputs x 2 sizes = 4 jobs, then a summary"
group = "cpu"                      # a group declared in the host file
workdir = "~/project"              # default: the host's project_dir
# {placeholders} are shell-quoted for you: never put quotes around them.
command = ".venv/bin/python scripts/job.py --input {input} --size {size}"
# every varying parameter is in the label (and in every shared path): one label, one job
label = "{input}@{size}"
memory_max = "2G"                  # per job (systemd-run MemoryMax) on hosts with memory_cap
retry_budget = 1                   # killed/OOM jobs are re-added as <label>-retry-N once
artifacts = ["out/{input}_{size}.json"]

[matrix]
input = ["alpha", "beta"]
size = [100, 200]

[[after]]                          # runs once every job above succeeded
label = "example:summary"
command = ".venv/bin/python scripts/summary.py"
"""

CONFIG_EXAMPLE = """\
# jobsafe settings for this ops repo; every command-line flag (and JOBSAFE_* variable)
# overrides them. Unknown keys are an error. Uncomment to change a default.
# connect_timeout = 10             # seconds per SSH connect attempt (JOBSAFE_CONNECT_TIMEOUT)
# journal = "journal.ndjson"       # relative to this directory (JOBSAFE_JOURNAL)
#
# [autoscale]                      # defaults of `jobsafe autoscale` flags
# interval = 60
# up_load = 40
# up_mem = 60
# down_load = 80
# down_mem = 80
# headroom = 2
"""

README = """\
# Ops repo for jobsafe

`jobsafe` finds this directory from here or any directory below it (as git finds `.git`).

- `hosts/` — one `<name>.toml` per host (see `hosts/example.toml`), plus optional
  `hosts/ssh_config` and `hosts/known_hosts` used for these hosts.
- `playbooks/` — batches for `jobsafe submit-batch --playbook <name>`.
- `jobsafe.toml` — defaults (connect timeout, journal path, autoscale thresholds).

Start: edit `hosts/example.toml` (or copy it to `hosts/<your-host>.toml`), then
`jobsafe hosts`, `jobsafe probe --host example`,
`jobsafe submit-batch --host example --playbook example --dry`.
"""

FILES = {
    "hosts/example.toml": HOST_EXAMPLE,
    "playbooks/example.toml": PLAYBOOK_EXAMPLE,
    "jobsafe.toml": CONFIG_EXAMPLE,
    "README.md": README,
}


def init_cmd(directory: str | None = None) -> int:
    root = Path(directory or ".").expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} exists and is not a directory; pick a new or empty "
                          "directory for `jobsafe init DIR`")
    for rel in FILES:
        target = root / rel
        if target.exists() or target.is_symlink():
            raise ConfigError(f"{target} already exists; jobsafe init never overwrites a "
                              "file: move it away or pick a new directory (jobsafe init DIR)")
    try:
        for rel, text in FILES.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("x") as fh:  # "x": a file appearing meanwhile is not clobbered
                fh.write(text)
    except OSError as exc:
        raise ConfigError(f"cannot write in {root}: {exc.strerror or exc}; check the "
                          "directory's permissions") from None
    for rel in FILES:
        console.print(f"wrote {root / rel}", markup=False, highlight=False, soft_wrap=True)
    where = "" if directory is None else f"cd {root} && "
    console.print(f"next: edit hosts/example.toml, then {where}jobsafe hosts", markup=False,
                  highlight=False, soft_wrap=True)
    return 0

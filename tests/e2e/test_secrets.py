"""Secrets never leave where they live, end to end (one world, one host).

Three different secrets are planted: in the host project's `.env` (the job loads it, as
python-dotenv would), in the operator's laptop environment when running `inv`, and in the
host's login environment (sshd SetEnv, like an `export` in a shell profile). Then the
toolkit runs for real: deploy (pulls the job script), submit-batch in jobs mode and in
units mode with an `--after` chain, monitor, retry-failed, deploy's RESTART re-add, probe.
While it runs every process's command line is sampled; afterwards the local journal,
`pueue status --json` (every task's `envs`), pueue's state directory (state file and task
logs), the batch directory on the host and everything `inv` printed are searched: no secret
may appear anywhere. The jobs prove they saw the `.env` secret (an artifact holds its
sha256), and control checks prove each secret was really there to leak.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.cli import inv
from tests.jsonout import result_of
from tests.world import SimHost, World

GROUPS = {"p1": {"parallel": 3, "min": 1, "max": 4}, "p2": {"parallel": 2, "min": 1, "max": 4}}
PASS = 'pass_env = ["JOBSAFE_WORLD", "JOBSAFE_WORLD_HOST"]\n'  # the world's sweep marker

# The job: load ./.env like python-dotenv (variables already set win), then write the
# sha256 of API_TOKEN to out/<name>.sha256. Labels starting with "flaky" fail (137) twice.
SECRET_JOB = '''"""Uses API_TOKEN from the project's .env (stdlib stand-in for python-dotenv)."""

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path


def load_dotenv(path=".env"):
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            os.environ.setdefault(key.strip(), value.strip().strip("'\\""))


parser = argparse.ArgumentParser()
parser.add_argument("--name", required=True)
parser.add_argument("--sleep", type=float, default=0.0)
args = parser.parse_args()
load_dotenv()
time.sleep(args.sleep)
out = Path("out")
out.mkdir(exist_ok=True)
tries = out / f"{args.name}.tries"
n = int(tries.read_text()) if tries.exists() else 0
tries.write_text(str(n + 1))
if args.name.startswith("flaky") and n < 2:
    print(f"{args.name}: attempt {n + 1} fails on purpose", file=sys.stderr)
    sys.exit(137)
digest = hashlib.sha256(os.environ["API_TOKEN"].encode()).hexdigest()
(out / f"{args.name}.sha256").write_text(digest)
print(f"{args.name}: ok")
'''
JOB = ".venv/bin/python scripts/secret_job.py"


class CmdlineSampler(threading.Thread):
    """Every process's command line (/proc/*/cmdline, what `ps -eo args` shows), sampled
    until stopped; keeps every distinct line."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.lines: set[str] = set()
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        raw = (entry / "cmdline").read_bytes()
                    except OSError:
                        continue
                    self.lines.add(raw.replace(b"\0", b" ").decode("utf-8", "replace"))
            ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True)
            self.lines.update(ps.stdout.splitlines())
            self.samples += 1
            self.halt.wait(0.05)

    def stop(self) -> set[str]:
        self.halt.set()
        self.join(10)
        return self.lines


def wait_success(host: SimHost, label: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in host.pueue_status()["tasks"].values():
            if t["label"] == label and "Done" in t["status"]:
                assert t["status"]["Done"]["result"] == "Success", t
                return
        time.sleep(0.2)
    raise AssertionError(f"{label} not done on {host.name} in {timeout}s")


@pytest.fixture(scope="module")
def secrets() -> dict[str, str]:
    return {where: f"jobsafe-planted-{where}-{uuid.uuid4().hex}"
            for where in ("dotenv", "laptop", "login")}


@pytest.fixture(scope="module")
def host(world: World, secrets: dict[str, str]) -> SimHost:
    if not world.pueue_available:
        pytest.skip("no pueue stand-in and no real pueue")
    return world.add_host("sec", groups=GROUPS, extra_env={"API_TOKEN": secrets["login"]})


def test_no_secret_leaves_its_place(world: World, host: SimHost, secrets: dict[str, str],
                                    tmp_path: Path) -> None:
    outputs: list[str] = []
    laptop_env = {"API_TOKEN": secrets["laptop"]}

    def run(*args: str, code: int | None = 0, timeout: float = 300) -> str:
        """`inv ARGS` with the secret in the laptop's environment; its stdout."""
        proc = inv(world, *args, env=laptop_env, timeout=timeout)
        outputs.extend([proc.stdout, proc.stderr])
        if code is not None:
            assert proc.returncode == code, f"inv {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
        return proc.stdout

    dotenv = host.project_dir / ".env"
    dotenv.write_text(f"# job secrets\nAPI_TOKEN={secrets['dotenv']}\n")
    dotenv.chmod(0o600)
    world.commit_to_origin({"scripts/secret_job.py": SECRET_JOB,
                            ".gitignore": ".venv/\n__pycache__/\n*.egg-info/\nout/\n.env\n"},
                           "a job that reads API_TOKEN from .env")
    jobs = tmp_path / "secjobs.toml"
    jobs.write_text('name = "secjobs"\ngroup = "p1"\n' + PASS
                    + f'command = "{JOB} --name {{name}} --sleep 1.5"\nlabel = "sec:{{name}}"\n'
                    '[matrix]\nname = ["a", "b", "flaky"]\n')
    units = tmp_path / "secunits.toml"
    units.write_text('name = "secunits"\ngroup = "p2"\n' + PASS
                     + f'command = "{JOB} --name {{name}} --sleep 1.5"\nlabel = "secu:{{name}}"\n'
                     '[matrix]\nname = ["u1", "u2", "u3"]\n[units]\nsize = 2\nparallel = 2\n'
                     f'[[after]]\nlabel = "secu:sum"\ncommand = "{JOB} --name sum"\ngroup = "p2"\n')
    # a playbook carrying a secret is refused before any SSH, without echoing it
    bad = tmp_path / "leaky.toml"
    bad.write_text('name = "leaky"\ngroup = "p1"\n' + f'command = "{JOB} --name x"\n'
                   f'label = "x"\n[env]\nAPI_TOKEN = "{secrets["laptop"]}"\n')
    refused = inv(world, "submit-batch", "--host", "sec", "--playbook", str(bad),
                  env=laptop_env, timeout=120)
    outputs.extend([refused.stdout, refused.stderr])
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "env.API_TOKEN looks like a secret" in refused.stderr
    assert ".env on the host" in refused.stderr

    sampler = CmdlineSampler()
    sampler.start()
    try:
        run("deploy", "--host", "sec", "--on-running", "abort", "--watch", "0", "--json")
        assert (host.project_dir / "scripts" / "secret_job.py").exists()
        run("submit-batch", "--host", "sec", "--playbook", str(jobs))
        run("submit-batch", "--host", "sec", "--playbook", str(units), "--units", "--json")
        run("monitor", "--host", "sec", "--group", "p2", "--until-done", "--timeout", "120",
            "--interval", "1", "--json")
        # flaky fails (137): monitor says so, retry-failed re-adds it, it fails once more
        run("monitor", "--host", "sec", "--group", "p1", "--until-done", "--timeout", "120",
            "--interval", "1", code=1)
        run("retry-failed", "--host", "sec", "--group", "p1")
        run("monitor", "--host", "sec", "--group", "p1", "--until-done", "--timeout", "120",
            "--interval", "1", "--json", code=1)
        # deploy's RESTART re-adds it again, in the lean environment too
        report = result_of(run("deploy", "--host", "sec", "--on-running", "abort",
                                "--watch", "0", "--json"))
        restart = next(s for s in report["steps"] if s["name"] == "restart")
        assert "sec:flaky-retry-2" in restart["detail"], restart
        wait_success(host, "sec:flaky-retry-2")
        probe = result_of(run("probe", "--host", "sec", "--json"))
        assert (probe["dotenv"], probe["dotenv_path"]) == ("600", "~/project/.env")
        dotenv.chmod(0o644)
        shown = run("probe", "--host", "sec")
        assert "chmod 600 ~/project/.env" in " ".join(shown.split())
    finally:
        lines = sampler.stop()
    assert sampler.samples >= 10

    # the jobs saw the .env secret - not the login one, which a non-lean add would carry
    digest = hashlib.sha256(secrets["dotenv"].encode()).hexdigest()
    for name in ("a", "b", "flaky", "u1", "u2", "u3", "sum"):
        assert (host.project_dir / "out" / f"{name}.sha256").read_text() == digest, name

    status = host.run("pueue status --json", check=True).stdout
    tasks = json.loads(status)["tasks"].values()
    labels = {t["label"] for t in tasks}
    assert {"sec:flaky-retry-1", "sec:flaky-retry-2", "secu:sum"} <= labels
    assert all("envs" in t for t in tasks)  # the field a leak would show up in
    places: dict[str, str] = {
        "journal": (world.laptop / ".local/state/jobsafe-ops/journal.ndjson").read_text(),
        "pueue status --json": status,
        "inv output": "\n".join(outputs),
        "process command lines": "\n".join(lines),
    }
    for root in (host.pueue_dir, host.home / ".local/state/jobsafe-ops"):
        for f in root.rglob("*"):
            if f.is_file():
                places[str(f)] = f.read_bytes().decode("utf-8", "replace")
    for name in ("state.json", ".log", "commands.jsonl", "receipts.tsv", "feeder.py"):
        assert any(p.endswith(name) for p in places), f"no {name} searched"
    leaks = [(which, where) for which, secret in secrets.items()
             for where, text in places.items() if secret in text]
    assert leaks == []

    # controls: each secret was there to leak, and the search would have found it
    assert secrets["dotenv"] in dotenv.read_text()
    assert laptop_env["API_TOKEN"] == secrets["laptop"]
    assert world.ssh("sec", "printenv API_TOKEN", check=True).stdout.strip() == secrets["login"]
    world.ssh("sec", "~/.local/bin/pueue add --group p2 --label control --stashed -- true",
              check=True)
    naive = host.run("pueue status --json", check=True).stdout
    assert secrets["login"] in naive  # a plain `pueue add` over SSH stores the login env

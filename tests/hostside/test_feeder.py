"""The on-host feeder, run locally as the host would run it (python3 feeder.py ...) against
a pueue daemon (the stand-in, or real pueue when it is on PATH). The main property: killed
at any point and rerun, every label is in pueue exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from jobsafe_ops.hostside.bundle import write_bundle  # noqa: E402
from tests.world import FAKE_PUEUE_DIR, detect_real_pueue  # noqa: E402

# the feeder as a host runs it: bundled with the shared model, alone in its directory
_FEEDER_DIR = tempfile.TemporaryDirectory(prefix="jobsafe-feeder-")
FEEDER = write_bundle("feeder", Path(_FEEDER_DIR.name))

# A pueue wrapper that SIGKILLs the feeder around the Nth add: "before" the add reaches
# the daemon, or "after" it (the task exists, its receipt was never written).
KILLER = """#!/bin/sh
if [ "$1" = add ]; then
  n=$(( $(cat "$KILL_COUNTER" 2>/dev/null || echo 0) + 1 ))
  echo "$n" > "$KILL_COUNTER"
  if [ "$n" -eq "$KILL_AT" ] && [ "$KILL_MODE" = before ]; then kill -9 $PPID; exit 1; fi
  out=$(pueue "$@"); rc=$?
  printf '%s\\n' "$out"
  if [ "$n" -eq "$KILL_AT" ]; then kill -9 $PPID; sleep 1; fi
  exit $rc
fi
exec pueue "$@"
"""


class Daemon:
    def __init__(self, root: Path) -> None:
        self.root = root
        bindir = detect_real_pueue() or FAKE_PUEUE_DIR
        runtime = root / "rt"
        runtime.mkdir(parents=True)
        self.cfg = root / "pueue.yml"
        self.cfg.write_text(
            "shared:\n"
            f"  pueue_directory: {root / 'data'}\n"
            f"  runtime_directory: {runtime}\n"
            "  use_unix_socket: true\n"
            f"  unix_socket_path: {runtime / 'pueue.socket'}\n"
            f"  pid_path: {runtime / 'pueue.pid'}\n"
            "client: {}\ndaemon: {}\nprofiles: {}\n")
        self.env = {
            "HOME": str(root), "PATH": f"{bindir}:{Path(sys.executable).parent}:/usr/bin:/bin",
            "PUEUE_CONFIG_PATH": str(self.cfg), "LANG": "C.UTF-8",
        }
        subprocess.run(["pueued", "-d"], env=self.env, check=True, capture_output=True)
        deadline = time.monotonic() + 15
        while self.pueue("status", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("pueued did not answer")
            time.sleep(0.05)
        for group in ("p1", "p2"):
            self.pueue("group", "add", group, "--parallel", "1")
            self.pueue("pause", "--group", group)  # tasks stay queued: we count adds only

    def pueue(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["pueue", *args], env=self.env, capture_output=True, text=True,
                              check=check)

    def tasks(self) -> list[dict[str, Any]]:
        data = json.loads(self.pueue("status", "--json").stdout)
        return list(data["tasks"].values())

    def reset(self) -> None:
        """`pueue reset` only marks the groups: the daemon drops their tasks on its next
        loop (real pueue and the stand-in alike), so wait for that before the next test."""
        self.pueue("reset", "--force", check=False)
        deadline = time.monotonic() + 15
        while self.tasks() and time.monotonic() < deadline:
            time.sleep(0.05)
        for group in ("p1", "p2"):
            self.pueue("group", "add", group, "--parallel", "1", check=False)
            self.pueue("pause", "--group", group, check=False)

    def close(self) -> None:
        self.pueue("shutdown", check=False)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("feed"))
    try:
        yield d
    finally:
        d.close()


@pytest.fixture
def batch(daemon: Daemon, tmp_path: Path) -> Path:
    daemon.reset()
    assert daemon.tasks() == []
    (tmp_path / "work").mkdir()
    return tmp_path


def write_commands(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def feed(daemon: Daemon, batch: Path, commands: Path, *extra: str, pueue: str = "pueue",
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FEEDER), "feed", str(commands), "--receipts",
         str(batch / "receipts.tsv"), "--pueue", pueue, *extra],
        env={**daemon.env, **(env or {})}, capture_output=True, text=True, timeout=300)


def summary(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [x for x in proc.stdout.splitlines() if x.startswith("@@summary ")]
    assert lines, proc.stdout + proc.stderr
    return json.loads(lines[-1][len("@@summary "):])  # type: ignore[no-any-return]


def jobs(batch: Path, n: int, group: str = "p1") -> list[dict[str, Any]]:
    return [{"label": f"job {i}; $(touch pwned) 'q\"", "group": group,
             "workdir": str(batch / "work"), "command": f"echo {i}", "after": []}
            for i in range(n)]


def receipts(batch: Path) -> dict[str, str]:
    out = {}
    for line in (batch / "receipts.tsv").read_text().splitlines():
        label, _, tid = line.rpartition("\t")
        out[label] = tid
    return out


def test_feeds_every_label_once_with_workdir(daemon: Daemon, batch: Path) -> None:
    lines = jobs(batch, 12)
    proc = feed(daemon, batch, write_commands(batch / "c.jsonl", lines))
    assert proc.returncode == 0, proc.stderr
    s = summary(proc)
    assert len(s["added"]) == 12 and s["errors"] == [] and s["existing"] == []
    tasks = daemon.tasks()
    assert sorted(t["label"] for t in tasks) == sorted(x["label"] for x in lines)
    assert {t["path"] for t in tasks} == {str((batch / "work").resolve())}
    assert not (batch / "work" / "pwned").exists()  # the label never met a shell
    assert receipts(batch) == {t["label"]: str(t["id"]) for t in tasks}
    assert "@@progress 12 12" in proc.stdout
    # a rerun adds nothing
    again = summary(feed(daemon, batch, batch / "c.jsonl"))
    assert again["added"] == [] and len(again["existing"]) == 12
    assert len(daemon.tasks()) == 12


@pytest.mark.parametrize("kill_at,mode", [(1, "before"), (4, "after"), (7, "before"),
                                          (10, "after")])
def test_killed_then_rerun_adds_every_label_exactly_once(
        daemon: Daemon, batch: Path, kill_at: int, mode: str) -> None:
    killer = batch / "pueue-killer"
    killer.write_text(KILLER)
    killer.chmod(0o755)
    commands = write_commands(batch / "c.jsonl", jobs(batch, 10))
    env = {"KILL_AT": str(kill_at), "KILL_MODE": mode, "KILL_COUNTER": str(batch / "n")}
    passed = [f"--pass-env={k}" for k in env]  # the feeder adds with a lean environment
    proc = feed(daemon, batch, commands, "--jobs", "1", *passed, pueue=str(killer), env=env)
    assert proc.returncode == -9
    added_before = len(daemon.tasks())
    assert added_before == (kill_at - 1 if mode == "before" else kill_at)
    if mode == "after":  # the killed add reached pueue but has no receipt
        assert len(receipts(batch)) == kill_at - 1
    # rerun (concurrent adds this time): only the missing labels are added; it waits, as
    # submit-batch's does, for the killed feeder's add still in flight (it holds the lock)
    s = summary(feed(daemon, batch, commands, "--jobs", "4", "--lock-wait", "30"))
    assert len(s["added"]) == 10 - added_before
    labels = Counter(t["label"] for t in daemon.tasks())
    assert len(labels) == 10 and set(labels.values()) == {1}
    assert len(receipts(batch)) == 10  # the orphan add got its receipt from the status read


def test_kill_at_a_random_moment_converges(daemon: Daemon, batch: Path) -> None:
    commands = write_commands(batch / "c.jsonl", jobs(batch, 40))
    proc = subprocess.Popen(
        [sys.executable, str(FEEDER), "feed", str(commands), "--receipts",
         str(batch / "receipts.tsv"), "--jobs", "4"],
        env=daemon.env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # kill once some adds went through
        if line.startswith("@@progress") and int(line.split()[1]) >= 5:
            proc.kill()
            break
    proc.wait()
    summary(feed(daemon, batch, commands, "--lock-wait", "30"))  # as submit-batch reruns
    labels = Counter(t["label"] for t in daemon.tasks())
    assert len(labels) == 40 and set(labels.values()) == {1}


def test_after_chain_wired_by_label(daemon: Daemon, batch: Path) -> None:
    lines = jobs(batch, 3)
    lines.append({"label": "optimize", "group": "p2", "workdir": str(batch / "work"),
                  "command": "echo opt", "after": [x["label"] for x in lines]})
    lines.append({"label": "validate", "group": "p2", "workdir": str(batch / "work"),
                  "command": "echo val", "after": ["optimize"]})
    s = summary(feed(daemon, batch, write_commands(batch / "c.jsonl", lines)))
    ids = dict(s["added"])
    by_label = {t["label"]: t for t in daemon.tasks()}
    assert sorted(by_label["optimize"]["dependencies"]) == sorted(
        ids[x["label"]] for x in lines[:3])
    assert by_label["validate"]["dependencies"] == [ids["optimize"]]


def test_dependency_that_was_not_added_blocks_the_dependant(daemon: Daemon,
                                                            batch: Path) -> None:
    lines = [{"label": "a", "group": "p1", "workdir": "/nonexistent/dir", "command": "x",
              "after": []},
             {"label": "b", "group": "p1", "workdir": str(batch / "work"), "command": "y",
              "after": ["a"]}]
    proc = feed(daemon, batch, write_commands(batch / "c.jsonl", lines))
    assert proc.returncode == 1
    errors = dict(summary(proc)["errors"])
    assert "does not exist" in errors["a"] and "was not added" in errors["b"]
    assert daemon.tasks() == []


def test_dependency_cleaned_since_is_not_waited_for(daemon: Daemon, batch: Path) -> None:
    (batch / "receipts.tsv").write_text("gone\t0\n")
    lines = [{"label": "b", "group": "p1", "workdir": str(batch / "work"), "command": "y",
              "after": ["gone"]}]
    s = summary(feed(daemon, batch, write_commands(batch / "c.jsonl", lines)))
    assert [lbl for lbl, _ in s["added"]] == ["b"]
    assert daemon.tasks()[0]["dependencies"] == []


def test_second_feeder_is_locked_out(daemon: Daemon, batch: Path) -> None:
    import fcntl

    commands = write_commands(batch / "c.jsonl", jobs(batch, 1))
    fd = os.open(batch / "receipts.tsv.lock", os.O_WRONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        proc = feed(daemon, batch, commands)
    finally:
        os.close(fd)
    assert proc.returncode == 75 and "another feeder" in summary(proc)["fatal"]
    assert daemon.tasks() == []


def test_second_feeder_waits_for_the_first_then_adds_nothing_twice(daemon: Daemon,
                                                                   batch: Path) -> None:
    import fcntl

    commands = write_commands(batch / "c.jsonl", jobs(batch, 2))
    label = jobs(batch, 1)[0]["label"]
    fd = os.open(batch / "receipts.tsv.lock", os.O_WRONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # "the first feeder" holds the batch
    try:
        second = subprocess.Popen(
            [sys.executable, str(FEEDER), "feed", str(commands), "--receipts",
             str(batch / "receipts.tsv"), "--pueue", "pueue", "--lock-wait", "120"],
            env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # meanwhile the first one adds a label and writes its receipt
        tid = daemon.pueue("add", "--group", "p1", "--label", label, "--working-directory",
                           str(batch / "work"), "--print-task-id", "--", "echo 0").stdout
        (batch / "receipts.tsv").write_text(f"{label}\t{tid.strip()}\n")
    finally:
        os.close(fd)
    out, err = second.communicate(timeout=300)
    proc = subprocess.CompletedProcess(second.args, second.returncode, out, err)
    assert proc.returncode == 0, out + err
    s = summary(proc)
    assert [lbl for lbl, _ in s["existing"]] == [label]  # seen after the wait
    assert len(s["added"]) == 1
    assert Counter(t["label"] for t in daemon.tasks()) == {label: 1, jobs(batch, 2)[1]["label"]: 1}


def test_bad_commands_file_adds_nothing(daemon: Daemon, batch: Path) -> None:
    lines = jobs(batch, 2)
    lines[1]["workdir"] = "relative/dir"
    proc = feed(daemon, batch, write_commands(batch / "c.jsonl", lines))
    assert proc.returncode == 2 and "not absolute" in summary(proc)["fatal"]
    assert daemon.tasks() == []


# ---- bad commands files: refused whole, before the first add ------------------------------

def _line(label: str = "a", **over: Any) -> dict[str, Any]:
    return {"label": label, "group": "p1", "workdir": "/tmp", "command": "true", "after": [],
            **over}


def _lines(*items: dict[str, Any]) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in items).encode()


def _unit(**over: Any) -> dict[str, Any]:
    base = {"unit_file": "/tmp/u.jsonl",
            "unit_commands": [{"label": "x", "workdir": "/tmp", "command": "true"}]}
    return _line("u", **{**base, **over})


BAD_COMMANDS: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "not_json": (b'{"label": "a", \n', (":1: not JSON",)),
    "not_object": (b"[1, 2]\n", (":1: a JSON list, not an object",)),
    "empty": (b"", ("the file is empty",)),
    "blank_lines_only": (b"\n  \n", ("the file is empty",)),
    "not_utf8": (b'{"label": "\xff"}\n', ("not UTF-8",)),
    "unknown_key": (_lines(_line(lable="x")), (":1: unknown key 'lable'",)),
    "missing_label": (_lines({k: v for k, v in _line().items() if k != "label"}),
                      ("'label' is missing",)),
    "label_not_string": (_lines(_line(label=5)), ("'label' is missing or not a non-empty",)),
    "label_blank": (_lines(_line(label="  ")), ("'label' is missing",)),
    "label_newline": (_lines(_line("a\nb")), ("tab/newline/NUL",)),
    "label_tab": (_lines(_line("a\tb")), ("tab/newline/NUL",)),
    "label_huge": (_lines(_line("x" * 1_000_000)), ("longer than 256",)),
    "workdir_relative": (_lines(_line(workdir="project")), ("'project' is not absolute",)),
    "workdir_missing": (_lines({k: v for k, v in _line().items() if k != "workdir"}),
                        ("'workdir' is missing",)),
    "command_nul": (_lines(_line(command="echo a\0b")), ("NUL or carriage return",)),
    "command_cr": (_lines(_line(command="echo a\r")), ("NUL or carriage return",)),
    "command_huge": (_lines(_line(command="x" * 200_000)), ("over 131072 bytes",)),
    "group_metachar": (_lines(_line(group="p1;touch pwned")), ("not a pueue group name",)),
    "group_leading_dash": (_lines(_line(group="-p1")), ("not a pueue group name",)),
    "duplicate_label": (_lines(_line("a"), _line("b"), _line("a")),
                        (":3: label 'a' appears twice",)),
    "after_not_list": (_lines(_line(after="a")), ("'after' must be a list",)),
    "after_not_labels": (_lines(_line(after=[3])), ("'after' must be a list",)),
    "after_self": (_lines(_line("a", after=["a"])), ("names 'a', which is this line",)),
    "after_forward": (_lines(_line("a", after=["b"]), _line("b")),
                      (":1: 'after' names 'b'", "upstream jobs come first")),
    "unit_file_relative": (_lines(_unit(unit_file="u.jsonl")),
                           ("'unit_file' must be an absolute",)),
    "unit_commands_empty": (_lines(_unit(unit_commands=[])), ("'unit_commands' must be a non",)),
    "unit_command_not_object": (_lines(_unit(unit_commands=["true"])),
                                ("unit_commands[0] is not an object",)),
    "unit_command_relative": (_lines(_unit(unit_commands=[
        {"label": "x", "workdir": "rel", "command": "true"}])),
        ("unit_commands[0]", "'rel' is not absolute")),
    # good lines first, the bad one last: still nothing is added
    "bad_last_line": (_lines(_line("a"), _line("b"), _line("c", workdir="rel")),
                      (":3: workdir 'rel' is not absolute",)),
}


@pytest.mark.parametrize("name", sorted(BAD_COMMANDS))
def test_bad_commands_file_is_refused_whole(daemon: Daemon, batch: Path, name: str) -> None:
    """The feeder is the host-side gate: a commands file that is not what submit-batch
    writes (hand-edited, damaged, another version's) gets exit 2 and one line naming the
    file, the line and the fix, before any add - no task, no receipt, no unit file."""
    content, expect = BAD_COMMANDS[name]
    path = batch / f"{name}.jsonl"
    path.write_bytes(content)
    proc = feed(daemon, batch, path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    fatal = summary(proc)["fatal"]
    assert "\n" not in fatal and len(fatal) < 400, fatal
    assert fatal.startswith(str(path)) and "regenerate it with `inv submit-batch`" in fatal
    for part in expect:
        assert part in fatal, fatal
    assert daemon.tasks() == [] and not (batch / "receipts.tsv").exists()
    assert not Path("/tmp/u.jsonl").exists() and not (batch / "work" / "pwned").exists()


def test_bom_and_crlf_commands_file_is_fed(daemon: Daemon, batch: Path) -> None:
    """Accepted on purpose: an editor's BOM or CRLF endings change no JSON value."""
    text = "".join(json.dumps(x) + "\r\n" for x in jobs(batch, 2))
    path = batch / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    proc = feed(daemon, batch, path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(t["label"] for t in daemon.tasks()) == sorted(x["label"] for x in jobs(batch, 2))


def test_lean_environment_reaches_pueue(daemon: Daemon, batch: Path) -> None:
    commands = write_commands(batch / "c.jsonl", jobs(batch, 1))
    proc = feed(daemon, batch, commands, "--pass-env", "KEEP_ME",
                env={"SECRET_TOKEN": "s3cret", "KEEP_ME": "1"})
    assert proc.returncode == 0
    envs = daemon.tasks()[0]["envs"]
    assert "SECRET_TOKEN" not in envs and envs.get("KEEP_ME") == "1"
    assert envs["PUEUE_CONFIG_PATH"] == str(daemon.cfg)


# ---- units mode ----------------------------------------------------------------------------

def run_unit(batch: Path, unit: Path, parallel: int = 3) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(FEEDER), "unit", str(unit), "--done",
                           str(batch / "done.tsv"), "--parallel", str(parallel)],
                          capture_output=True, text=True, timeout=120, cwd=batch)


def test_unit_runner_converges_after_a_kill_and_a_failure(batch: Path) -> None:
    out = batch / "out.txt"
    work = str(batch / "work")
    cmds = [{"label": f"c{i}", "workdir": work, "command": f"echo c{i} >> {out}"}
            for i in range(20)]
    # c5 kills the runner (its parent) once; c9 fails until a flag file exists
    cmds[5]["command"] = (f"if [ ! -f {batch}/killed ]; then touch {batch}/killed; "
                          f"kill -9 $PPID; exit 1; fi; echo c5 >> {out}")
    cmds[9]["command"] = f"[ -f {batch}/fixed ] && echo c9 >> {out}"
    unit = write_commands(batch / "unit.jsonl", cmds)
    first = run_unit(batch, unit, parallel=1)
    assert first.returncode == -9
    second = run_unit(batch, unit)
    assert second.returncode == 1 and "=== c9 (exit 1)" in second.stdout
    (batch / "fixed").touch()
    third = run_unit(batch, unit)
    assert third.returncode == 0
    assert "=== c0 " not in third.stdout  # done receipts: not run again
    lines = Counter(out.read_text().split())
    assert lines == Counter(f"c{i}" for i in range(20))  # every command's effect once
    done = {}
    for line in (batch / "done.tsv").read_text().splitlines():
        label, _, code = line.rpartition("\t")
        done[label] = code
    assert set(done) == {f"c{i}" for i in range(20)} and set(done.values()) == {"0"}


def test_unit_runner_with_logs_gives_each_command_its_own_log(batch: Path) -> None:
    logs = batch / "logs"
    logs.mkdir()
    work = str(batch / "work")
    unit = write_commands(batch / "unit.jsonl", [
        {"label": "a:1", "workdir": work, "command": "echo one; echo err >&2"},
        {"label": "a:2", "workdir": work, "command": "echo two; exit 4"}])
    proc = subprocess.run([sys.executable, str(FEEDER), "unit", str(unit), "--done",
                           str(batch / "done.tsv"), "--parallel", "2", "--logs", str(logs)],
                          capture_output=True, text=True, timeout=120, cwd=batch)
    assert proc.returncode == 1
    assert (logs / "a_1.log").read_text() == "one\nerr\n"  # a Slurm element's log name
    assert (logs / "a_2.log").read_text() == "two\n"
    assert "=== a:2 (exit 4)" in proc.stdout and "one\n" not in proc.stdout


def test_feeder_writes_unit_files_before_adding(daemon: Daemon, batch: Path) -> None:
    unit_file = batch / "units" / "u1.jsonl"
    inner = [{"label": "x y", "workdir": str(batch / "work"), "command": "true"}]
    line = {"label": "pb:unit-00000-abc", "group": "p1", "workdir": str(batch / "work"),
            "command": f"python3 feeder.py unit {unit_file}", "after": [],
            "unit_file": str(unit_file), "unit_commands": inner}
    s = summary(feed(daemon, batch, write_commands(batch / "c.jsonl", [line])))
    assert [lbl for lbl, _ in s["added"]] == ["pb:unit-00000-abc"]
    assert [json.loads(x) for x in unit_file.read_text().splitlines()] == inner


def test_a_torn_or_replaced_commands_file_is_never_fed(daemon: Daemon, batch: Path) -> None:
    """The laptop passes the sha256 and line count of what it uploaded: a file cut short
    (full disk, dropped connection) or changed since is refused before any add."""
    import hashlib

    text = "".join(json.dumps(x) + "\n" for x in jobs(batch, 5))
    digest, count = hashlib.sha256(text.encode()).hexdigest(), str(text.count("\n"))
    torn = batch / "torn.jsonl"
    torn.write_text(text[: text.index("\n", len(text) // 2) + 1])  # whole lines, 3 of 5
    proc = feed(daemon, batch, torn, "--sha256", digest, "--count", count)
    assert proc.returncode == 2 and "3 line(s), expected 5" in summary(proc)["fatal"]
    cut = batch / "cut.jsonl"
    cut.write_text(text[:-10])  # mid-line: same line count, wrong digest
    proc = feed(daemon, batch, cut, "--sha256", digest, "--count", count)
    assert proc.returncode == 2 and "sha256" in summary(proc)["fatal"]
    assert daemon.tasks() == [] and not (batch / "receipts.tsv").exists()

    whole = batch / "whole.jsonl"
    whole.write_text(text)
    proc = feed(daemon, batch, whole, "--sha256", digest, "--count", count)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(summary(proc)["added"]) == 5 and len(daemon.tasks()) == 5



def test_a_killed_feeders_adds_in_flight_keep_the_batch_lock(tmp_path: Path) -> None:
    """A feeder SIGKILLed while its `pueue add` still runs: the add holds the batch lock
    (it inherits the flock'd fd), so a rerun waits for it instead of reading a status it is
    about to change and adding its label a second time (the kill-at-a-random-moment race)."""
    from jobsafe_ops.hostside.feeder import wait_for_lock

    started = tmp_path / "add-started"
    pueue = tmp_path / "pueue"
    pueue.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = status ]; then echo \'{"tasks":{},"groups":{"p1":'
        '{"status":"Running","parallel_tasks":1}}}\'; exit 0; fi\n'
        f"touch {started}; sleep 3; echo 7\n")
    pueue.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    commands = write_commands(tmp_path / "c.jsonl", [
        {"label": "a", "group": "p1", "workdir": str(work), "command": "true", "after": []}])
    receipts = tmp_path / "receipts.tsv"
    proc = subprocess.Popen([sys.executable, str(FEEDER), "feed", str(commands), "--receipts",
                             str(receipts), "--pueue", str(pueue)],
                            stdout=subprocess.DEVNULL, start_new_session=False)
    deadline = time.monotonic() + 20
    while not started.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the add never started"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    fd = os.open(str(receipts) + ".lock", os.O_WRONLY)
    try:
        assert wait_for_lock(fd, 0.3) is False  # the orphaned add still holds it
        assert wait_for_lock(fd, 10.0) is True  # and lets go once it has finished
    finally:
        os.close(fd)

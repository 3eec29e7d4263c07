"""jobkit under real concurrency: processes on one real directory writing, replacing,
deleting and appending at once, and a writer SIGKILLed mid-save.

Assertions are about every observation (each read parses and is one complete version, each
line is whole), never about timing; the workloads are fixed-size so the tests stay bounded.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobsafe_ops.jobkit import Checkpoint, append_ndjson, atomic_write, remove, sweep_temps
from jobsafe_ops.jobkit.files import STALE_TEMP_AGE

CTX = mp.get_context("fork")
pytestmark = pytest.mark.timeout(120)


def version(writer: int, seq: int, size: int) -> str:
    """A document whose every byte depends on (writer, seq): a torn or mixed file fails."""
    unit = f"{writer}:{seq};"
    return json.dumps({"w": writer, "seq": seq, "pad": unit * (size // len(unit))})


def check_version(text: str | bytes) -> tuple[int, int]:
    doc = json.loads(text)  # a partial file fails here...
    unit = f"{doc['w']}:{doc['seq']};"
    if doc["pad"] != unit * (len(doc["pad"]) // len(unit)) or not doc["pad"]:
        raise AssertionError(f"mixed content in version {doc['w']}:{doc['seq']}")  # ...or here
    return doc["w"], doc["seq"]


def guarded(errors: Any, fn: Callable[..., Any], *args: Any) -> None:
    """Run fn in a child; report any exception to the parent instead of dying silently."""
    try:
        fn(*args)
    except BaseException as exc:  # noqa: B036 - the parent must hear about every failure
        errors.put(f"{fn.__name__}{args[:1]}: {exc!r}")
        raise SystemExit(1) from None


def start(errors: Any, fn: Callable[..., Any], *args: Any) -> Any:
    proc = CTX.Process(target=guarded, args=(errors, fn, *args))
    proc.start()
    return proc


def drain(queue: Any) -> list[Any]:
    out = []
    while not queue.empty():
        out.append(queue.get())
    return out


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".ckpt_")]


# ---- atomic_write: readers never see a partial file -------------------------------------


def writer(path: str, who: int, writes: int, size: int) -> None:
    for seq in range(writes):
        atomic_write(path, version(who, seq, size))


def reader(path: str, stop: Any, counts: Any) -> None:
    seen = 0
    while not stop.is_set():
        with open(path, "rb") as fh:  # the path always exists: replaced, never removed
            check_version(fh.read())
        seen += 1
    counts.put(seen)


def test_readers_never_see_a_partial_file(tmp_path):
    path = tmp_path / "state.json"
    atomic_write(path, version(99, 0, 1000))
    errors, counts, stop = CTX.Queue(), CTX.Queue(), CTX.Event()
    readers = [start(errors, reader, str(path), stop, counts) for _ in range(2)]
    writers = [start(errors, writer, str(path), w, 25, 300_000) for w in range(3)]
    for p in writers:
        p.join()
    stop.set()
    for p in readers:
        p.join()
    assert drain(errors) == []
    assert [p.exitcode for p in writers + readers] == [0] * 5
    reads = drain(counts)
    assert len(reads) == 2 and all(n > 0 for n in reads)
    assert check_version(path.read_bytes())[1] == 24  # the last save of some writer
    assert leftovers(tmp_path) == []


# ---- remove racing with remove and with atomic_write ------------------------------------


def rewriter(path: str, who: int) -> None:
    for seq in range(150):
        atomic_write(path, version(who, seq, 20_000))


def remover(path: str, times: int) -> None:
    for _ in range(times):
        remove(path)


def test_remove_races_with_remove_and_atomic_write(tmp_path):
    path = tmp_path / "artifact.json"
    errors = CTX.Queue()
    procs = ([start(errors, rewriter, str(path), w) for w in range(2)]
             + [start(errors, remover, str(path), 600) for _ in range(2)])
    for p in procs:
        p.join()
    assert drain(errors) == []  # no FileNotFoundError from a vanished file, anywhere
    assert [p.exitcode for p in procs] == [0] * 4
    if path.exists():  # whoever came last: a remove, or one complete version
        check_version(path.read_bytes())
    assert leftovers(tmp_path) == []


# ---- append_ndjson: no interleaved lines ------------------------------------------------

WRITERS, BLOCKS, PER_BLOCK, RECORD = 4, 20, 3, 6000  # 6000 > PIPE_BUF (4096)


def appender(path: str, who: int) -> None:
    for block in range(BLOCKS):
        append_ndjson(path, [{"w": who, "block": block, "seq": block * PER_BLOCK + i,
                              "pad": f"{who}" * RECORD} for i in range(PER_BLOCK)])


def test_concurrent_multiline_appends_never_interleave(tmp_path):
    path = tmp_path / "progress.ndjson"
    errors = CTX.Queue()
    procs = [start(errors, appender, str(path), w) for w in range(WRITERS)]
    for p in procs:
        p.join()
    assert drain(errors) == []
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.decode().split("\n")[:-1]
    assert len(lines) == WRITERS * BLOCKS * PER_BLOCK
    records = [json.loads(line) for line in lines]  # every line is one whole record
    assert all(r["pad"] == f"{r['w']}" * RECORD for r in records)
    by_writer: dict[int, list[int]] = defaultdict(list)
    where: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_writer[r["w"]].append(r["seq"])
        where[(r["w"], r["block"])].append(i)
    assert {w: seqs for w, seqs in by_writer.items()} == {
        w: list(range(BLOCKS * PER_BLOCK)) for w in range(WRITERS)}  # complete, in order
    for positions in where.values():  # one block = one write under the lock: adjacent lines
        assert positions == list(range(positions[0], positions[0] + PER_BLOCK))


# ---- SIGKILL mid-save: the old or the new file, never a partial one ----------------------

BIG = 4_000_000


def saver_loop(path: str, kind: str, ready: Any) -> None:
    for seq in range(10_000):
        if kind == "checkpoint":
            Checkpoint(path).save({"doc": version(7, seq, BIG)})
        else:
            atomic_write(path, version(7, seq, BIG))
        ready.set()


@pytest.mark.parametrize("kind", ["atomic_write", "checkpoint"])
def test_sigkill_mid_save_leaves_a_complete_file(tmp_path, kind):
    rng = random.Random(20240101)
    path = tmp_path / "cursor.json"
    for _ in range(5):
        ready = CTX.Event()
        proc = CTX.Process(target=saver_loop, args=(str(path), kind, ready))
        proc.start()
        assert ready.wait(60), "the saver never completed a first save"
        time.sleep(rng.uniform(0, 0.05))  # somewhere inside a later write, fsync or rename
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        if kind == "checkpoint":
            saved = Checkpoint(path).load()
            assert saved is not None  # never "start over" after a kill
            check_version(saved.state["doc"])
        else:
            check_version(path.read_bytes())
    # A kill can strand a temp file (cleanup needs a live process); the target never is one.
    stranded = leftovers(tmp_path)
    assert all(n.endswith(".tmp") for n in stranded)
    assert {p.name for p in tmp_path.iterdir()} - set(stranded) == {path.name}
    # the next job start sweeps them once they are old enough not to be a live writer's
    old = time.time() - 2 * STALE_TEMP_AGE
    for name in stranded:
        os.utime(tmp_path / name, (old, old))
    if kind == "checkpoint":
        Checkpoint(path).load()
    else:
        assert sweep_temps(tmp_path) == len(stranded)
    assert leftovers(tmp_path) == [] and path.exists()

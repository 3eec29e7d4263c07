"""Sizing (INV-6, ops/sizing.py): min(available x 0.8 / job_memory, cores x 0.8 / job_cpu)
per declared group; the autoscaler never steps a group above it."""

from __future__ import annotations

from jobsafe_ops.inventory import GroupSpec
from jobsafe_ops.ops.autoscale import GroupLoad, Readings, ScaleSnapshot, decide
from jobsafe_ops.ops.sizing import allowed, limits, sizing

GiB = 1024**3


def test_the_formula_takes_the_tighter_limit() -> None:
    g = GroupSpec("p1", 2, 1, 16, job_memory=5 * GiB, job_cpu=2)
    assert limits(61 * GiB, 32, g) == (9, 12)  # 48.8 GiB / 5 -> 9; 25.6 cores / 2 -> 12
    assert allowed(61 * GiB, 32, g) == 9
    assert allowed(200 * GiB, 32, g) == 12  # cores bind
    assert limits(61 * GiB, 10, GroupSpec("p2", 1, 1, 4)) == (None, 8)  # no job_memory
    assert allowed(None, None, GroupSpec("p3", 1, 1, 4)) is None
    assert limits(4 * GiB, 4, GroupSpec("p4", 1, 1, 4, job_memory=8 * GiB)) == (0, 3)


def test_probe_lists_every_declared_group_beside_parallel_and_max() -> None:
    specs = {"p1": GroupSpec("p1", 2, 1, 8, job_memory=GiB),
             "p2": GroupSpec("p2", 1, 1, 6, job_memory=5 * GiB, job_cpu=0.5)}
    rows = sizing(10 * GiB, 4, specs, {"p1": 3})
    assert [(z.group, z.parallel, z.max, z.by_memory, z.by_cpu, z.allowed) for z in rows] == [
        ("p1", 3, 8, 8, 3, 3), ("p2", None, 6, 1, 6, 1)]
    assert rows[0].to_dict()["allowed"] == 3


def test_the_autoscaler_never_steps_above_the_sizing_limit() -> None:
    # idle, plenty of memory for the headroom rule, but 4 cores x 0.8 / 1 = 3 slots
    r = Readings(nproc=4, load1=0.1, mem_total=100 * GiB, mem_available=90 * GiB)
    g = GroupSpec("p1", 2, 1, 8, job_memory=GiB)

    def act(parallel: int) -> tuple[int, str]:
        [a] = decide(ScaleSnapshot("h", r, {"p1": GroupLoad("p1", parallel, "Running", 5)}),
                     {"p1": g})
        return a.after, a.reason

    assert act(2)[0] == 3
    after, why = act(3)
    assert after == 3 and "sizing limit 3" in why

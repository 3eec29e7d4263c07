"""jobsafe_ops.deploy.decide: which checkpoint files a kill removes (INV-1)."""

from __future__ import annotations

from jobsafe_ops.deploy.context import KilledTask
from jobsafe_ops.deploy.decide import checkpoint_paths
from jobsafe_ops.inventory import Host


def test_checkpoint_paths_only_from_declared_patterns() -> None:
    host = Host(name="h", ssh="h", project_dir="~/project", package="p",
                checkpoints=("~/.cache/ck/{label}.json", "out/{group}/{label}.part", "/abs/x"))
    killed = [KilledTask("p1", "BTC@250-retry-1", "c", "/w", 1),
              KilledTask("p1", "../evil", "c", "/w", 2)]
    paths = checkpoint_paths(host, killed, lambda p: p.replace("~", "/home/op", 1))
    assert paths == ["/home/op/.cache/ck/BTC@250.json", "/home/op/project/out/p1/BTC@250.part",
                     "/abs/x"]
    assert checkpoint_paths(Host(name="h", ssh="h", project_dir="~/p", package="p"),
                              killed, str) == []

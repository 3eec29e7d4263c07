"""What the laptop and the Slurm login node must read the same way (stdlib, Python >= 3.8):
the squeue format both parse, the job name that marks a batch's arrays, and the array-index
grammar of squeue's %K. Inlined into slurm_feed.py by bundle.py; scheduler/slurm.py imports
it on the laptop."""

from __future__ import annotations

SQUEUE_FORMAT = "%i|%F|%K|%j|%T|%r|%k"


def job_name(playbook: str, group: str) -> str:
    """The name of every array of a batch's group: squeue finds a batch by its prefix."""
    return f"jobsafe:{playbook}:{group}"


def expand_indices(text: str) -> list[int]:
    """'3' -> [3]; '[4-6,9%2]' / '4-6,9' -> [4, 5, 6, 9]; 'N/A' -> []."""
    text = text.strip().strip("[]").split("%")[0]
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.strip().isdigit():
            continue
        if sep and hi.strip().isdigit():
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(lo))
    return out

"""jobkit: the library a job's own code imports on the host - checkpoints and data integrity.

Standard library only (it runs in the job's venv, which has no fabric, invoke or rich).

| name | guards |
|---|---|
| `CheckpointSpec`, `checkpoint_path` | INV-1/INV-9: paths carry every parameter and category |
| `Checkpoint` (`load`, `save`, `mark_complete`) | INV-4 atomic saves; AP-15 never deleted |
| `atomic_write`, `atomic_write_json`, `load_json` | INV-4: never a partial file; None on bad JSON |
| `remove` | INV-3 idempotent delete; refuses a cursor without a reason (AP-15) |
| `sweep_temps` | temps stranded by a kill mid-save, over an hour old (`Checkpoint.load` calls it) |
| `scoped_glob` | AP-17/INV-9: every category pinned, no wildcard category |
| `append_ndjson`, `read_ndjson` | flock-serialized multi-line appends that never interleave |
| `validate_merged`, `validate_values` | INV-9 post-merge contamination check |
"""

from __future__ import annotations

from .checkpoint import Checkpoint, Saved
from .errors import (
    ContaminationError,
    CursorRemovalRefused,
    JobkitError,
    ParamError,
    UnscopedGlobError,
)
from .files import (
    atomic_write,
    atomic_write_json,
    is_cursor,
    load_json,
    remove,
    sweep_temps,
)
from .merge import validate_merged, validate_values
from .ndjson import append_ndjson, read_ndjson
from .paths import CheckpointSpec, checkpoint_path, decode_value, encode_value
from .scoping import scoped_glob

__all__ = [
    "Checkpoint", "CheckpointSpec", "ContaminationError", "CursorRemovalRefused",
    "JobkitError", "ParamError", "Saved", "UnscopedGlobError", "append_ndjson",
    "atomic_write", "atomic_write_json", "checkpoint_path", "decode_value", "encode_value",
    "is_cursor", "load_json", "read_ndjson", "remove", "scoped_glob", "sweep_temps",
    "validate_merged", "validate_values",
]

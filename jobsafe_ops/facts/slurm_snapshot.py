"""monitor's poll of a Slurm host: one remote command - slurm_feed.py's `board` sent inline
(compressed, nothing left on the login node) - over squeue and every batch's ledger, filtered
there by group and label glob; the payload has the monitor filter's shape, so the board,
the verdicts and the exit codes are the pueue host's (snapshot.snapshot_from)."""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import replace

from ..errors import RemoteError
from ..hostside.bundle import bundle
from ..hostside.model import BATCH_ROOT
from ..remote import Remote
from ..shell import home_word, join
from .snapshot import Options, Snapshot, snapshot_from

BOARD_LOADER = (
    "import base64,zlib;exec(zlib.decompress(base64.b64decode('"
    + base64.b64encode(zlib.compress(bundle("slurm_feed").encode(), 9)).decode()
    + "')))"
)


def board_command(opts: Options) -> str:
    argv = ["board", "--limit", str(opts.limit), "--log-lines", str(opts.log_lines)]
    if opts.group:
        argv += ["--group", opts.group]
    if opts.label_glob is not None:
        argv += ["--glob", opts.label_glob]
    return f"{join([opts.python, '-c', BOARD_LOADER])} {join(argv)} --root {home_word(BATCH_ROOT)}"


def read_slurm_snapshot(remote: Remote, opts: Options,
                        previous: Snapshot | None = None) -> Snapshot:
    host = remote.host
    command = board_command(opts)
    result = remote.run(command, check=False, readonly=True)
    text = result.stdout.strip()
    try:
        payload = json.loads(text.splitlines()[-1]) if text else {}
    except json.JSONDecodeError:
        payload = {}
    if not payload:
        detail = (result.stderr.strip() or text or f"exit {result.exited}").splitlines()
        raise RemoteError(f"{host.name}: slurm board failed: {detail[-1]}")
    for name, g in (payload.get("groups") or {}).items():
        if not g.get("parallel") and name in host.groups:  # no array waiting: the
            g["parallel"] = host.groups[name].parallel       # host file's throttle
    snap = snapshot_from(host.name, payload, opts, sent=len(command.encode()),
                         received=len(result.stdout.encode()))
    return replace(snap, via="slurm")

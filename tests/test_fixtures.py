"""The in-repo copy of the real pueue 4.0.4 outputs is the project's shared fixtures, unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FIXTURES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "pueue"


def test_the_copy_is_complete() -> None:
    for name in ("status-mixed.json", "state-file.json", "default-pueue.yml", "errors.txt",
                 "README.md"):
        assert (FIXTURES / name).is_file(), name


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared beside the repo to compare with")
def test_the_copy_matches_the_shared_fixtures() -> None:
    ours = {p.name: p.read_bytes() for p in FIXTURES.iterdir()}
    theirs = {p.name: p.read_bytes() for p in SHARED.iterdir() if p.is_file()}
    assert sorted(ours) == sorted(theirs)
    assert [n for n in ours if ours[n] != theirs[n]] == []

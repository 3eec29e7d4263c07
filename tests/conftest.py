from __future__ import annotations

from pathlib import Path

import pytest

# CI clones the repo with ../shared beside it: <parent>/shared/fixtures/pueue.
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "pueue"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"pueue fixtures not found at {FIXTURES}: ../shared must sit beside the repo")
    return FIXTURES

"""jobsafe_ops.flags: typed Invoke defaults turn a bad number into exit 2 at parse time, and
the real `inv` shows one line instead of a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from jobsafe_ops.flags import count, number

REPO = Path(__file__).resolve().parents[1]


def test_number_casts_like_float_and_keeps_its_default() -> None:
    default = number("--wait-timeout", 600.0)
    assert default == 600.0
    kind = type(default)
    assert kind("2.5") == 2.5 and isinstance(kind("-1"), float)


@pytest.mark.parametrize("text", ["abc", "", "nan", "inf", "1e300"])
def test_number_refuses_with_exit_2(text: str) -> None:
    kind = type(number("--watch", 300.0))
    with pytest.raises(Exit) as exc:
        kind(text)
    assert exc.value.code == 2
    assert "--watch" in str(exc.value.message) and "e.g. --watch 300" in str(exc.value.message)


@pytest.mark.parametrize("text", ["abc", "1.5", "10000001"])
def test_count_refuses_with_exit_2(text: str) -> None:
    kind = type(count("--retry-budget", 3))
    with pytest.raises(Exit) as exc:
        kind(text)
    assert exc.value.code == 2 and "--retry-budget" in str(exc.value.message)
    assert kind("7") == 7


def test_inv_prints_one_line_and_exits_2() -> None:
    proc = subprocess.run(["inv", "-r", str(REPO), "deploy", "--host", "x", "--wait-timeout",
                           "soon"], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --wait-timeout 'soon' is not a number of seconds; e.g. --wait-timeout 600"]

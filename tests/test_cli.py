"""jobsafe_ops.cli: flag checks and the one-line error (no markup swallowed)."""

from __future__ import annotations

import pytest

from jobsafe_ops import cli
from jobsafe_ops.errors import ConfigError


@pytest.mark.parametrize("value", ["0", "-3", "abc", "1.5"])
def test_positive_int_refuses(value: str) -> None:
    with pytest.raises(ConfigError, match="--ticks must be a positive integer"):
        cli.positive_int(value, "--ticks")


def test_positive_int_accepts_and_passes_none() -> None:
    assert cli.positive_int("12", "--ticks") == 12
    assert cli.positive_int(None, "--ticks") is None


def test_empty_group_is_not_every_group() -> None:
    assert cli.optional_group(None) is None and cli.optional_group("p1") == "p1"
    with pytest.raises(ConfigError, match="leave --group out"):
        cli.optional_group(" ")


def test_error_line_keeps_toml_tables(capsys: pytest.CaptureFixture[str]) -> None:
    cli.print_error(ConfigError("h.toml: group 'x' is not declared; add [groups.x] there"))
    err = capsys.readouterr().err
    assert "add [groups.x] there" in err and err.count("\n") == 1

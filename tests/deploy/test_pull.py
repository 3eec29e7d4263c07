"""jobsafe_ops.deploy.pull: the git facts parser (recorded outputs)."""

from __future__ import annotations

import pytest

from jobsafe_ops.deploy.pull import parse_git_facts
from jobsafe_ops.errors import ConfigError

HEAD = "a" * 40
NEW = "b" * 40


def test_parse_git_facts() -> None:
    text = (f"@@head\n{HEAD}\n@@branch\nmain\n@@changes\n M src/mypkg/__init__.py\n"
            f"@@ref\n{NEW}\n@@end\n")
    g = parse_git_facts(text, "h:~/project")
    assert (g.head, g.branch, g.ref_target) == (HEAD, "main", NEW)
    assert g.changes == (" M src/mypkg/__init__.py",)


def test_not_a_checkout_is_a_config_error() -> None:
    text = "@@head\nfatal: not a git repository (or any of the parent directories): .git\n@@end\n"
    with pytest.raises(ConfigError, match="not a git checkout"):
        parse_git_facts(text, "h:~/project")

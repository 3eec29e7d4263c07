"""The README's layout table is the map of jobsafe_ops/: every package and module it names
exists, and every package, module and data directory of the tree is in it."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "jobsafe_ops"
NAME = re.compile(r"`([^`]+)`")



def layout_rows() -> list[tuple[list[str], list[str]]]:
    """(names in the first column, names in the second) for each row of the table."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("package / module", "---"):
            continue
        rows.append((NAME.findall(cells[0]), NAME.findall(cells[1])))
    return rows


def named() -> set[str]:
    """Every path the table names, relative to jobsafe_ops/ (`pkg/`, `pkg/mod.py`, `mod.py`)."""
    out: set[str] = set()
    for first, modules in layout_rows():
        out.update(first)
        if modules:
            assert len(first) == 1 and first[0].endswith("/"), (first, modules)
            out.update(first[0] + m for m in modules)
    return out


def tree() -> set[str]:
    """The tree: top-level modules, packages and data directories, and each package's
    modules and subdirectories (not `__init__.py`, not caches)."""
    out: set[str] = set()
    for p in PACKAGE.iterdir():
        if p.name.startswith(("_", ".")) or p.suffix == ".typed":
            continue
        if p.is_dir():
            out.add(p.name + "/")
            if (p / "__init__.py").exists():
                for q in p.iterdir():
                    if q.name.startswith(("_", ".")):
                        continue
                    out.add(f"{p.name}/{q.name}" + ("/" if q.is_dir() else ""))
        elif p.suffix == ".py":
            out.add(p.name)
    return out


def exists(name: str) -> bool:
    path = PACKAGE / name.rstrip("/")
    return path.is_dir() if name.endswith("/") else path.is_file()


def test_the_table_is_found_and_names_the_packages() -> None:
    names = named()
    assert {"hostside/", "scheduler/", "deploy/", "batch/", "errors.py"} <= names


def test_every_name_in_the_table_exists() -> None:
    missing = sorted(n for n in named() if not exists(n))
    assert not missing, f"named in the README's layout table, not in jobsafe_ops/: {missing}"



def test_every_package_and_module_is_in_the_table() -> None:
    absent = sorted(tree() - named())
    assert not absent, f"add to the README's layout table: {absent}"

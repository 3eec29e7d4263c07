"""The source a host runs: a hostside module with its `from .X import ...` lines replaced by
X's code, so one file carries the shared model (no second upload, no import path on the
host). The feeder is uploaded bundled to `{batch_dir}/feeder.py` (queued unit tasks call that
path, so its name never changes); the monitor filter is sent bundled to `python3 -c`.

Runs on the laptop; stdlib only like the rest of hostside. A name defined both by a module
and by a module it inlines is refused here: inlining would make one shadow the other.
"""

from __future__ import annotations

import ast
import threading
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
# One bundling at a time: fan-out threads (submit-batch --spread, several hosts) ask for the
# same sources at once, and CPython 3.11's ast.parse is not safe to run concurrently
# ("SystemError: AST constructor recursion depth mismatch"). Re-entrant: inlining recurses.
_LOCK = threading.RLock()


def _defined(tree: ast.Module) -> set[str]:
    """Top-level names a module defines itself (imports excluded)."""
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        out.add(sub.id)
    return out


def _body(name: str, directory: Path) -> tuple[list[str], set[str]]:
    """The lines of module `name` to inline (without its docstring and `__future__` import,
    its own relative imports inlined in turn) and the names it defines."""
    text = bundle(name, directory)
    tree = ast.parse(text)
    skip: set[int] = set()
    for node in tree.body:
        is_doc = (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                  and isinstance(node.value.value, str) and node is tree.body[0])
        if is_doc or (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            skip.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    lines = [ln for n, ln in enumerate(text.splitlines(), 1) if n not in skip]
    return lines, _defined(tree)


def bundle(name: str, directory: Path = HERE) -> str:
    """The self-contained source of `<directory>/<name>.py` (jobsafe_ops/hostside/)."""
    with _LOCK:
        return _bundle(name, directory)


@lru_cache(maxsize=None)  # noqa: UP033 - functools.cache is 3.9+ (hostside: 3.8)
def _bundle(name: str, directory: Path) -> str:
    path = directory / f"{name}.py"
    text = path.read_text()
    tree = ast.parse(text)
    lines = text.splitlines()
    own = _defined(tree)
    inlined: set[str] = set()
    # replace from the bottom up, so earlier line numbers stay valid
    for node in sorted((n for n in tree.body if isinstance(n, ast.ImportFrom) and n.level),
                       key=lambda n: -n.lineno):
        if node.level != 1 or not node.module or "." in node.module:
            raise ValueError(f"{path.name}:{node.lineno}: only `from .module import name` "
                              "can be inlined")
        if any(alias.asname for alias in node.names) or \
                any(alias.name == "*" for alias in node.names):
            raise ValueError(f"{path.name}:{node.lineno}: `as` and `*` cannot be inlined")
        body, names = _body(node.module, directory)
        missing = sorted({a.name for a in node.names} - names)
        if missing:
            raise ValueError(f"{path.name}:{node.lineno}: {node.module}.py does not define "
                              f"{missing[0]}")
        clash = sorted(names & own)
        if clash:
            raise ValueError(f"{path.name}: {clash[0]!r} is defined in {path.name} and in "
                              f"{node.module}.py; inlined, one would shadow the other")
        start, end = node.lineno, node.end_lineno or node.lineno
        if node.module in inlined:
            body = []
        inlined.add(node.module)
        marker = f"# ---- inlined from jobsafe_ops/hostside/{node.module}.py"
        lines[start - 1:end] = [marker, *body, f"# ---- end of {node.module}.py"]
    return "\n".join(lines) + "\n"


def write_bundle(name: str, directory: Path) -> Path:
    """`directory/<name>.py`: the bundled module as a host gets it (tests run it so)."""
    path = Path(directory) / f"{name}.py"
    path.write_text(bundle(name))
    path.chmod(0o755)
    return path

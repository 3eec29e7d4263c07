"""The package's layout holds: no import cycle between its modules, the planner loads without
the SSH transport, jobkit imports nothing outside itself, and the demo needs nothing from tests/.

The import graph is read from the source (ast), not from `sys.modules`: an edge A -> B is an
`import` / `from ... import` in module A that names module B of the package. "Module level" is
every import outside a function body (including `if TYPE_CHECKING:` blocks: a cycle there is
still a cycle in the design, and breaks as soon as one of them is needed at run time).
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import jobsafe_ops

PACKAGE = Path(jobsafe_ops.__file__).resolve().parent
Graph = dict[str, dict[str, int]]  # module -> {imported module: line of the first import}


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    names: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        names[".".join(parts)] = path
    return names


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, with whether it sits inside a function body."""
    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom,
                                                                    bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            yield from walk(child, in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
    yield from walk(tree, False)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             known: set[str]) -> Iterator[str]:
    """The package's modules one import statement loads (the deepest one named)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                yield name
        return
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join([*base, *([node.module] if node.module else [])])
    else:
        source = node.module or ""
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        if submodule in known:
            yield submodule
        elif source in known:
            yield source


def import_graph(root: Path = PACKAGE) -> tuple[Graph, Graph]:
    """(module-level edges, function-level edges) between the package's modules."""
    names = module_names(root)
    known = set(names)
    top: Graph = {name: {} for name in names}
    lazy: Graph = {name: {} for name in names}
    for name, path in names.items():
        tree = ast.parse(path.read_text(), str(path))
        for node, in_function in _imports(tree):
            for target in _targets(node, name, path.name == "__init__.py", known):
                if target != name:
                    (lazy if in_function else top)[name].setdefault(target, node.lineno)
    return top, lazy


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle (a path back to its start) per strongly connected component of more than
    one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: Graph, component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    return [*paths[v], start]
                if w in component and w not in paths:
                    paths[w] = [*paths[v], w]
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def describe(graph: Graph, cycle: list[str], lazy: Graph | None = None) -> str:
    steps = [f"  a cycle among {', '.join(sorted(_component(graph, cycle[0])))}:"]
    for a, b in zip(cycle, cycle[1:], strict=False):
        where = "module level" if b in graph.get(a, {}) and (lazy is None or b not in
                                                             lazy.get(a, {})) else "in a function"
        line = graph[a][b] if b in graph.get(a, {}) else (lazy or {})[a][b]
        steps.append(f"  {a} -> {b}   ({names_path(a)}:{line}, {where})")
    return "\n".join(steps)


def _component(graph: Graph, start: str) -> set[str]:
    """The modules reachable from `start` that reach it back."""
    def reach(edges: Graph) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for w in edges.get(todo.pop(), {}):
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return seen

    reverse: Graph = {}
    for v, ws in graph.items():
        for w in ws:
            reverse.setdefault(w, {})[v] = 0
    return reach(graph) & reach(reverse)


def names_path(module: str) -> str:
    return str(module_names()[module].relative_to(PACKAGE.parent))


def merged(top: Graph, lazy: Graph) -> Graph:
    both: Graph = {v: dict(edges) for v, edges in top.items()}
    for v, edges in lazy.items():
        for w, line in edges.items():
            both[v].setdefault(w, line)
    return both


def test_the_graph_reader_sees_a_cycle_and_where_it_is(tmp_path: Path) -> None:
    """The check below can fail: a cycle through a TYPE_CHECKING import, a relative
    `from . import x` and a package-relative import is found and each edge is located."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import c\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from pkg.a import X\n")
    (pkg / "d.py").write_text("def f():\n    from . import a\n")
    (pkg / "e.py").write_text("from .d import f\n")
    top, lazy = import_graph(pkg)
    assert cycles(top) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    assert top["pkg.c"] == {"pkg.a": 3}
    assert lazy["pkg.d"] == {"pkg.a": 2}
    assert cycles(merged(top, lazy)) == cycles(top)  # d -> a is lazy but closes no cycle


def test_no_import_cycle_between_modules() -> None:
    top, lazy = import_graph()
    assert len(top) > 40 and sum(map(len, top.values())) > 100  # the real package was read
    found = cycles(top)
    assert not found, "import cycles (module level):\n" + "\n\n".join(
        describe(top, c) for c in found)


# Cycles closed only by imports inside functions, in modules outside the layout change
# (their owners move the function named): reported on every run, and the list may only
# shrink. Anything else in the combined graph fails the test below.
KNOWN_LAZY_CYCLES: set[frozenset[str]] = set()


def test_no_import_cycle_even_through_imports_in_functions() -> None:
    """A lazy import hides a cycle from Python, not from the reader: none but the known
    ones, each reported."""
    top, lazy = import_graph()
    both = merged(top, lazy)
    found = cycles(both)
    components = {frozenset(_component(both, c[0])) for c in found}
    new = [c for c in found if frozenset(_component(both, c[0])) not in KNOWN_LAZY_CYCLES]
    assert not new, "import cycles through imports inside functions:\n" + "\n\n".join(
        describe(both, c, lazy) for c in new)
    for c in found:
        warnings.warn("known import cycle through a function-level import:\n"
                      + describe(both, c, lazy), stacklevel=1)
    assert KNOWN_LAZY_CYCLES <= components, (
        f"fixed: {sorted(map(sorted, KNOWN_LAZY_CYCLES - components))}; "
        "drop it from KNOWN_LAZY_CYCLES")


def _run_isolated(code: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *extra, "-c", textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


def test_the_planner_loads_without_the_ssh_transport() -> None:
    """Loading a playbook and planning a batch is pure: the planner composes its lines with
    shell.py and never loads the SSH transport (remote.py reads the SSH settings at import)
    nor paramiko, fabric, invoke or tenacity."""
    proc = _run_isolated("""
        import sys
        import jobsafe_ops.batch.playbook, jobsafe_ops.batch.plan, jobsafe_ops.batch.model
        import jobsafe_ops.batch.templates, jobsafe_ops.batch.invariants, jobsafe_ops.shell
        import jobsafe_ops.batch.retry, jobsafe_ops.secrecy
        heavy = ("paramiko", "fabric", "invoke", "tenacity", "rich", "jobsafe_ops.remote",
                 "jobsafe_ops.sshconf")
        print(" ".join(sorted(m for m in heavy if m in sys.modules)) or "-")
        print(" ".join(sorted(m for m in sys.modules if m.startswith("jobsafe_ops."))))
        """, PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr
    heavy, ours = proc.stdout.splitlines()
    assert heavy == "-", f"loading the planner loads {heavy}"
    assert "jobsafe_ops.batch.plan" in ours.split()  # the check ran in the right tree


def test_jobkit_imports_nothing_outside_itself(tmp_path: Path) -> None:
    """jobkit runs in the job's venv with the stdlib only: a copy of it alone, in an
    isolated interpreter that cannot see jobsafe_ops or any installed package, imports and
    raises its own errors."""
    shutil.copytree(PACKAGE / "jobkit", tmp_path / "jobkit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    proc = _run_isolated("""
        import sys
        sys.path.insert(0, ".")  # -I -S: the stdlib and this copy, nothing installed
        import jobkit
        outside = sorted(m for m in sys.modules
                         if m.startswith("jobsafe_ops") or m.split(".")[0] in
                         ("rich", "invoke", "fabric", "paramiko", "tenacity"))
        assert not outside, outside
        try:
            jobkit.CheckpointSpec(".", "bars", params=("sym bol",))
        except ValueError as exc:
            assert isinstance(exc, jobkit.JobkitError)
            print(type(exc).__name__, exc.exit_code)
        """, tmp_path, "-I", "-S")
    assert proc.returncode == 0, proc.stderr
    name, code = proc.stdout.split()
    assert name == "ParamError" and code == "2"


def test_jobkit_errors_keep_the_exit_codes_of_the_package() -> None:
    """jobkit has its own error classes; its exit codes stay the package's (a jobkit error
    surfaces through the same exit-code table)."""
    from jobsafe_ops import errors
    from jobsafe_ops.jobkit import errors as jobkit_errors

    assert jobkit_errors.EXIT_BAD_INPUT == errors.EXIT_BAD_INPUT
    assert jobkit_errors.EXIT_REFUSED == errors.EXIT_REFUSED
    assert jobkit_errors.EXIT_FAILED == errors.EXIT_FAILED


def test_the_demo_runs_nothing_from_tests() -> None:
    """`jobsafe demo` runs from an installed wheel: it imports the test world from
    jobsafe_ops.testing, never reads or executes a file under tests/."""
    demo = PACKAGE / "demo.py"
    tree = ast.parse(demo.read_text())
    calls = {n.func.id for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not calls & {"exec", "eval", "compile", "__import__"}
    imported = {node.module for node, _ in _imports(tree) if isinstance(node, ast.ImportFrom)}
    assert "runpy" not in imported and "importlib" not in imported
    assert "testing.world" in imported  # `from .testing.world import ...`
    strings = [n.value for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert not [s for s in strings if s == "tests" or s.startswith(("tests/", "tests."))]
    top, lazy = import_graph()
    assert "jobsafe_ops.testing.world" in lazy["jobsafe_ops.demo"]


TREE_LINE = re.compile(r"^(?P<indent>(?:[│ ]   )*)(?:[├└]── )?(?P<name>\w+)\b[ .]*(?P<code>\d|-)?")


def drawn_tree(doc: str) -> dict[str, tuple[str, str | None]]:
    """errors.py's drawing: class -> (its parent in the drawing, the exit code drawn)."""
    parents: list[str] = []
    drawn: dict[str, tuple[str, str | None]] = {}
    lines = doc[doc.index("\nException\n") + 1:doc.index("\n\n", doc.index("\nValueError\n") + 1)]
    for line in lines.splitlines():
        m = TREE_LINE.match(line)
        if not line.strip() or m is None:
            continue
        depth = len(m["indent"]) // 4 + (1 if "──" in line else 0)
        parents[depth:] = [m["name"]]
        if depth:
            drawn[m["name"]] = (parents[depth - 1], m["code"])
    return drawn


def test_every_error_class_lives_in_errors_py_and_the_drawn_tree_is_the_real_one() -> None:
    from jobsafe_ops import errors
    from jobsafe_ops.jobkit import errors as jobkit_errors

    defined: dict[str, type[BaseException]] = {}
    elsewhere = []
    for name in module_names():
        if name.startswith(("jobsafe_ops.testing", "jobsafe_ops.hostside")):
            continue  # the test world and the stand-in; programs run on the host (stdlib)
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseException) and \
                    obj.__module__ == name:
                defined[obj.__name__] = obj
                if name not in ("jobsafe_ops.errors", "jobsafe_ops.jobkit.errors"):
                    elsewhere.append(f"{name}.{obj.__name__}")
    assert not elsewhere, f"error classes outside errors.py: {elsewhere}; move them there"
    assert {"ConnectionDropped", "StepFailed", "ParamError"} <= set(defined)

    assert errors.__doc__ is not None
    drawn = drawn_tree(errors.__doc__)
    assert set(drawn) == set(defined), (
        f"not drawn: {sorted(set(defined) - set(drawn))}; "
        f"drawn but not defined: {sorted(set(drawn) - set(defined))}")
    for name, (parent, code) in drawn.items():
        cls = defined[name]
        assert cls.__bases__[0].__name__ == parent, f"{name} is drawn under {parent}"
        if code and code != "-":
            assert getattr(cls, "exit_code", None) == int(code), f"{name}: exit {code}?"
        else:
            assert "exit_code" not in vars(cls) or name == "StepFailed", name
    assert jobkit_errors.JobkitError.__bases__ == (ValueError,)

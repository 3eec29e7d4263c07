"""hostside/ runs on hosts: every module is stdlib-only Python >= 3.8 and imports nothing
outside hostside; what is sent (the bundled feeder and filter) is one self-contained file."""

from __future__ import annotations

import ast
import base64
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from jobsafe_ops.facts.snapshot import FILTER_LOADER, FILTER_SOURCE
from jobsafe_ops.hostside import bundle as bundle_mod
from jobsafe_ops.hostside.bundle import HERE, bundle, write_bundle

MODULES = sorted(HERE.glob("*.py"))


def imports(tree: ast.AST) -> list[tuple[int, str, int]]:
    """(level, module, line) of every import anywhere in the tree (function bodies too)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(0, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is None:  # from . import x
            out += [(node.level, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.level, node.module, node.lineno))
    return out


def test_every_hostside_module_is_python38_stdlib_and_self_contained() -> None:
    assert {p.stem for p in MODULES} >= {"feeder", "monitor_filter", "model", "health",
                                         "bundle"}
    own = {p.stem for p in MODULES}
    for path in MODULES:
        tree = ast.parse(path.read_text(), str(path), feature_version=(3, 8))
        for level, module, line in imports(tree):
            where = f"{path.name}:{line}"
            if level:
                assert level == 1 and module.split(".")[0] in own, \
                    f"{where}: imports {'.' * level}{module}, outside hostside"
            else:
                top = module.split(".")[0]
                # `import feeder`: a sibling uploaded into the same batch dir on the host
                assert top == "__future__" or top in sys.stdlib_module_names or \
                    (path.stem == "slurm_feed" and module == "feeder"), \
                    f"{where}: imports {module}, not in the standard library"


def test_the_rule_catches_an_outside_import() -> None:
    """The walk above sees imports inside functions too (where a lazy one would hide)."""
    tree = ast.parse("def f():\n    from ..errors import ConfigError\n    import fabric\n")
    assert [(lv, m) for lv, m, _ in imports(tree)] == [(2, "errors"), (0, "fabric")]
    with pytest.raises(SyntaxError):  # a 3.10 `match` would not run on a 3.8 host
        ast.parse("match x:\n    case 1:\n        pass\n", feature_version=(3, 8))


@pytest.mark.parametrize("name", ["feeder", "monitor_filter"])
def test_what_is_sent_is_one_file_with_the_model_inlined(name: str) -> None:
    text = bundle(name)
    tree = ast.parse(text, feature_version=(3, 8))
    assert [m for lv, m, _ in imports(tree) if lv] == []  # nothing left to import on the host
    defined = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    for shared in ("task_status", "blocked_ids", "base_label", "attempt_of", "add_words"):
        assert defined.count(shared) == 1, shared  # inlined once, defined nowhere else
    assert text.count("from __future__ import annotations") == 1
    assert text.startswith("#!/usr/bin/env python3\n" if name == "feeder" else '"""')


def test_the_bundled_feeder_runs_alone(tmp_path: Path) -> None:
    """As on a host: one file in the batch directory, no jobsafe_ops beside it."""
    path = write_bundle("feeder", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feeder.py"]
    proc = subprocess.run([sys.executable, "-I", str(path), "--help"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "{feed,unit,run}" in proc.stdout
    # the unbundled source cannot run there: that is why it is never uploaded as is
    raw = tmp_path / "raw.py"
    raw.write_text((HERE / "feeder.py").read_text())
    proc = subprocess.run([sys.executable, "-I", str(raw), "--help"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "ImportError" in proc.stderr


def test_the_filter_sent_to_python3_dash_c_is_the_bundle(tmp_path: Path) -> None:
    encoded = FILTER_LOADER.split("b64decode('")[1].split("')")[0]
    assert zlib.decompress(base64.b64decode(encoded)).decode() == FILTER_SOURCE
    assert FILTER_SOURCE == bundle("monitor_filter")
    proc = subprocess.run([sys.executable, "-I", "-c", FILTER_LOADER, "ledger", "--root",
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '{"records":[]}'


def test_bundle_refuses_what_it_cannot_inline(tmp_path: Path) -> None:
    (tmp_path / "shared.py").write_text('"""doc"""\nfrom __future__ import annotations\n'
                                        "LIMIT = 3\n\n\ndef helper():\n    return LIMIT\n")
    (tmp_path / "ok.py").write_text('"""doc"""\nfrom __future__ import annotations\n\n'
                                    "from .shared import helper\n\nprint(helper())\n")
    text = bundle_mod.bundle("ok", tmp_path)
    assert subprocess.run([sys.executable, "-c", text], capture_output=True,
                          text=True).stdout == "3\n"
    cases = {
        "clash.py": ("from .shared import helper\nLIMIT = 4\n", "'LIMIT' is defined in"),
        "alias.py": ("from .shared import helper as h\n", "`as` and `*`"),
        "absent.py": ("from .shared import nothing\n", "does not define nothing"),
    }
    for file, (source, message) in cases.items():
        (tmp_path / file).write_text(source)
        with pytest.raises(ValueError, match=message):
            bundle_mod.bundle(file[:-3], tmp_path)

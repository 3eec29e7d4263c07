"""Python checks for `inv lint`, over the AST (never by running the code).

What counts as what, decided here:
* a deletion is `X.unlink(...)`, `os.remove(X)`, `os.unlink(X)` (and `shutil.rmtree(X)` for
  the glob and cursor rules); it is *safe* with `missing_ok=True` or inside a `try` that
  catches FileNotFoundError/OSError, or `with suppress(FileNotFoundError)`.
* check-then-delete: an `if` (or `and`) testing `X.exists()`/`is_file()`/
  `os.path.exists(X)`/`isfile`/`lexists` around an unsafe deletion of the same `X`
  (reported at the check, instead of delete-without-missing-ok).
* a checkpoint-looking write is `open(X, "w"|"x"...)`, `X.open("w")`, `X.write_text/bytes`
  where X's source says checkpoint|ckpt|cursor|state|progress|resume (or the enclosing
  function is a saver: save_checkpoint, write_state...) and not tmp/temp/partial; it is
  atomic when the same function (or module) also calls `os.replace`/`os.rename`/
  `Path.replace`/`Path.rename`/`shutil.move` - the mkstemp + fsync + os.replace pattern
  of INV-4.
* a glob is unscoped when its file name is a data artifact's (parquet, csv, json, chunk...:
  rules.ARTIFACT) and nothing interpolated comes before the first wildcard of its file
  name (`"*.parquet"`, `"_chunk_*.parquet"`, `f"{out}/*.json"`); `f"_chunk_{d}_*.parquet"`,
  `f"{out}/{phase}/*.json"` and `(out / phase).glob("*.json")` are scoped. A literal
  category (`"long_*.json"`) cannot be told from a generic prefix: spell it through a
  variable or suppress with a reason. It is reported only when its result (directly, via
  a variable, a loop or a comprehension) reaches a deletion or a concat/merge/read_* call.
* a cursor is deleted "on success" when the deletion sits after a `for`/`while` loop in the
  same block, in the `else`/`finally` of a `try` or the `else` of a loop, or under an `if`
  whose test says done/complete/success/ok; never when under an `except`, or an `if` that
  says force/refresh/reset/fresh/corrupt/stale/clean/error/fail.
* command strings (constants, f-strings, argv lists that mention pueue, systemd-run or
  ssh; docstrings excluded) go through the shell checks; a loop around a call whose strings
  say `ssh ... pueue add` (or `<conn>.run("pueue add ...")`, Fabric) is ssh-per-job.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from .rules import (
    ARTIFACT,
    CURSORISH,
    MERGE_WORDS,
    RESET_WORDS,
    STATEISH,
    SUCCESS_WORDS,
    TMPISH,
    Finding,
    finding,
)
from .shell import lint_command

_Parents = dict[ast.AST, tuple[ast.AST, str]]
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_EXISTS_METHODS = {"exists", "is_file", "is_symlink"}
_EXISTS_FUNCS = {"os.path.exists", "os.path.isfile", "os.path.lexists", "os.access"}
# A function that saves state: save_checkpoint, write_state, dump_progress (not
# run_resumable_job, whose other writes are outputs).
_SAVER = re.compile(r"(?i)^_*(save|write|store|dump|persist|flush|commit)_?\w*"
                    r"(checkpoint|ckpt|cursor|state|progress)")
_DELETE_FN = re.compile(r"(?i)^(delete|remove|clear|drop|clean|unlink|rm|wipe)_?")


def lint_python(file: str, text: str) -> list[Finding]:
    """Every Python rule over one module (raises SyntaxError for the driver to report)."""
    tree = ast.parse(text)
    parents: _Parents = {}
    for node in ast.walk(tree):
        for name, value in ast.iter_fields(node):
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, ast.AST):
                    parents[child] = (node, name)
    out: list[Finding] = []
    covered = _check_then_delete(file, tree, parents, out)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    for call in calls:
        _unsafe_delete(file, call, parents, covered, out)
        _write(file, call, parents, tree, out)
        _cursor_delete(file, call, parents, out)
    _globs(file, tree, calls, parents, out)
    _task_ids(file, tree, out)
    _command_strings(file, text, tree, out)
    _ssh_loops(file, tree, out)
    return sorted(set(out), key=lambda f: (f.line, f.col, f.rule))


def _at(file: str, node: ast.expr | ast.stmt, rule: str, message: str) -> Finding:
    return finding(file, node.lineno, rule, message, node.col_offset + 1)


def _name(e: ast.AST) -> str:
    try:
        return ast.unparse(e)
    except Exception:  # noqa: BLE001 - unparse of odd nodes: no name, no match
        return ""


def _delete_target(call: ast.Call) -> tuple[ast.expr, str] | None:
    f = call.func
    if isinstance(f, ast.Attribute):
        owner = _name(f.value)
        if f.attr in ("remove", "unlink") and owner == "os" and call.args:
            return call.args[0], "os"
        if f.attr == "rmtree" and owner == "shutil" and call.args:
            return call.args[0], "rmtree"
        if f.attr == "unlink" and owner != "os":
            return f.value, "path"
    return None


def _is_safe_delete(call: ast.Call, kind: str, parents: _Parents) -> bool:
    if kind == "path":
        if any(k.arg == "missing_ok" and not (isinstance(k.value, ast.Constant)
                                               and k.value.value is False)
               for k in call.keywords):
            return True
        if call.args and isinstance(call.args[0], ast.Constant) and call.args[0].value:
            return True
    if kind == "rmtree" and any(k.arg == "ignore_errors" for k in call.keywords):
        return True
    return _guarded(call, parents)


def _guarded(node: ast.AST, parents: _Parents) -> bool:
    """Inside `try: ... except FileNotFoundError/OSError` or `with suppress(...)`."""
    catch = re.compile(r"FileNotFoundError|OSError|Exception|IOError")
    child = node
    while child in parents:
        parent, fld = parents[child]
        if isinstance(parent, ast.Try) and fld == "body":
            for h in parent.handlers:
                if h.type is None or catch.search(_name(h.type)):
                    return True
        if isinstance(parent, ast.With):
            if any("suppress" in _name(i.context_expr) and catch.search(_name(i.context_expr))
                   for i in parent.items):
                return True
        child = parent
    return False


def _checked_paths(test: ast.AST) -> set[str]:
    out = set()
    for n in ast.walk(test):
        if isinstance(n, ast.Call):
            f = n.func
            if _name(f) in _EXISTS_FUNCS:
                if n.args:
                    out.add(_name(n.args[0]))
            elif isinstance(f, ast.Attribute) and f.attr in _EXISTS_METHODS:
                out.add(_name(f.value))
    return out


def _check_then_delete(file: str, tree: ast.AST, parents: _Parents,
                       out: list[Finding]) -> set[ast.Call]:
    covered: set[ast.Call] = set()
    for node in ast.walk(tree):
        body: list[ast.AST]
        if isinstance(node, ast.If):
            test, body = node.test, list(node.body)
        elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
            test, body = node.values[0], list(node.values[1:])
        else:
            continue
        checked = _checked_paths(test)
        if not checked:
            continue
        for call in (n for b in body for n in ast.walk(b) if isinstance(n, ast.Call)):
            d = _delete_target(call)
            if d and d[1] != "rmtree" and _name(d[0]) in checked \
                    and not _is_safe_delete(call, d[1], parents):
                covered.add(call)
                out.append(_at(file, node, "check-then-delete",
                                   f"checks {_name(d[0])} exists, then deletes it"))
    return covered


def _unsafe_delete(file: str, call: ast.Call, parents: _Parents, covered: set[ast.Call],
                   out: list[Finding]) -> None:
    d = _delete_target(call)
    if d is None or d[1] == "rmtree" or call in covered or _is_safe_delete(call, d[1], parents):
        return
    what = f"{_name(d[0])}.unlink()" if d[1] == "path" else f"os.remove({_name(d[0])})"
    out.append(_at(file, call, "delete-without-missing-ok",
                       f"{what} raises FileNotFoundError when it is already gone"))


def _scope(node: ast.AST, parents: _Parents) -> ast.AST:
    while node in parents and not isinstance(node, _SCOPES):
        node = parents[node][0]
    return node


def _renames(scope: ast.AST) -> bool:
    for n in ast.walk(scope):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            owner, attr = _name(n.func.value), n.func.attr
            if owner in ("os", "shutil") and attr in ("replace", "rename", "move"):
                return True
            if attr in ("replace", "rename") and len(n.args) == 1:  # Path.replace(target)
                return True
    return False


def _write_target(call: ast.Call) -> ast.expr | None:
    f = call.func

    def mode(pos: int) -> str:
        m = next((k.value for k in call.keywords if k.arg == "mode"),
                 call.args[pos] if len(call.args) > pos else None)
        return m.value if isinstance(m, ast.Constant) and isinstance(m.value, str) else ""

    if _name(f) in ("open", "io.open") and call.args and set(mode(1)) & set("wx"):
        return call.args[0]
    if isinstance(f, ast.Attribute):
        if f.attr == "open" and _name(f.value) not in ("io", "os") and set(mode(0)) & set("wx"):
            return f.value
        if f.attr in ("write_text", "write_bytes"):
            return f.value
    return None


def _write(file: str, call: ast.Call, parents: _Parents, tree: ast.AST,
           out: list[Finding]) -> None:
    target = _write_target(call)
    if target is None:
        return
    text = _name(target)
    scope = _scope(call, parents)
    fn = scope.name if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef) else ""
    if not (STATEISH.search(text) or _SAVER.search(fn)) or TMPISH.search(text):
        return
    if _renames(scope):
        return
    out.append(_at(file, call, "non-atomic-checkpoint-write",
                       f"writes {text} in place (a kill mid-write leaves it torn)"))


def _cursor_delete(file: str, call: ast.Call, parents: _Parents, out: list[Finding]) -> None:
    d = _delete_target(call)
    fn = _name(call.func).rsplit(".", 1)[-1]
    if d is not None:
        what = _name(d[0])
    elif _DELETE_FN.match(fn) and CURSORISH.search(fn):
        what = fn
    else:
        return
    if not CURSORISH.search(what) or TMPISH.search(what) or not _on_success(call, parents):
        return
    out.append(_at(file, call, "cursor-deleted-on-success",
                       f"deletes {what} after the work succeeded"))


def _on_success(node: ast.AST, parents: _Parents) -> bool:
    child = node
    while child in parents:
        parent, fld = parents[child]
        if isinstance(parent, ast.ExceptHandler):
            return False
        if isinstance(parent, ast.If):
            test = _name(parent.test)
            if fld == "body" and (RESET_WORDS.search(test) or test.startswith("not ")):
                return False
            if SUCCESS_WORDS.search(test):
                return fld == "body"
        if isinstance(parent, ast.Try) and fld in ("orelse", "finalbody"):
            return True
        if isinstance(parent, _LOOPS) and fld == "orelse":
            return True
        siblings = getattr(parent, fld, None)
        if isinstance(siblings, list) and child in siblings:
            if any(isinstance(s, _LOOPS) for s in siblings[:siblings.index(child)]):
                return True
        if isinstance(parent, _SCOPES):
            return False
        child = parent
    return False


# ---- unscoped globs feeding a delete or a merge (INV-9, AP-17) ---------------------------

def _shape(e: ast.AST) -> str:
    """The pattern with every interpolated part replaced by NUL."""
    if isinstance(e, ast.Constant) and isinstance(e.value, str):
        return e.value
    if isinstance(e, ast.JoinedStr):
        return "".join(str(v.value) if isinstance(v, ast.Constant) else "\0" for v in e.values)
    if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add):
        return _shape(e.left) + _shape(e.right)
    if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Div):
        return _shape(e.left) + "/" + _shape(e.right)
    if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Mod) and isinstance(e.left,
                                                                             ast.Constant):
        return re.sub(r"%[-0-9.]*[sdrif]", "\0", str(e.left.value))
    if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute):
        if e.func.attr == "format" and isinstance(e.func.value, ast.Constant):
            return re.sub(r"\{[^}]*\}", "\0", str(e.func.value.value))
        if _name(e.func) == "os.path.join":
            return "/".join(_shape(a) for a in e.args)
    return "\0"


def unscoped_shape(shape: str) -> bool:
    """NUL-marked pattern: nothing variable before the file name's first wildcard, and no
    variable directory below the base one."""
    if not re.search(r"[*?]", shape):
        return False
    head, _, base = shape.rpartition("/")
    if not ARTIFACT.search(base):  # `*.pyc`, `*.log`, `*.tmp`: cleanup, not a phase's data
        return False
    if "\0" in re.split(r"[*?\[]", base, maxsplit=1)[0]:
        return False
    return not any("\0" in part for part in head.split("/")[1:])


def _glob_pattern(call: ast.Call) -> str | None:
    f = call.func
    if not call.args:
        return None
    pat = call.args[0]
    if not isinstance(pat, ast.Constant | ast.JoinedStr | ast.BinOp | ast.Call):
        return None  # a variable pattern: cannot judge
    if isinstance(f, ast.Name) and f.id in ("glob", "iglob"):
        return _shape(pat)
    if isinstance(f, ast.Attribute) and f.attr in ("glob", "iglob", "rglob"):
        if _name(f.value) == "glob":
            return _shape(pat)
        recv = f.value
        while isinstance(recv, ast.BinOp) and isinstance(recv.op, ast.Div):
            if not isinstance(recv.right, ast.Constant):
                return None  # (out / phase).glob(...): a per-category directory
            recv = recv.left
        return _shape(pat)
    return None


def _targets(t: ast.AST) -> Iterator[str]:
    for n in ast.walk(t):
        if isinstance(n, ast.Name):
            yield n.id


def _globs(file: str, tree: ast.AST, calls: list[ast.Call], parents: _Parents,
           out: list[Finding]) -> None:
    """Taint by (function, variable name): a name assigned from, or looping over, an
    unscoped glob (or another tainted name) carries that glob to its sinks."""
    unscoped = {c: p for c in calls if (p := _glob_pattern(c)) is not None
                and unscoped_shape(p)}
    if not unscoped:
        return
    tainted: dict[tuple[int, str], set[ast.Call]] = {}

    def origins(e: ast.AST) -> set[ast.Call]:
        scope = id(_scope(e, parents))
        found: set[ast.Call] = set()
        for n in ast.walk(e):
            if isinstance(n, ast.Call) and n in unscoped:
                found.add(n)
            elif isinstance(n, ast.Name):
                found |= tainted.get((scope, n.id), set())
        return found

    flows: list[tuple[ast.AST, ast.AST]] = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign):
            flows += [(t, n.value) for t in n.targets]
        elif isinstance(n, ast.AnnAssign | ast.AugAssign | ast.NamedExpr) and n.value:
            flows.append((n.target, n.value))
        elif isinstance(n, ast.For | ast.AsyncFor):
            flows.append((n.target, n.iter))
        elif isinstance(n, ast.comprehension):
            flows.append((n.target, n.iter))
    changed = True
    while changed:
        changed = False
        for target, value in flows:
            found = origins(value)
            scope = id(_scope(value, parents))
            for name in _targets(target) if found else ():
                have = tainted.setdefault((scope, name), set())
                if not found <= have:
                    have |= found
                    changed = True
    hits: dict[ast.Call, dict[str, None]] = {}
    for c in calls:
        d = _delete_target(c)
        fname = _name(c.func)
        if d:
            sources, sink = origins(d[0]), fname.rsplit(".", 1)[-1] + "()"
        elif MERGE_WORDS.search(fname):
            sources, sink = set(), fname + "()"
            for a in [*c.args, *(k.value for k in c.keywords)]:
                sources |= origins(a)
        elif fname == "map" and len(c.args) == 2 and re.search(r"remove|unlink|rmtree",
                                                                 _name(c.args[0])):
            sources, sink = origins(c.args[1]), _name(c.args[0])
        else:
            continue
        for o in sources:
            hits.setdefault(o, {})[sink] = None
    for call, sinks in hits.items():
        pattern = unscoped[call].replace("\0", "{...}")
        out.append(_at(file, call, "unscoped-glob-delete",
                           f"glob {pattern!r} spans every category and feeds "
                           f"{', '.join(sinks)}"))


# ---- ids, command strings, per-job SSH ---------------------------------------------------

def _task_ids(file: str, tree: ast.AST, out: list[Finding]) -> None:
    for n in ast.walk(tree):
        if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant):
            key = str(n.slice.value)
            owner = _name(n.value)
            if key.isdigit() and re.search(r"tasks['\"]?\]?$", owner):
                out.append(_at(file, n, "hardcoded-task-id",
                                   f"{owner}[{key!r}] picks a pueue task by literal id"))


def _flat(e: ast.AST) -> str:
    """The string content of an expression: constants, f-strings (values as X), lists."""
    if isinstance(e, ast.Constant) and isinstance(e.value, str):
        return e.value
    if isinstance(e, ast.JoinedStr):
        return "".join(str(v.value) if isinstance(v, ast.Constant) else "X" for v in e.values)
    if isinstance(e, ast.List | ast.Tuple):
        return " ".join(_flat(x) or "X" for x in e.elts)
    return ""


# A string that *is* a command (starts like one, or chains into pueue), not prose that
# mentions one: "a literal pueue task id" is not linted, "cd {p} && pueue add" is.
_COMMANDISH = re.compile(r"(?m)^\s*(?:\S*/)?(?:pueue|ssh|systemd-run|env|sudo|nohup|timeout|cd)"
                         r"\s|(?:&&|;|\|)\s*(?:\S*/)?pueue\s")
_SBATCH = re.compile(r"(?:^|[\s/])sbatch(?:\s|$)")
_PUEUE_ADD = re.compile(r"\bpueue\s+(?:-\S+\s+)*add\b")


def _command_strings(file: str, text: str, tree: ast.AST, out: list[Finding]) -> None:
    docstrings = {id(n.value) for n in ast.walk(tree)
                  if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant | ast.JoinedStr)}
    inside: set[int] = set()
    for n in ast.walk(tree):
        if id(n) in docstrings or id(n) in inside:
            continue
        if isinstance(n, ast.List | ast.Tuple | ast.JoinedStr | ast.Constant):
            s = _flat(n)
            if s and _COMMANDISH.search(s):
                out.extend(lint_command(file, n.lineno, n.col_offset + 1, s, text))
                inside.update(id(x) for x in ast.walk(n))


def _ssh_loops(file: str, tree: ast.AST, out: list[Finding]) -> None:
    seen: set[int] = set()
    for loop in (n for n in ast.walk(tree) if isinstance(n, _LOOPS)):
        for call in (c for s in loop.body for c in ast.walk(s) if isinstance(c, ast.Call)):
            flat = " ".join(_flat(a) for a in [*call.args, *(k.value for k in call.keywords)])
            if id(call) not in seen and _SBATCH.search(flat) and "--array" not in flat:
                seen.add(id(call))
                out.append(finding(file, call.lineno, "sbatch-per-job",
                                   "one `sbatch` per loop pass (use one job array)"))
                continue
            if id(call) in seen or not _PUEUE_ADD.search(flat):
                continue
            f = call.func
            fabric = (isinstance(f, ast.Attribute) and f.attr in ("run", "sudo")
                      and _name(f.value) != "subprocess")
            if re.search(r"(?:^|\s)ssh\s", flat) or fabric:
                seen.add(id(call))
                out.append(_at(file, call, "ssh-per-job",
                                   "one remote `pueue add` per loop pass"))

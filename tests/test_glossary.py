"""docs/glossary.md defines every rule code (INV-n, AP-n, G-n) the package, the tasks, the
README and the examples cite, in one numbering; and none of them points a reader to a
document that is not in the repo."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GLOSSARY = REPO / "docs" / "glossary.md"
CODE = re.compile(r"\b(INV|AP|G)-(\d+)\b")
ROW = re.compile(r"^\| ((?:INV|AP|G)-\d+) \| ([^|]+) \| (.+) \|$", re.M)

# documents of the project's authors that are not in the repo (a reader cannot follow them)
OUTSIDE = {
    "SKILL.md / SKILL n": re.compile(r"\bSKILL(?:\.md|\s+\d)"),
    "REQUIREMENTS": re.compile(r"\bREQUIREMENTS\b"),
    "DESIGN/STYLE/SLURM/LAYOUT-PLAN": re.compile(
        r"\b(?:DESIGN|STYLE|SLURM|LAYOUT-PLAN)(?:\.md|\s+\d|:)"),
    "a document under ../shared": re.compile(r"\.\./shared/\S*\.md"),
    "a section sign": re.compile(r"§\s*\d"),
    "the skill": re.compile(r"\bthe skill\b|\bskill's\b", re.I),
    "the other invariant numbering": re.compile(r"\breference[- ](?:file|INV)", re.I),
}

# a word that names an invariant: next to a code it must be that code (the other numbering
# put "atomic" on INV-3 and "idempotent" on INV-2)
NAMES = {"verify": 2, "idempotent": 3, "atomic": 4, "parallelism": 6, "stable": 8}


def sources() -> list[Path]:
    """The texts whose codes must be defined: the package (code, schemas, shipped data),
    both tasks.py, the README, the examples."""
    files = [REPO / "tasks.py", REPO / "README.md"]
    for top in ("jobsafe_ops", "examples"):
        files += [p for p in sorted((REPO / top).rglob("*"))
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return [p for p in files if p.exists()]


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def definitions() -> dict[str, tuple[str, str]]:
    rows = ROW.findall(text(GLOSSARY))
    codes = [code for code, _, _ in rows]
    assert len(codes) == len(set(codes)), "a code is defined twice"
    return {code: (name.strip(), meaning.strip()) for code, name, meaning in rows}


def used() -> dict[str, set[str]]:
    """code -> the files (relative) that cite it."""
    out: dict[str, set[str]] = {}
    for path in sources():
        for m in CODE.finditer(text(path)):
            out.setdefault(m.group(0), set()).add(str(path.relative_to(REPO)))
    return out


def test_the_glossary_numbers_each_family_once_and_defines_each_code_in_words() -> None:
    defs = definitions()
    for family, last in (("INV", 9), ("AP", 17), ("G", 17)):
        numbers = sorted(int(c.split("-")[1]) for c in defs if c.split("-")[0] == family)
        assert numbers == list(range(1, last + 1)), family
    for code, (name, meaning) in defs.items():
        assert len(name) > 5 and len(meaning) > 40, code


def test_every_code_cited_is_defined_in_the_glossary() -> None:
    cited = used()
    assert {"INV-1", "INV-9", "AP-10", "G-15"} <= set(cited)  # the scan does find codes
    undefined = {code: sorted(files) for code, files in cited.items()
                 if code not in definitions()}
    assert not undefined, f"define these in docs/glossary.md: {undefined}"


def test_the_readme_links_the_glossary() -> None:
    assert "](docs/glossary.md)" in text(REPO / "README.md")


@pytest.mark.parametrize("what", sorted(OUTSIDE))
def test_no_reference_to_a_document_outside_the_repo(what: str) -> None:
    found = [f"{p.relative_to(REPO)}:{n}: {line.strip()}"
             for p in [*sources(), GLOSSARY]
             for n, line in enumerate(text(p).splitlines(), 1)
             if OUTSIDE[what].search(line)]
    assert not found, "\n".join(found)


AFTER = re.compile(r"\bINV-(\d)\b[:\s]+(\w+)")     # "INV-3 idempotent file ops"
BEFORE = re.compile(r"((?:\w+ ){1,3})\(INV-(\d)\b")  # "atomic state writes (INV-4)"


def misnamed(line: str) -> list[str]:
    """The invariant names in line that sit next to another invariant's code."""
    pairs = [(m.group(2), m.group(1)) for m in AFTER.finditer(line)]
    pairs += [(word, m.group(2)) for m in BEFORE.finditer(line) for word in m.group(1).split()]
    return [word for word, number in pairs
            if NAMES.get(word.lower()) not in (None, int(number))]


def test_invariants_are_named_with_their_own_number() -> None:
    """'atomic (INV-4)', 'INV-3 idempotent': a name next to a code is that code's."""
    wrong = [f"{p.relative_to(REPO)}:{n}: {line.strip()}"
             for p in [*sources(), GLOSSARY]
             for n, line in enumerate(text(p).splitlines(), 1) if misnamed(line)]
    assert not wrong, "\n".join(wrong)


def test_the_name_check_catches_the_other_numbering() -> None:
    """Control: the check flags the numbering this project does not use, not its own."""
    assert misnamed("Atomic state writes (INV-3): ... Idempotent cleanup (INV-2)") == [
        "Atomic", "Idempotent"]
    assert misnamed("INV-2 idempotent delete") == ["idempotent"]
    assert misnamed("a writer that was not atomic (INV-3).") == ["atomic"]
    assert misnamed("Atomic state writes (INV-4), idempotent cleanup (INV-3)") == []

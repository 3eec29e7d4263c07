"""Secrets hygiene, pure: refuse secrets in a playbook at plan time, redact them from records.

Why: pueue stores the whole add-time environment and the command line of every task in
its state file (docs/glossary.md), `ps` shows every argv, and our journal is kept
forever. A secret put in a playbook's `[env]`, in an inline `K=V`, in a `--token VALUE`
argument or in `pass_env` would land in all of them. Secrets belong in the host's
`<project_dir>/.env` (mode 600), loaded by the job itself with python-dotenv after the
`cd` pueue does for it (`-w`): AP-16 / G-15.

Public API: `secret_name`, `secret_value`, `check_playbook` (raises ConfigError, exit 2,
never echoing the value), `redact` (records) and `redact_text` (one line of output).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .batch.model import Playbook

MASK = "***"

# Name words (split on "_", "-", "."; case-insensitive) that mark a secret: GH_TOKEN,
# DB_PASSWORD, BASIC_AUTH, AWS_SECRET_ACCESS_KEY, client-secret. (Not TOKENS: MAX_TOKENS.)
SECRET_WORDS = frozenset({
    "TOKEN", "SECRET", "SECRETS", "PASSWORD", "PASSWORDS", "PASSWD", "PASSPHRASE",
    "CREDENTIAL", "CREDENTIALS", "CREDS", "AUTH", "APIKEY", "PRIVATEKEY", "COOKIE", "SESSIONID",
})
# ... and a trailing KEY (API_KEY, ACCESS_KEY, PRIVATE_KEY, STRIPE_KEY: the `*_KEY` rule).
KEY_WORD = "KEY"
# A name ending like this points at a secret instead of holding one (GH_TOKEN_FILE is the
# pattern we recommend); SSH_AUTH_SOCK is an agent socket path.
REFERENCE_WORDS = frozenset({"FILE", "PATH", "DIR", "SOCK", "NAME", "ENV", "VAR", "ID"})
# Not secrets although a word matches: a tokenizer switch, pueue's own config path.
NOT_SECRET = frozenset({"TOKENIZERS_PARALLELISM"})

# Values that are credentials whatever their name (prefix formats of the big issuers).
VALUE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(rx)) for kind, rx in (
        ("a GitHub token", r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
        ("a GitLab token", r"\bglpat-[A-Za-z0-9_-]{20,}"),
        ("an API secret key (sk-...)", r"\b(?:sk|rk)[-_](?:live_|test_|proj-|ant-)?"
                                       r"[A-Za-z0-9_-]{20,}"),
        ("an AWS access key id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        ("a Slack token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
        ("a Google API key", r"\bAIza[0-9A-Za-z_-]{35}"),
        ("a Hugging Face token", r"\bhf_[A-Za-z0-9]{30,}"),
        ("a JSON web token", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        ("a private key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        ("a URL with a password", r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"),
    ))
# A long run of random-looking characters (base64/base62: a generated key or password).
_OPAQUE = re.compile(r"^[A-Za-z0-9+/=_-]{32,}$")
ENTROPY_BITS = 4.3  # per character; hex digests and UUIDs stay below (at most 4.0)

# Cheap first look: a string without any of these holds nothing redact_text would mask.
_MAYBE = re.compile(r"=|--|gh[pousr]_|github_pat_|glpat-|[sr]k[-_]|AKIA|ASIA|xox|AIza|hf_|eyJ"
                    r"|PRIVATE KEY|://")
_WORD_SPLIT = re.compile(r"[_.\-]+")
_ASSIGNMENT = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|'[^']*'|[^\s;&|]*)")
_WORD_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
_OPTION = re.compile(r"(--[A-Za-z0-9][A-Za-z0-9_.-]*)([= ])(\"[^\"]*\"|'[^']*'|[^\s;&|]+)")


def _words(name: str) -> list[str]:
    return [w for w in _WORD_SPLIT.split(name.upper()) if w]


def secret_name(name: str, *, anywhere: bool = True) -> bool:
    """Does this variable/option/field name hold a secret? (GH_TOKEN, --api-key, password)
    `anywhere=False` (command-line options): only the last word counts, so `--api-token`
    is a secret and `--token-budget` is not."""
    if name.upper() in NOT_SECRET:
        return False
    words = _words(name.lstrip("-"))
    if not words or words[-1] in REFERENCE_WORDS:
        return False
    if any(w in SECRET_WORDS for w in (words if anywhere else words[-1:])):
        return True
    return words[-1] == KEY_WORD and len(words) > 1


def _entropy(text: str) -> float:
    counts: dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def secret_value(value: str, *, opaque: bool = True) -> str | None:
    """What kind of secret this value looks like (never the value itself), or None.
    `opaque`: also flag a long high-entropy string (for env values; commands hold paths
    and digests, so there only the issuer formats count)."""
    for kind, rx in VALUE_PATTERNS:
        if rx.search(value):
            return kind
    if opaque and _OPAQUE.match(value) and _entropy(value) >= ENTROPY_BITS \
            and any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
        return "a long random string (a generated key or password)"
    return None


# ---- plan time ---------------------------------------------------------------------------

def _advice(source: str, what: str, project_dir: str, why: str = "") -> ConfigError:
    return ConfigError(
        f"playbook {source}: {what} looks like a secret{why}: put it in "
        f"{project_dir.rstrip('/')}/.env on the host (the job loads it with python-dotenv), "
        "never on the pueue add line")


def _command_findings(command: str) -> Iterator[str]:
    """What in a command template puts a secret on the command line: an assignment to a
    secret name (`GH_TOKEN=... cmd`, `make PASSWORD=...`), a `--token VALUE` option, or a
    word that is a known credential format."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:
        words = command.split()
    for i, word in enumerate(words):
        m = _WORD_ASSIGNMENT.match(word)
        if m and secret_name(m.group(1)):
            yield f"{m.group(1)}= (set inline)"
        elif m and secret_value(m.group(2)):
            yield f"the value of {m.group(1)}= (set inline)"
        option, eq, value = word.partition("=")
        if option.startswith("--") and secret_name(option, anywhere=False):
            if (eq and value) or (not eq and i + 1 < len(words)
                                  and not words[i + 1].startswith("-")):
                yield f"option {option}"
        kind = secret_value(word, opaque=False)
        if kind:
            yield f"an argument ({kind})"


def check_playbook(playbook: Playbook, project_dir: str) -> None:
    """Refuse (exit 2) a playbook that would put a secret in argv, a label, pueue's state
    file or the journal. Runs before INV-5, whose advice ("declare it in env_overrides")
    would be wrong for a secret. The error names the place, never the value."""
    src = playbook.source
    for name in playbook.pass_env:
        if secret_name(name):
            raise _advice(src, f"pass_env.{name}", project_dir,
                          " (pass_env copies the SSH session's value into pueue's state file)")
    for ph in playbook.phases:
        at = f" (phase {ph.name})" if ph.name else ""
        for name, value in ph.env:
            if secret_name(name):
                raise _advice(src, f"env.{name}{at}", project_dir)
            kind = secret_value(value)
            if kind:
                raise _advice(src, f"env.{name}{at}", project_dir, f" ({kind})")
        for finding in _command_findings(ph.command):
            raise _advice(src, f"command{at}: {finding}", project_dir)
        for what, template in (("label", ph.label),):
            kind = secret_value(template, opaque=False)
            if kind:
                raise _advice(src, f"{what}{at}", project_dir, f" ({kind})")
        for param, values in ph.matrix:
            for value in values:
                kind = secret_value(value, opaque=False)
                if kind:
                    raise _advice(src, f"matrix.{param}{at}", project_dir, f" ({kind})")
    for step in playbook.after:
        for finding in _command_findings(step.command):
            raise _advice(src, f"after step {step.label!r} command: {finding}", project_dir)


# ---- redaction (defence in depth: journal, errors) -----------------------------------

def redact_text(text: str) -> str:
    """Mask credentials in free text: `NAME=value` / `--name value` with a secret name, and
    every known credential format."""
    if not _MAYBE.search(text):
        return text

    def assignment(m: re.Match[str]) -> str:
        return f"{m.group(1)}={MASK}" if secret_name(m.group(1)) else m.group(0)

    def option(m: re.Match[str]) -> str:
        if secret_name(m.group(1), anywhere=False) and not m.group(3).startswith("-"):
            return f"{m.group(1)}{m.group(2)}{MASK}"
        return m.group(0)

    out = _OPTION.sub(option, _ASSIGNMENT.sub(assignment, text))
    for _, rx in VALUE_PATTERNS:
        out = rx.sub(MASK, out)
    return out


def redact(record: Any) -> Any:
    """A copy of a JSON-able record with the value of every secret-named key masked and
    credentials masked inside strings (keys, numbers and structure unchanged)."""
    if isinstance(record, Mapping):
        return {k: (MASK if isinstance(k, str) and secret_name(k) and v not in (None, "")
                    else redact(v)) for k, v in record.items()}
    if isinstance(record, (list, tuple)):
        return [redact(v) for v in record]
    if isinstance(record, str):
        return redact_text(record)
    return record

"""secrecy: secret-looking names and values are refused at plan time (exit 2, the value never
echoed), and records/lines are redacted before they reach the journal or the terminal."""

from __future__ import annotations

import pytest

from jobsafe_ops.errors import ConfigError
from jobsafe_ops.secrecy import MASK, redact, redact_text, secret_name, secret_value
from tests.playbook_data import BASE, error, host, plan

# Built at run time so no credential-shaped literal sits in the repository.
GH = "ghp_" + "Zq3x9Lw2" * 5
SK = "sk-" + "proj-" + "Ab3dEf6hIj9k" * 3
AWS = "AKIA" + "Q7R2S9T4U6V8W3X5"
OPAQUE = "q8Zr2LwX9vTn4Kc7Yp1Hs6Jd3Fg5Bm0Ae"  # 34 chars, mixed case and digits


@pytest.mark.parametrize("name", [
    "GH_TOKEN", "API_TOKEN", "github_token", "DB_PASSWORD", "MYSQL_PASSWD", "CLIENT_SECRET",
    "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY", "SSH_PRIVATE_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS", "BASIC_AUTH", "AUTH", "STRIPE_KEY", "client-secret",
    "--api-key", "--password", "HF_TOKEN", "GPG_PASSPHRASE",
])
def test_secret_names(name: str) -> None:
    assert secret_name(name)


@pytest.mark.parametrize("name", [
    "MYPKG_THREADS", "GIT_AUTHOR_NAME", "TOKENIZERS_PARALLELISM", "MAX_TOKENS", "KEY",
    "GH_TOKEN_FILE", "SSH_AUTH_SOCK", "AWS_ACCESS_KEY_ID", "MONKEY", "KEYBOARD_LAYOUT",
    "PUEUE_CONFIG_PATH", "PATH", "HOME", "labels", "from_label", "task_id", "reason",
])
def test_ordinary_names(name: str) -> None:
    assert not secret_name(name)


def test_options_count_only_their_last_word() -> None:
    assert secret_name("--api-token", anywhere=False)
    assert not secret_name("--token-budget", anywhere=False)
    assert secret_name("TOKEN_BUDGET")  # an env name with TOKEN anywhere is refused


@pytest.mark.parametrize("value,kind", [
    (GH, "GitHub"), (SK, "sk-"), (AWS, "AWS"), ("postgres://app:hunter2@db:5432/x", "URL"),
    ("xoxb-" + "1234567890-abcdefghij", "Slack"), ("hf_" + "a1B2c3D4e5" * 4, "Hugging"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"), (OPAQUE, "random"),
])
def test_secret_values(value: str, kind: str) -> None:
    found = secret_value(value)
    assert found is not None and kind in found
    assert value not in found  # the description never carries the value


@pytest.mark.parametrize("value", [
    "4", "BTCUSDT", "/home/op/project/out", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934c"
    "a495991b7852b855",  # a sha256 hex digest (entropy 4.0 at most)
    "123e4567-e89b-12d3-a456-426614174000", "https://pypi.org/simple/", "2019-01-01",
    "meta-llama/Meta-Llama-3.1-8B-Instruct", "scripts/job.py",
])
def test_ordinary_values(value: str) -> None:
    assert secret_value(value) is None


def test_opaque_strings_count_only_where_asked() -> None:
    assert secret_value(OPAQUE, opaque=False) is None
    assert secret_value(GH, opaque=False) is not None


# ---- plan time: refused with exit 2, the value never echoed ----------------------------

def test_env_key_refused_with_the_dotenv_advice() -> None:
    text = 'env_overrides = ["GH_TOKEN"]\n' + BASE + f'[env]\nGH_TOKEN = "{GH}"\n'
    with pytest.raises(ConfigError) as exc:
        plan(text, host(project_dir="/srv/proj"))
    message = str(exc.value)
    assert exc.value.exit_code == 2
    assert message == ("playbook pb.toml: env.GH_TOKEN looks like a secret: put it in "
                       "/srv/proj/.env on the host (the job loads it with python-dotenv), "
                       "never on the pueue add line")
    assert GH not in message


def test_secret_is_refused_before_inv5_advice() -> None:
    # an undeclared override would otherwise get INV-5's "declare it" advice
    message = error(BASE + '[env]\nAPI_TOKEN = "x"\n')
    assert "env.API_TOKEN looks like a secret" in message and "INV-5" not in message


def test_env_value_refused_whatever_its_name() -> None:
    message = error('env_overrides = ["MYPKG_DSN"]\n' + BASE + "[env]\n"
                    'MYPKG_DSN = "postgres://app:hunter2@db/x"\n')
    assert "env.MYPKG_DSN looks like a secret (a URL with a password)" in message
    assert "hunter2" not in message


def test_ordinary_env_override_still_allowed() -> None:
    p = plan('env_overrides = ["MYPKG_THREADS"]\n' + BASE + '[env]\nMYPKG_THREADS = "4"\n')
    assert p.jobs[0].env == (("MYPKG_THREADS", "4"),)


def test_phase_env_names_its_phase() -> None:
    text = """
name = "ph"
group = "p1"
command = "run --phase {phase}"
[[phases]]
name = "long"
label = "long"
[phases.env]
DB_PASSWORD = "pw"
"""
    assert "env.DB_PASSWORD (phase long) looks like a secret" in error(text)


@pytest.mark.parametrize("command,what", [
    (f"GH_TOKEN={GH} run --symbol {{symbol}} --threshold {{threshold}}", "GH_TOKEN="),
    ("make deploy PASSWORD=pw --symbol {symbol} --threshold {threshold}", "PASSWORD="),
    ("run --api-key abc --symbol {symbol} --threshold {threshold}", "option --api-key"),
    ("run --password=abc --symbol {symbol} --threshold {threshold}", "option --password"),
    (f"run --symbol {{symbol}} --threshold {{threshold}} --url {AWS}", "AWS access key"),
])
def test_secrets_on_the_command_line_are_refused(command: str, what: str) -> None:
    message = error(BASE.replace('command = "run --symbol {symbol} --threshold {threshold}"',
                                 f'command = "{command}"'))
    assert what in message and "looks like a secret" in message
    for value in (GH, AWS, "abc", "pw"):
        assert f"={value}" not in message and f" {value} " not in message


def test_ordinary_options_pass() -> None:
    cmd = "run --token-file .secrets/gh --max-tokens 100 --symbol {symbol} --threshold {threshold}"
    p = plan(BASE.replace('command = "run --symbol {symbol} --threshold {threshold}"',
                          f'command = "{cmd}"'))
    assert len(p.jobs) == 4


def test_matrix_value_that_is_a_credential() -> None:
    text = BASE.replace('symbol = ["BTC", "ETH"]', f'symbol = ["BTC", "{SK}"]')
    message = error(text)
    assert "matrix.symbol looks like a secret" in message and SK not in message


def test_pass_env_of_a_secret_name() -> None:
    message = error('pass_env = ["JOBSAFE_WORLD", "API_TOKEN"]\n' + BASE)
    assert "pass_env.API_TOKEN looks like a secret" in message
    assert "pueue's state file" in message


def test_after_step_command() -> None:
    text = BASE + '[[after]]\nlabel = "t:opt"\ncommand = "optimize --secret s3"\n'
    assert "after step 't:opt' command: option --secret" in error(text)


# ---- redaction -------------------------------------------------------------------------

def test_redact_masks_secret_keys_and_credentials_in_strings() -> None:
    record = {
        "action": "kill", "labels": ["a"], "API_TOKEN": "s3cr3t-value", "task_id": 4,
        "tasks": [{"label": "a", "command": f"export GH_TOKEN={GH}; run --api-key k9 --n 3",
                   "envs": {"HOME": "/home/op", "DB_PASSWORD": "hunter2"}}],
        "reason": f"pueue add failed: bad url https://u:hunter2@example.org, key {AWS}",
    }
    out = redact(record)
    text = repr(out)
    for secret in ("s3cr3t-value", GH, "k9", "hunter2", AWS):
        assert secret not in text
    assert out["API_TOKEN"] == MASK and out["task_id"] == 4 and out["labels"] == ["a"]
    cmd = out["tasks"][0]["command"]
    assert cmd == f"export GH_TOKEN={MASK}; run --api-key {MASK} --n 3"
    assert out["tasks"][0]["envs"] == {"HOME": "/home/op", "DB_PASSWORD": MASK}
    assert record["API_TOKEN"] == "s3cr3t-value"  # the input is not modified


def test_redact_text_leaves_ordinary_lines_alone() -> None:
    line = "h1: `pueue add --group p1 --label BTC@250 -- run --threshold=250` failed: exit 2"
    assert redact_text(line) == line
    assert redact_text(f"token {GH} rejected") == f"token {MASK} rejected"

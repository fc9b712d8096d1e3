"""Secrets are never shown: not what a password command printed, not its arguments, not a value
typed where a variable's name belonged; not on stdout, stderr, --json, debug logs or the history.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from restore_tests.errors import SourceError
from restore_tests.sources import secrets
from tests.conftest import (
    PASSWORD_VARIABLE,
    Repository,
    assert_no_leftovers,
    run_cli,
    write_scenario,
)

# What a password helper leaks: on stderr with its error, or on stdout before it fails.
LEAKED = "vault-token-7f2a91c3"
# An argument of the password command: it may hold a secret too.
ARGUMENT = "pin-5519-2207"
NOT_SHOWN = "(its output is not shown: it may hold the secret)"


def password_helper(folder: Path, body: str) -> dict[str, str]:
    """A `pw-helper` program on PATH running body; the environment to run the CLI with."""
    programs = folder / "bin"
    programs.mkdir(exist_ok=True)
    helper = programs / "pw-helper"
    helper.write_text("#!/bin/sh\n" + body)
    helper.chmod(0o755)
    return {"PATH": f"{programs}{os.pathsep}{os.environ['PATH']}"}


def scenario_with_password(folder: Path, repository: Repository, reference: str) -> Path:
    path = write_scenario(folder, "share", str(repository.path))
    path.write_text(path.read_text().replace(f"password_env: {PASSWORD_VARIABLE}", reference))
    return path


def everything_written(result_text: str, database: Path) -> str:
    """What the run showed, and every byte of the history database and its side files."""
    stored = b"".join(path.read_bytes() for path in database.parent.glob(database.name + "*"))
    return result_text + stored.decode("latin-1")


@pytest.mark.sandbox
def test_a_failing_password_command_shows_neither_its_output_nor_its_arguments(
    repository: Repository, tmp_path: Path
) -> None:
    environment = password_helper(
        tmp_path, f'echo "{LEAKED}"\necho "error: token {LEAKED} was refused" >&2\nexit 3\n'
    )
    scenario = scenario_with_password(
        tmp_path, repository, f"password_command: [pw-helper, --pin, {ARGUMENT}]"
    )
    database = tmp_path / "h.db"

    result = run_cli(
        "--debug",
        "check",
        str(scenario),
        "--json",
        "--db",
        f"sqlite:///{database}",
        env={**environment, "RESTIC_BINARY": repository.binary},
    )

    assert result.returncode == 1
    [reported] = json.loads(result.stdout)["results"]
    assert reported["status"] == "error"
    assert reported["reason"] == f"source.password_command: pw-helper exited 3 {NOT_SHOWN}"
    written = everything_written(result.stdout + result.stderr, database)
    assert "pw-helper exited 3" in written  # the history holds the verdict...
    assert LEAKED not in written  # ...but not what the helper printed
    assert ARGUMENT not in written
    assert_no_leftovers()


@pytest.mark.sandbox
def test_a_password_variable_that_is_not_set_is_named_only_when_it_looks_like_a_name(
    repository: Repository, tmp_path: Path
) -> None:
    scenario = scenario_with_password(tmp_path, repository, "password_env: Tr0ub4dor")
    database = tmp_path / "h.db"
    assert "Tr0ub4dor" not in os.environ

    result = run_cli(
        "check",
        str(scenario),
        "--db",
        f"sqlite:///{database}",
        env={"RESTIC_BINARY": repository.binary},
    )

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "ERROR share  source.password_env: the variable named in source.password_env is not "
        "set (its name is not shown: not written in capitals, it may be a secret)"
    ]
    assert "Tr0ub4dor" not in everything_written(result.stdout + result.stderr, database)
    assert_no_leftovers()


# -- the rules, one by one ------------------------------------------------------------------


def test_a_password_command_that_fails_is_named_with_its_exit_code_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = password_helper(tmp_path, f'echo "{LEAKED}" >&2\nexit 3\n')
    monkeypatch.setenv("PATH", environment["PATH"])

    with pytest.raises(SourceError) as raised:
        secrets.from_command(["pw-helper", ARGUMENT], "source.password_command")

    assert str(raised.value) == f"source.password_command: pw-helper exited 3 {NOT_SHOWN}"
    assert raised.value.__cause__ is None and raised.value.__context__ is None  # no stderr


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            f'echo "{LEAKED}" >&2\nkill -KILL $$\n',
            f"source.password_command: /bin/sh was killed by SIGKILL {NOT_SHOWN}",
        ),
        (
            f'echo "{LEAKED}" >&2\nexit 0\n',
            "source.password_command: /bin/sh printed nothing",
        ),
    ],
    ids=["killed", "printed nothing"],
)
def test_a_password_command_that_ends_badly_names_the_program_and_how_it_ended(
    tmp_path: Path, body: str, expected: str
) -> None:
    script = tmp_path / "helper.sh"
    script.write_text(body)

    with pytest.raises(SourceError) as raised:
        secrets.from_command(["/bin/sh", str(script), ARGUMENT], "source.password_command")

    assert str(raised.value) == expected


def test_a_password_command_that_does_not_finish_is_stopped_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secrets, "COMMAND_TIMEOUT_SECONDS", 1)
    script = tmp_path / "helper.sh"
    script.write_text(f'echo "{LEAKED}" >&2\nexec sleep 30\n')

    with pytest.raises(SourceError) as raised:
        secrets.from_command(["/bin/sh", str(script), ARGUMENT], "source.password_command")

    assert str(raised.value) == "source.password_command: /bin/sh did not finish within 1s"


def test_a_password_command_that_does_not_exist_is_named_without_its_arguments() -> None:
    with pytest.raises(SourceError) as raised:
        secrets.from_command(["/nonexistent/pw-helper", ARGUMENT], "source.password_command")

    assert str(raised.value) == (
        "source.password_command: /nonexistent/pw-helper: program not found"
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "SHARE_RESTIC_PASSWORD",
            "source.password_env: environment variable SHARE_RESTIC_PASSWORD is not set",
        ),
        (
            "Tr0ub4dor",
            "source.password_env: the variable named in source.password_env is not set (its "
            "name is not shown: not written in capitals, it may be a secret)",
        ),
        (
            "correcthorse",
            "source.password_env: the variable named in source.password_env is not set (its "
            "name is not shown: not written in capitals, it may be a secret)",
        ),
    ],
)
def test_an_unset_variable_is_named_only_when_written_like_a_variable_name(
    monkeypatch: pytest.MonkeyPatch, name: str, expected: str
) -> None:
    monkeypatch.delenv(name, raising=False)

    with pytest.raises(SourceError) as raised:
        secrets.from_env(name, "source.password_env")

    assert str(raised.value) == expected


def test_a_set_variable_gives_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARE_RESTIC_PASSWORD", "correct horse")

    assert secrets.from_env("SHARE_RESTIC_PASSWORD", "source.password_env") == "correct horse"

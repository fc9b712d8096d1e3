"""The exception tree: what each error means for the exit code, and how problems read."""

from __future__ import annotations

import pytest

from restore_tests.errors import (
    CommandFailed,
    DamagedBackup,
    EnvironmentUnusable,
    Interrupted,
    PreflightError,
    Problem,
    RestoreTestsError,
    SandboxError,
    ScenarioError,
    SourceError,
    UsageError,
)


@pytest.mark.parametrize(
    ("error", "exit_code"),
    [
        (UsageError("--jobs must be at least 1"), 2),
        (ScenarioError([Problem("share.yaml", 3, "kind", "unknown kind 'postgres'")]), 2),
        (EnvironmentUnusable("restic not found: 'restic'"), 3),
        (Interrupted(), 130),
        (RestoreTestsError("something went wrong"), 1),
        (SourceError("restic: no repository at /srv/restic/share"), 1),
        (DamagedBackup("restic: the repository /srv/restic/share is damaged"), 1),
        (SandboxError("sandbox could not start"), 1),
        (PreflightError("image restore-tests/sandbox:bookworm is missing"), 1),
        (CommandFailed("restic snapshots", 1, "Fatal: boom\n"), 1),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_each_error_maps_to_its_exit_code(error: RestoreTestsError, exit_code: int) -> None:
    assert error.exit_code == exit_code


def test_an_interruption_says_interrupted_unless_told_otherwise() -> None:
    assert str(Interrupted()) == "interrupted"
    assert str(Interrupted("stopped by SIGTERM")) == "stopped by SIGTERM"


def test_a_scenario_error_lists_every_problem_on_its_own_line() -> None:
    error = ScenarioError(
        [
            Problem(
                "/etc/restore-tests/share.yaml",
                12,
                "verify.expect.min_files",
                "Input should be greater than or equal to 0",
            ),
            Problem("/etc/restore-tests/share.yaml", None, "", "the file holds no scenario"),
        ]
    )

    assert str(error).splitlines() == [
        "/etc/restore-tests/share.yaml:12: verify.expect.min_files: "
        "Input should be greater than or equal to 0",
        "/etc/restore-tests/share.yaml: the file holds no scenario",
    ]


def test_a_failed_command_shows_the_last_stderr_line_the_command_and_the_exit_code() -> None:
    error = CommandFailed(
        "restic --no-lock snapshots --json",
        12,
        "reading config\nFatal: wrong password or no key found\n",
    )

    assert str(error) == (
        "Fatal: wrong password or no key found "
        "(command: restic --no-lock snapshots --json, exit code 12)"
    )
    assert error.stderr_tail.endswith("no key found\n")


def test_a_failed_command_without_output_says_so_or_gives_its_reason() -> None:
    assert str(CommandFailed("docker start x", 1, "")) == (
        "no output (command: docker start x, exit code 1)"
    )
    assert str(CommandFailed("restic restore", None, "", "timed out after 600s")) == (
        "timed out after 600s (command: restic restore, exit code None)"
    )

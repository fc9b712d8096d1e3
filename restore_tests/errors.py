"""One exception tree. Library code raises these; the CLI maps them to a message and exit code."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130


class RestoreTestsError(Exception):
    """Base of every error the tool reports as a one-line verdict."""

    exit_code = EXIT_FAILED


class UsageError(RestoreTestsError):
    """Invalid command line or arguments."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One mistake in a scenario file, located as precisely as the file allows."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ScenarioError(UsageError):
    """One or more scenario files are invalid; every problem is listed, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


class EnvironmentUnusable(RestoreTestsError):
    """The machine cannot run restores at all: no Docker engine, no restic binary."""

    exit_code = EXIT_ENVIRONMENT


class Interrupted(RestoreTestsError):
    """Ctrl-C or SIGTERM: work was stopped and cleaned up."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str = "interrupted") -> None:
        super().__init__(message)


class CommandFailed(RestoreTestsError):
    """A subprocess exited non-zero (or said it failed); carries the masked command and stderr."""

    def __init__(self, command: str, returncode: int | None, stderr_tail: str, reason: str = ""):
        self.command = command
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        summary = reason or (stderr_tail.strip().splitlines() or ["no output"])[-1]
        super().__init__(f"{summary} (command: {command}, exit code {returncode})")


class SourceError(RestoreTestsError):
    """The backup could not be reached or read: wrong password, no repository, no snapshot."""


class DamagedBackup(RestoreTestsError):
    """The backup was reached but its data is damaged: a verdict of FAIL, not an error."""


class ObjectiveMissed(RestoreTestsError):
    """The restore was stopped because it ran far past its RTO: a verdict of FAIL."""


class SandboxError(RestoreTestsError):
    """A sandbox could not be created, started or used."""


class PreflightError(RestoreTestsError):
    """A precondition of one scenario does not hold (missing image, not enough disk...)."""


class HostError(EnvironmentUnusable):
    """The host failed, not the backup: no space left in staging, permission denied, too many
    open files. Never a verdict on the backup (an ERROR, exit 3)."""

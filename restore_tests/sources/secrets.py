"""Resolve secret references (environment variable, file, command) at run time, never earlier.

No message says what a secret command printed (its output may be the password, or hold it), nor
repeats its arguments (they may hold a secret too): a failure names the program and how it ended.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from restore_tests import execute
from restore_tests.errors import CommandFailed, EnvironmentUnusable, SourceError

COMMAND_TIMEOUT_SECONDS = 60
# A name written by the usual convention is safe to show; anything else (Tr0ub4dor is a valid
# variable name) may be a password typed where its variable's name belonged.
CONVENTIONAL_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


NOT_SHOWN = " (its output is not shown: it may hold the secret)"


def from_env(name: str, field: str) -> str:
    value = os.environ.get(name)
    if value:
        return value
    if CONVENTIONAL_NAME.match(name):
        raise SourceError(f"{field}: environment variable {name} is not set")
    raise SourceError(
        f"{field}: the variable named in {field} is not set (its name is not shown: "
        "not written in capitals, it may be a secret)"
    )


def from_file(path: str, field: str) -> str:
    try:
        with open(Path(path), encoding="utf-8") as stream:
            value = stream.readline().strip()  # as restic --password-file reads it
    except OSError as error:
        raise SourceError(f"{field}: cannot read {path}: {error.strerror}") from error
    if not value:
        raise SourceError(f"{field}: {path} is empty")
    return value


def from_command(argv: list[str], field: str) -> str:
    program = argv[0]
    try:
        # The arguments are masked in the command's log line, like a secret.
        completed = execute.run(
            argv, timeout=COMMAND_TIMEOUT_SECONDS, secrets=argv[1:], check=False
        )
    except EnvironmentUnusable as error:  # not found or not executable: names argv[0] only
        raise SourceError(f"{field}: {error}") from None
    except CommandFailed:  # with check=False, only a timeout
        raise SourceError(
            f"{field}: {program} did not finish within {COMMAND_TIMEOUT_SECONDS}s"
        ) from None
    if completed.returncode != 0:
        raise SourceError(f"{field}: {program} {_ending(completed.returncode)}{NOT_SHOWN}")
    value = completed.stdout.splitlines()[0].strip() if completed.stdout.strip() else ""
    if not value:
        raise SourceError(f"{field}: {program} printed nothing")
    return value


def _ending(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited {returncode}"

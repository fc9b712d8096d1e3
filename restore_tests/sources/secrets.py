"""Resolve secret references (environment variable, file, command) at run time, never earlier."""

from __future__ import annotations

import os
from pathlib import Path

from restore_tests import execute
from restore_tests.errors import CommandFailed, EnvironmentUnusable, SourceError


def from_env(name: str, field: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SourceError(f"{field}: environment variable {name} is not set")
    return value


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
    try:
        completed = execute.run(argv, timeout=60)
    except (CommandFailed, EnvironmentUnusable) as error:
        raise SourceError(f"{field}: {error}") from error
    value = completed.stdout.splitlines()[0].strip() if completed.stdout.strip() else ""
    if not value:
        raise SourceError(f"{field}: {argv[0]} printed nothing")
    return value

"""Restore kinds. One module per kind, one line each in RUNNERS; the scenario schema reads it."""

from __future__ import annotations

from runners.base import Runner
from runners.files import FilesRunner

RUNNERS: dict[str, type[Runner]] = {
    FilesRunner.kind: FilesRunner,
}

__all__ = ["RUNNERS", "Runner"]

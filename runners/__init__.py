"""Restore kinds. One module per kind, one line each in RUNNERS; the scenario schema reads it."""

from __future__ import annotations

from runners.base import Runner
from runners.files import FilesRunner
from runners.mysql import MysqlRunner
from runners.postgres import PostgresRunner
from runners.sqlite import SqliteRunner
from runners.vm_image import VmImageRunner

RUNNERS: dict[str, type[Runner]] = {
    FilesRunner.kind: FilesRunner,
    MysqlRunner.kind: MysqlRunner,
    PostgresRunner.kind: PostgresRunner,
    SqliteRunner.kind: SqliteRunner,
    VmImageRunner.kind: VmImageRunner,
}

__all__ = ["RUNNERS", "Runner"]

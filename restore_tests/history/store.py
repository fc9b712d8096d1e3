"""The history store: any SQLAlchemy URL, migrated to the newest schema on open.

SQLite gets a busy timeout and BEGIN IMMEDIATE transactions, so that two drills writing to one
file at the same time are both recorded (the second waits instead of failing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from restore_tests.errors import EnvironmentUnusable
from restore_tests.history.models import CheckRow, Drill, Phase, Result
from restore_tests.results import ScenarioResult

DEFAULT_URL = "sqlite:///results.db"
URL_VARIABLE = "RESTORE_TESTS_DB"
SQLITE_BUSY_SECONDS = 60
MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration; a test holds it equal to Alembic's head. Knowing it lets an up-to-date
# database skip importing Alembic at all (a large part of a short run's start-up time).
SCHEMA_REVISION = "0001"


def resolve_url(given: str | None) -> str:
    """--db, else $RESTORE_TESTS_DB, else results.db in the current directory."""
    return given or os.environ.get(URL_VARIABLE) or DEFAULT_URL


def utc_naive(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


class HistoryStore:
    """Reads and writes the history; every write is one short transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.display_url = _display(url)
        try:
            self.engine = _engine(url)
            self._sessions = sessionmaker(self.engine, expire_on_commit=False)
            self.migrate()
        except (SQLAlchemyError, ArgumentError, OSError, ImportError) as error:
            # ImportError: the URL names a driver that is not installed (psycopg, pymysql...).
            raise EnvironmentUnusable(
                f"history database {self.display_url} is unusable: {_short(error)}"
            ) from error

    def migrate(self) -> None:
        """Bring the schema to the newest revision (nothing to do in the usual case)."""
        if self.revision() == SCHEMA_REVISION:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def revision(self) -> str | None:
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except SQLAlchemyError as error:
            raise EnvironmentUnusable(
                f"history database {self.display_url}: {_short(error)}"
            ) from error

    def start_drill(
        self,
        run_id: str,
        trigger: str,
        host: str,
        tool_version: str,
        docker_version: str | None,
        started_at: datetime,
    ) -> None:
        with self._session() as session:
            session.add(
                Drill(
                    run_id=run_id,
                    trigger=trigger,
                    host=host,
                    tool_version=tool_version,
                    docker_version=docker_version,
                    started_at=utc_naive(started_at),
                    status="running",
                    reason="",
                )
            )

    def record_result(self, run_id: str, result: ScenarioResult) -> None:
        with self._session() as session:
            drill = session.scalars(select(Drill).where(Drill.run_id == run_id)).one()
            row = Result(drill=drill, **_result_columns(result))
            row.phases = [
                Phase(position=index, name=name, seconds=seconds)
                for index, (name, seconds) in enumerate(result.phases.items())
            ]
            row.checks = [
                CheckRow(
                    position=index,
                    name=check.name,
                    status=check.status,
                    reason=check.reason,
                    expected=check.expected,
                    observed=check.observed,
                    detail=check.detail,
                    proves_data=check.proves_data,
                    seconds=check.seconds,
                )
                for index, check in enumerate(result.checks)
            ]
            session.add(row)

    def finish_drill(self, run_id: str, status: str, reason: str, finished_at: datetime) -> None:
        with self._session() as session:
            drill = session.scalars(select(Drill).where(Drill.run_id == run_id)).one()
            drill.status, drill.reason = status, reason
            drill.finished_at = utc_naive(finished_at)

    def results(self, scenario: str | None = None, limit: int | None = 50) -> list[Result]:
        """Newest first, with their drill, phases and checks loaded."""
        query = (
            select(Result)
            .join(Result.drill)
            .options(
                selectinload(Result.phases), selectinload(Result.checks), selectinload(Result.drill)
            )
            .order_by(Result.started_at.desc(), Result.id.desc())
        )
        if scenario:
            query = query.where(Result.scenario == scenario)
        if limit:
            query = query.limit(limit)
        with self._session() as session:
            return list(session.scalars(query))

    def drills(self) -> list[Drill]:
        with self._session() as session:
            return list(session.scalars(select(Drill).order_by(Drill.started_at.desc())))


def _result_columns(result: ScenarioResult) -> dict[str, Any]:
    return {
        "scenario": result.scenario,
        "kind": result.kind,
        "scenario_path": result.scenario_path,
        "scenario_sha256": result.scenario_sha256,
        "status": result.status,
        "reason": result.reason,
        "cause": result.cause,
        "started_at": utc_naive(result.started_at),
        "finished_at": utc_naive(result.finished_at),
        "snapshot_id": result.snapshot_id,
        "snapshot_time": utc_naive(result.snapshot_time),
        "source_version": result.source_version,
        "files": result.files,
        "bytes": result.bytes,
        "rto_seconds": result.rto.measured_seconds,
        "rto_target_seconds": result.rto.target_seconds,
        "rto_status": result.rto.status,
        "rpo_seconds": result.rpo.measured_seconds,
        "rpo_target_seconds": result.rpo.target_seconds,
        "rpo_status": result.rpo.status,
        "rpo_basis": result.rpo.basis,
        "kept": result.kept,
    }


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        folder = Path(parsed.database).expanduser().parent
        if not folder.is_dir():
            raise EnvironmentUnusable(f"history database {url}: folder {folder} does not exist")
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})

    # pysqlite's own transaction handling defers BEGIN; take over so that every transaction is
    # BEGIN IMMEDIATE: concurrent writers queue on the busy timeout instead of deadlocking.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_SECONDS * 1000}")
        dbapi_connection.execute("PRAGMA foreign_keys = ON")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _display(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]

"""The history store: any SQLAlchemy URL, migrated to the newest schema on open.

SQLite gets a busy timeout and BEGIN IMMEDIATE transactions, so that two drills writing to one
file at the same time are both recorded (the second waits instead of failing). A write that still
fails (locked past the timeout, a connection lost) is retried a few times, then raised as
EnvironmentUnusable naming the database and what could not be recorded.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from restore_tests import __version__
from restore_tests.errors import EnvironmentUnusable, UsageError
from restore_tests.history.models import (
    ABANDONED,
    RUNNING,
    CheckRow,
    Drill,
    Phase,
    Result,
)
from restore_tests.history.processes import ProcessIdentity
from restore_tests.results import ERROR, PASS, ScenarioResult

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_URL = "sqlite:///results.db"
URL_VARIABLE = "RESTORE_TESTS_DB"
SQLITE_BUSY_SECONDS = 60.0
TIMEOUT_VARIABLE = "RESTORE_TESTS_DB_TIMEOUT"  # seconds a write waits for a locked SQLite file
WRITE_ATTEMPTS = 3
RETRY_PAUSE_SECONDS = 0.5  # then twice that: a short backoff between attempts
MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration; a test holds it equal to Alembic's head. Knowing it lets an up-to-date
# database skip importing Alembic at all (a large part of a short run's start-up time).
SCHEMA_REVISION = "0003"
MIGRATION_LOCK = 0x7265_7374_6F72_65  # a PostgreSQL advisory lock key of its own ("restore")
# Given to a result row left "running" by a drill that did finish: its final write failed.
NOT_RECORDED = (
    "not recorded: the history database failed when this scenario finished "
    "(its verdict was printed, not stored)"
)


class NewerHistory(EnvironmentUnusable):
    """The history's schema is newer than this release knows (exit 3, never migrated)."""


def known_revisions() -> set[str]:
    """The revisions on disk: each migration file's name starts with its revision."""
    return {path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9]*.py")}


def resolve_url(given: str | None) -> str:
    """--db, else $RESTORE_TESTS_DB, else results.db in the current directory. A plain file
    path (no "scheme://") is a SQLite file: /var/lib/restore-tests/results.db."""
    url = given or os.environ.get(URL_VARIABLE) or DEFAULT_URL
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().absolute()}"
    return url


def busy_seconds() -> float:
    """How long a SQLite write waits for a lock: $RESTORE_TESTS_DB_TIMEOUT, else 60 s."""
    given = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not given:
        return SQLITE_BUSY_SECONDS
    try:
        seconds = float(given)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise UsageError(f"{TIMEOUT_VARIABLE} must be a number of seconds above 0, not {given!r}")
    return seconds


def abandoned_reason(pid: int | None, host: str) -> str:
    return f"abandoned: process {pid} on {host} ended without finishing (killed?)"


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
        except NewerHistory:
            raise
        except (SQLAlchemyError, ArgumentError, OSError, ImportError) as error:
            # ImportError: the URL names a driver that is not installed (psycopg, pymysql...).
            raise EnvironmentUnusable(
                f"history database {self.display_url} is unusable: {_short(error)}"
            ) from error

    def migrate(self) -> None:
        """Bring the schema to the newest revision (nothing to do in the usual case).

        A database made by a newer release (a revision this one does not know) is refused:
        writing to it with an older schema in mind could lose what the newer one records.
        """
        revision = self.revision()
        if revision == SCHEMA_REVISION:
            return
        if revision is not None and revision not in known_revisions():
            raise NewerHistory(
                f"history database {self.display_url} was made by a newer version of "
                f"restore-tests (schema {revision}; this version {__version__} knows up to "
                f"{SCHEMA_REVISION}): upgrade restore-tests to read or write it"
            )
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            _lock_migrations(connection)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def revision(self) -> str | None:
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()

    @classmethod
    def open_existing(cls, url: str) -> HistoryStore | None:
        """The store, or None for a SQLite file that does not exist (nothing to read or mark)."""
        try:
            parsed = make_url(url)
        except ArgumentError:
            return cls(url)  # raises, naming the URL
        database = parsed.database or ":memory:"
        is_file = parsed.drivername.startswith("sqlite") and database != ":memory:"
        if is_file and not Path(database).expanduser().exists():
            return None
        return cls(url)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except SQLAlchemyError as error:
            raise EnvironmentUnusable(
                f"history database {self.display_url}: {_short(error)}"
            ) from error

    def _write(
        self, action: str, work: Callable[[Session], T], attempts: int = WRITE_ATTEMPTS
    ) -> T:
        """Run work in one transaction; retry what may pass (a lock, a lost connection)."""
        for attempt in range(1, attempts + 1):
            try:
                with self._sessions.begin() as session:
                    return work(session)
            except OperationalError as error:
                if attempt == attempts:
                    raise self._failed(action, error) from error
                log.info("history database: could not %s (attempt %d): %s", action, attempt, error)
                time.sleep(RETRY_PAUSE_SECONDS * attempt)
            except SQLAlchemyError as error:
                raise self._failed(action, error) from error
        raise AssertionError("unreachable: attempts >= 1")

    def _failed(self, action: str, error: SQLAlchemyError) -> EnvironmentUnusable:
        return EnvironmentUnusable(
            f"history database {self.display_url}: could not {action}: {_short(error)}"
        )

    def start_drill(
        self,
        run_id: str,
        trigger: str,
        host: str,
        tool_version: str,
        docker_version: str | None,
        started_at: datetime,
        owner: ProcessIdentity | None = None,
    ) -> None:
        """Record a drill as running (and, in the same transaction, mark abandoned ones)."""
        drill = Drill(
            run_id=run_id,
            trigger=trigger,
            host=host,
            tool_version=tool_version,
            docker_version=docker_version,
            started_at=utc_naive(started_at),
            status=RUNNING,
            reason="",
            pid=owner.pid if owner else None,
            boot_id=owner.boot_id if owner else None,
            process_start_ticks=owner.start_ticks if owner else None,
        )

        def work(session: Session) -> None:
            _mark_abandoned(session, dry_run=False)
            session.add(drill)

        self._write(f"record the start of run {run_id}", work)

    def record_running(self, run_id: str, result: ScenarioResult) -> int:
        """A result row saying the scenario is under way; returns its id for record_result.

        One attempt only: it is bookkeeping, and the scenario should not wait for it.
        """

        def work(session: Session) -> int:
            row = Result(drill=_drill(session, run_id), **_result_columns(result))
            row.status, row.reason = RUNNING, ""
            session.add(row)
            session.flush()
            return row.id

        return self._write(f"record the start of {result.scenario}", work, attempts=1)

    def record_result(self, run_id: str, result: ScenarioResult, row_id: int | None = None) -> None:
        """The scenario's outcome: a new row, or the one record_running made (row_id)."""

        def work(session: Session) -> None:
            row = session.get(Result, row_id) if row_id is not None else None
            if row is None:
                row = Result(drill=_drill(session, run_id))
                session.add(row)
            for name, value in _result_columns(result).items():
                setattr(row, name, value)
            row.phases = _phase_rows(result)
            row.checks = _check_rows(result)

        self._write(f"record the result of {result.scenario}", work)

    def finish_drill(self, run_id: str, status: str, reason: str, finished_at: datetime) -> None:
        """The drill's end; its results still marked running were never recorded (NOT_RECORDED)."""

        def work(session: Session) -> None:
            drill = _drill(session, run_id)
            drill.status, drill.reason = status, reason
            drill.finished_at = utc_naive(finished_at)
            for row in drill.results:
                if row.status == RUNNING:
                    row.status, row.reason = ERROR, NOT_RECORDED

        self._write(f"record the end of run {run_id}", work)

    def mark_abandoned(self, dry_run: bool = False) -> list[str]:
        """Mark the running drills of this host whose process has ended (and their running
        results) as abandoned; returns their run ids. One attempt: housekeeping."""
        return self._write(
            "mark abandoned runs", lambda session: _mark_abandoned(session, dry_run), attempts=1
        )

    def abandoned_runs(self, run_ids: Collection[str]) -> set[str]:
        """Which of these runs are recorded as abandoned on this host."""
        if not run_ids:
            return set()
        query = select(Drill.run_id).where(
            Drill.run_id.in_(sorted(run_ids)),
            Drill.status == ABANDONED,
            Drill.host == socket.gethostname(),
        )
        with self._session() as session:
            return set(session.scalars(query))

    def results(self, scenario: str | None = None, limit: int | None = 50) -> list[Result]:
        """Newest first, with their drill, phases and checks loaded (views.results filters more)."""
        from restore_tests.history import views

        return views.results(
            self, views.ResultFilter(scenarios=[scenario] if scenario else ()), limit
        )

    def reading(self) -> AbstractContextManager[Session]:
        """A session for read-only queries (restore_tests/history/views.py)."""
        return self._session()

    def last_passes(self, names: Collection[str] | None = None) -> dict[str, datetime]:
        """When each scenario last passed (UTC, aware); scenarios that never passed are absent."""
        query = select(Result.scenario, func.max(Result.started_at)).where(Result.status == PASS)
        if names is not None:
            query = query.where(Result.scenario.in_(sorted(names)))
        query = query.group_by(Result.scenario)
        with self._session() as session:
            return {name: when.replace(tzinfo=UTC) for name, when in session.execute(query)}

    def drills(self) -> list[Drill]:
        with self._session() as session:
            return list(session.scalars(select(Drill).order_by(Drill.started_at.desc())))


def _drill(session: Session, run_id: str) -> Drill:
    return session.scalars(select(Drill).where(Drill.run_id == run_id)).one()


def _mark_abandoned(session: Session, dry_run: bool) -> list[str]:
    host = socket.gethostname()
    query = select(Drill).where(Drill.status == RUNNING, Drill.host == host, Drill.pid.is_not(None))
    abandoned = []
    for drill in session.scalars(query):
        owner = ProcessIdentity(host, drill.pid or 0, drill.boot_id, drill.process_start_ticks)
        if not owner.has_ended():
            continue
        abandoned.append(drill.run_id)
        if dry_run:
            continue
        reason = abandoned_reason(drill.pid, host)
        drill.status, drill.reason = ABANDONED, reason
        for row in drill.results:
            if row.status == RUNNING:
                row.status, row.reason = ABANDONED, reason
    return abandoned


def _phase_rows(result: ScenarioResult) -> list[Phase]:
    return [
        Phase(position=index, name=name, seconds=seconds)
        for index, (name, seconds) in enumerate(result.phases.items())
    ]


def _check_rows(result: ScenarioResult) -> list[CheckRow]:
    return [
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
        "client": result.client,
        "owner": result.owner,
        "tags": tags_column(result.tags),
        "every_seconds": result.every_seconds,
        "full_bytes": result.full_bytes,
        "throughput_bytes_per_second": result.throughput_bytes_per_second,
        "projected_rto_seconds": result.projected_rto_seconds,
        "rto_applies_to": result.rto_applies_to,
    }


def tags_column(tags: Collection[str]) -> str:
    """Tags as stored: ",a,b," (or ""), so that a tag is found as ",a," in them."""
    return f",{','.join(tags)}," if tags else ""


def tags_of(column: str) -> list[str]:
    return [tag for tag in column.split(",") if tag]


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        folder = Path(parsed.database).expanduser().parent
        if not folder.is_dir():
            raise EnvironmentUnusable(f"history database {url}: folder {folder} does not exist")
    busy = busy_seconds()
    engine = create_engine(url, connect_args={"timeout": busy})

    # pysqlite's own transaction handling defers BEGIN; take over so that every transaction is
    # BEGIN IMMEDIATE: concurrent writers queue on the busy timeout instead of deadlocking.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute(f"PRAGMA busy_timeout = {round(busy * 1000)}")
        dbapi_connection.execute("PRAGMA foreign_keys = ON")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _lock_migrations(connection: Connection) -> None:
    """One migration at a time on a server: two drills opening an empty PostgreSQL history
    together would both create the tables and the second fail on a duplicate (two threads of one
    process hang instead: Alembic's context is global). The lock holds until the transaction
    ends; Alembic then reads the revision the first one committed. SQLite's BEGIN IMMEDIATE
    already queues them."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})


def _display(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


def _short(error: BaseException) -> str:
    """The first line of the error, without SQLAlchemy's "(sqlite3.OperationalError)" prefix."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        error = error.orig
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]

"""What the database kinds share: the `verify` section (queries, integrity, tables), the dump's
place and identity, and the steps load -> integrity -> tables -> queries.

A database backup is proven only when it loads into a real server of its engine, inside the
sandbox, and answers the scenario's questions. The server runs as the engine's user on a unix
socket in /scratch (no network); its files live in /scratch, a folder of the private staging
area on disk, sized from the dump and checked free before the sandbox starts. The dump itself is
read by a process running as its owner, so no restored file is made readable to anyone else (the
folders leading to it only get the search bit), and the original is never touched.

Each engine (postgres.py, mysql.py, sqlite.py) says how to start its server, load a dump, run a
query and check integrity; the comparisons and verdicts are here, once.
"""

from __future__ import annotations

import csv
import io
import os
from abc import abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from restore_tests.model import Duration, Size, SnapshotPath, StrictModel
from restore_tests.restored import OPEN_FLAGS
from restore_tests.results import Check, one_line
from restore_tests.sandbox_output import ExecResult
from restore_tests.sources.base import RestorePoint
from restore_tests.timing import format_duration, format_size
from runners.base import Located, RunContext, Runner, SandboxNeeds, locate
from runners.dumps import ENGINE_NAMES, Dump, identify
from runners.expectations import Expectation, compare, parse_expectation, to_time

SCRATCH_MINIMUM = 2 * 1024**3
SCRATCH_FACTOR = 10  # a compressed dump's tables, indexes and WAL take many times its size
SCRATCH_GROWTH_FACTOR = 100  # ...and may take far more (pgbench's dump: 77 times) before a stop
ANSWER_LIMIT_BYTES = 1024**2  # a query's answer is compared whole: it must be small
READY_TIMEOUT_SECONDS = 60.0
QUERY_SHOWN = 80  # characters of a query's SQL in a check's name
Row = list[str | None]
Cell = str | int | float | None


class Query(StrictModel):
    """A question the restored database must answer."""

    sql: str = Field(
        min_length=1,
        description="One SQL statement, run with the engine's own client inside the sandbox.",
        examples=["SELECT count(*) FROM invoices"],
    )
    expect: str | int | float | None = Field(
        None,
        description="The one value it must return: '>= 120000' (= != < <= > >=), "
        "'between A and B', or an exact value. Numbers compare as numbers, times as times.",
        examples=[">= 120000", "between 10 and 20", "paid"],
    )
    rows: list[list[Cell]] | None = Field(
        None,
        description="The exact rows it must return, in order (null for SQL NULL).",
        examples=[[["EUR", 120], ["USD", 7]]],
    )
    fresher_than: Duration | None = Field(
        None,
        description="It returns a time (the newest row's): at most this old. The RPO, seen "
        "from inside the data.",
        examples=["26h"],
    )
    timeout: Duration = Field(300.0, description="Time limit of the query.", examples=["5m"])

    @field_validator("expect")
    @classmethod
    def _valid_expect(cls, value: str | int | float | None) -> str | int | float | None:
        if value is not None:
            parse_expectation(value)
        return value

    @model_validator(mode="after")
    def _says_what_it_expects(self) -> Query:
        given = [name for name in ("expect", "rows", "fresher_than") if getattr(self, name)]
        if self.expect is not None and "expect" not in given:
            given.append("expect")
        if not given:
            raise ValueError("a query needs expect, rows or fresher_than: what must it return?")
        if self.expect is not None and self.rows is not None:
            raise ValueError("give expect (one value) or rows (a table), not both")
        return self

    @property
    def expectation(self) -> Expectation | None:
        return None if self.expect is None else parse_expectation(self.expect)


class Tables(StrictModel):
    """Schema sanity: the restored database holds at least this many tables."""

    min: int = Field(ge=1, description="At least this many tables.", examples=[20])


class DatabaseVerify(StrictModel):
    """Checks on the loaded database. Loading alone proves the dump loads, not its content."""

    queries: list[Query] = Field(default_factory=list, description="Questions it must answer.")
    integrity: bool = Field(
        True,
        description="The engine's own integrity check (postgres: pg_amcheck; mysql: "
        "mariadb-check; sqlite: PRAGMA integrity_check).",
    )
    tables: Tables | None = Field(None, description="Schema sanity.")

    @model_validator(mode="after")
    def _proves_something(self) -> DatabaseVerify:
        if not self.queries and self.tables is None:
            raise ValueError(
                "give queries or tables: {min: N}; a database that merely loads proves nothing "
                "about its content"
            )
        return self


class DatabaseSection(StrictModel):
    """The `database:` section: what the dump is and where it is."""

    dump: SnapshotPath | None = Field(
        None,
        description="The dump (or a pg_dump directory) in the restored data, starting with /; "
        "by default the only file restored.",
        examples=["/var/backups/billing.dump"],
    )
    scratch: Size | None = Field(
        None,
        description="Disk space for the server's files, checked free before the sandbox starts; "
        "a load that writes more is stopped (a FAIL). Default: 10 times the backup's size, at "
        "least 2 GiB, checked; the load is stopped only past 100 times the restored dump.",
        examples=["20g"],
    )
    load_timeout: Duration = Field(
        3600.0, description="Time limit of loading the dump.", examples=["2h"]
    )


@dataclass(frozen=True)
class Answer:
    """What a query returned: rows of text (None for NULL), or the client's error."""

    rows: list[Row]
    error: str = ""
    syntax_error: bool = False  # the scenario's SQL is wrong: an ERROR, not a FAIL
    result: ExecResult | None = None


class DatabaseRunner(Runner):
    """A database kind: start a server, load the dump, then check and query it."""

    sandbox_sized_by_point: ClassVar[bool] = True

    engine: ClassVar[str]  # dumps.POSTGRES, MYSQL or SQLITE
    server_user: ClassVar[str | None] = None  # the engine's user in the image (None: root)
    log_file: ClassVar[str | None] = None

    def __init__(self) -> None:
        self.loaded = False
        self.dump: Dump | None = None
        self.newest_row: datetime | None = None

    # --- what each engine provides

    @abstractmethod
    def server_commands(self, scenario: Any) -> tuple[list[str] | None, list[str] | None]:
        """The commands that start the server and tell it is ready (None: no server)."""

    @abstractmethod
    def load_dump(self, context: RunContext, located: Located, dump: Dump) -> list[Check]:
        """Load the dump into the server; checks that say how it went."""

    @abstractmethod
    def query_argv(self, context: RunContext, sql: str) -> list[str]:
        """The client command printing the answer to sql as CSV with a header line."""

    @abstractmethod
    def is_syntax_error(self, message: str) -> bool:
        """Whether the client's error says the SQL itself is wrong."""

    @abstractmethod
    def integrity_check(self, context: RunContext) -> Check:
        """The engine's own integrity check of the loaded database."""

    @abstractmethod
    def table_count_sql(self, context: RunContext) -> str:
        """SQL answering the number of user tables."""

    def accepts(self, dump: Dump) -> bool:
        return dump.engine == self.engine

    # --- the steps

    def sandbox_needs(self, scenario: Any, point: RestorePoint | None) -> SandboxNeeds:
        section = database_section(scenario)
        size = (point and point.size_bytes) or 0
        scratch = section.scratch or max(SCRATCH_MINIMUM, SCRATCH_FACTOR * size)
        start, ready = self.server_commands(scenario)
        return SandboxNeeds(
            scratch_bytes=scratch,
            scratch_on_disk=True,
            scratch_growth_factor=None if section.scratch else SCRATCH_GROWTH_FACTOR,
            user=self.server_user,
            environment={"HOME": "/scratch", "LC_ALL": "C.UTF-8"},
            start_command=start,
            ready_command=ready,
            ready_timeout=READY_TIMEOUT_SECONDS,
            log_file=self.log_file,
        )

    def load(self, context: RunContext) -> list[Check]:
        located = self.locate(context)
        if isinstance(located, Check):
            return [located]
        context.files, context.bytes = context.tree.file_count, context.tree.bytes
        try:
            dump = self.dump = identify(located.host_path)
        except OSError as error:
            return [Check.error("dump", f"could not read the dump {located.path}: {error}")]
        refused = self.refuse(context, located, dump)
        if refused is not None:
            return [refused]
        context.progress(f"loading {located.path} ({dump.description})")
        checks = self.load_dump(context, located, dump)
        self.loaded = all(check.status == "passed" for check in checks)
        return checks

    def verify(self, context: RunContext) -> list[Check]:
        if not self.loaded:
            return []  # the load's failure is the verdict; nothing loaded can be checked
        verify: DatabaseVerify = context.verify
        checks = []
        if verify.integrity:
            context.progress("checking integrity")
            started = datetime.now(UTC)
            check = self.integrity_check(context)
            check.seconds = (datetime.now(UTC) - started).total_seconds()
            checks.append(check)
        if verify.tables is not None:
            checks.append(self.tables_check(context, verify.tables.min))
        for index, query in enumerate(verify.queries, 1):
            context.progress(f"query {index} of {len(verify.queries)}")
            checks.append(self.query_check(context, index, query))
        return checks

    def data_time(self, context: RunContext) -> datetime | None:
        return self.newest_row

    # --- shared parts

    def locate(self, context: RunContext) -> Located | Check:
        """The dump: database.dump, else the only file restored (or a pg_dump directory)."""
        declared = database_section(context.scenario).dump
        return locate(context, declared, "dump", "database.dump", folder_marker="toc.dat")

    def refuse(self, context: RunContext, located: Located, dump: Dump) -> Check | None:
        """A FAIL when the dump is not one this engine loads, or not in the declared format."""
        section = database_section(context.scenario)
        engine = ENGINE_NAMES[self.engine]
        if not self.accepts(dump):
            return Check.failed(
                "dump", f"{located.path} is {dump.description}, not a {engine} dump it can load"
            )
        declared = getattr(section, "format", "auto")
        if declared not in ("auto", dump.format):
            return Check.failed(
                "dump",
                f"{located.path} is {dump.description}, not in the declared format {declared}",
            )
        return None

    def run_sql(self, context: RunContext, sql: str, timeout: float) -> Answer:
        """Run one statement with the engine's client; its answer parsed from CSV."""
        kept = bytearray()
        overflow = [False]

        def keep(data: bytes) -> None:
            if len(kept) + len(data) > ANSWER_LIMIT_BYTES:
                overflow[0] = True
            else:
                kept.extend(data)

        result = context.sandbox.exec(self.query_argv(context, sql), timeout, on_stdout=keep)
        if result.exit_code != 0:
            message = _first_line(result.stderr) or result.reason("client")
            if result.ending():
                message = f"{message} ({result.ending()})"
            return Answer([], one_line(message), self.is_syntax_error(result.stderr), result)
        if overflow[0]:
            return Answer([], f"the answer is larger than {format_size(ANSWER_LIMIT_BYTES)}")
        text = kept.decode("utf-8", errors="replace")
        return Answer(self.parse_rows(self.split_rows(text)[1:]), result=result)

    def split_rows(self, text: str) -> list[list[str]]:
        """The client's output as rows of cells, its header line first (CSV by default)."""
        return [list(row) for row in csv.reader(io.StringIO(text))]

    def parse_rows(self, rows: list[list[str]]) -> list[Row]:
        """The client's CSV cells as values; engines that print NULL differently override."""
        return [[cell for cell in row] for row in rows]

    def tables_check(self, context: RunContext, minimum: int) -> Check:
        name = "tables"
        answer = self.run_sql(context, self.table_count_sql(context), 120.0)
        fields = {"expected": f">= {minimum}"}
        if answer.error or len(answer.rows) != 1:
            return Check.error(name, f"could not count the tables: {answer.error}", **fields)
        count = int(answer.rows[0][0] or 0)
        if count < minimum:
            return Check.failed(
                name, f"{count} tables, expected at least {minimum}", observed=str(count), **fields
            )
        return Check.passed(name, observed=str(count), proves_data=True, **fields)

    def query_check(self, context: RunContext, index: int, query: Query) -> Check:
        sql = " ".join(query.sql.split())
        name = f"query {index}: {sql[:QUERY_SHOWN]}{'...' if len(sql) > QUERY_SHOWN else ''}"
        answer = self.run_sql(context, query.sql, query.timeout)
        seconds = answer.result.seconds if answer.result else None
        if answer.error:
            if answer.syntax_error:
                return Check.error(
                    name, f"query {index} is not valid SQL: {answer.error}", seconds=seconds
                )
            return Check.failed(name, f"query {index} failed: {answer.error}", seconds=seconds)
        check = self._judge(index, query, answer.rows)
        check.name, check.seconds = name, seconds
        return check

    def _judge(self, index: int, query: Query, rows: list[Row]) -> Check:
        shown = _shown_rows(rows)
        if query.rows is not None:
            expected = [[None if cell is None else str(cell) for cell in row] for row in query.rows]
            if _same_rows(rows, expected):
                return Check.passed(
                    "", expected=_shown_rows(expected), observed=shown, proves_data=True
                )
            return Check.failed(
                "",
                f"query {index} returned {shown}, expected {_shown_rows(expected)}",
                expected=_shown_rows(expected),
                observed=shown,
            )
        if len(rows) != 1 or len(rows[0]) != 1:
            columns = len(rows[0]) if rows else 0
            return Check.failed(
                "",
                f"query {index} returned {len(rows)} rows of {columns} columns; expect and "
                "fresher_than compare one value",
                observed=shown,
            )
        value = rows[0][0]
        if query.fresher_than is not None:
            return self._freshness(index, query.fresher_than, value)
        expectation = query.expectation
        assert expectation is not None
        fields = {"expected": expectation.written, "observed": _cell(value)}
        if not expectation.holds(value):
            return Check.failed(
                "", f"query {index}: {_cell(value)}, expected {expectation.written}", **fields
            )
        if expectation.proves_nothing:
            return Check.passed("", detail=f"{expectation.written} proves nothing", **fields)
        return Check.passed("", proves_data=True, **fields)

    def _freshness(self, index: int, limit: float, value: str | None) -> Check:
        moment = None if value is None else to_time(value)
        fields = {"expected": f"newer than {format_duration(limit)}", "observed": _cell(value)}
        if moment is None:
            return Check.failed("", f"query {index} returned {_cell(value)}, not a time", **fields)
        if self.newest_row is None or moment > self.newest_row:
            self.newest_row = moment
        age = (datetime.now(UTC) - moment).total_seconds()
        if age > limit:
            return Check.failed(
                "",
                f"query {index}: the newest data is {format_duration(age)} old "
                f"({moment:%Y-%m-%d %H:%M} UTC), expected at most {format_duration(limit)}",
                **fields,
            )
        return Check.passed("", proves_data=True, **fields)


def copy_template(template: str, target: str) -> str:
    """A shell line copying an image's ready data directory: tar is three times faster than
    `cp -a` into the scratch folder on disk (1.1 s for PostgreSQL's 39 MB, most of it xattrs)."""
    return f"mkdir -m 0700 {target} && tar -C {template} -cf - . | tar -C {target} -xf -"


def database_section(scenario: Any) -> Any:
    """The scenario's `database:` section (each engine's own model)."""
    return scenario.database


def load_failed(result: ExecResult, what: str) -> str:
    """The reason a load failed: killed by the memory limit, out of time, or its first errors."""
    if result.oom_killed:
        return f"{what}: the server ran out of memory ({result.ending()})"
    if result.timed_out:
        return f"{what}: {result.ending()}"
    return f"{what}: {result.last_line() or 'no output'}"


def _same_rows(observed: list[Row], expected: list[Row]) -> bool:
    if len(observed) != len(expected):
        return False
    for got, want in zip(observed, expected, strict=True):
        if len(got) != len(want):
            return False
        for cell, wanted in zip(got, want, strict=True):
            if (cell is None) != (wanted is None):
                return False
            if cell is not None and wanted is not None and not compare(cell, wanted, _equal):
                return False
    return True


def _equal(left: Any, right: Any) -> bool:
    return bool(left == right)


def _first_line(text: str) -> str:
    """A client's error line: the first that says error (clients quote the SQL around it),
    else the first line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")


def _cell(value: str | None) -> str:
    return "NULL" if value is None else value


def _shown_rows(rows: list[Row]) -> str:
    text = "; ".join(", ".join(_cell(cell) for cell in row) for row in rows[:5])
    more = f" (+{len(rows) - 5} rows)" if len(rows) > 5 else ""
    return one_line(f"[{text}]{more}", 200)


DECOMPRESSORS = {"": "cat", "gzip": "gzip -dc", "zstd": "zstd -dc", "xz": "xz -dc"}
TAIL_BYTES = 512


def read_dump(
    context: RunContext,
    located: Located,
    dump: Dump,
    pipeline: str,
    timeout: float,
    user: str | None = None,
) -> ExecResult:
    """Run a bash pipeline over the dump, as the dump's owner (or user), in the dump's folder:
    $1 is the dump's name and $DUMP_READ decompresses it to stdout."""
    script = f"set -o pipefail; DUMP_READ='{DECOMPRESSORS[dump.compression]}'; {pipeline}"
    return context.sandbox.exec(
        ["bash", "-c", script, "load", located.name],
        timeout,
        user=user or located.owner,
        workdir=located.folder_inside,
    )


def text_dump_complete(context: RunContext, located: Located, dump: Dump, marker: str) -> bool:
    """Whether a text dump ends as its tool ends a finished dump (a truncated one does not,
    even when it was cut between two statements and loads without an error)."""
    if dump.compression:
        result = read_dump(
            context, located, dump, f'$DUMP_READ < "$1" | tail -c {TAIL_BYTES}', 3600.0
        )
        tail = result.stdout.encode() if result.exit_code == 0 else b""
    else:
        descriptor = os.open(located.host_path, OPEN_FLAGS)
        try:
            size = os.fstat(descriptor).st_size
            tail = os.pread(descriptor, TAIL_BYTES, max(0, size - TAIL_BYTES))
        finally:
            os.close(descriptor)
    return marker.encode() in tail

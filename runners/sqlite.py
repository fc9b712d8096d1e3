"""SQLite: a database file (copied, then opened read-only) or a `.dump` of one, checked with
PRAGMA integrity_check and queried with the sqlite3 shell inside the sandbox."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from restore_tests.results import Check
from runners.base import RunContext
from runners.database import (
    DatabaseRunner,
    DatabaseSection,
    DatabaseVerify,
    Located,
    database_section,
    load_failed,
    read_dump,
    text_dump_complete,
)
from runners.dumps import SQLITE, Dump

COPY = "/scratch/db.sqlite3"
NULL = "\\N"  # how the shell prints NULL here (an empty cell is an empty string)
# The copy is the owner's (who alone could read the restored file); the queries run as the
# sandbox's user, so the copy is made readable inside the sandbox only.
_SHARE = f"chmod 0644 {COPY}"


class SqliteDatabase(DatabaseSection):
    """The SQLite backup: a database file or the text of `sqlite3 DB .dump`."""

    format: Literal["auto", "file", "sql"] = Field(
        "auto",
        description="'file' (the database itself), 'sql' (a .dump), or 'auto' (read from the "
        "file's first bytes). Either may be gzip/zstd/xz-compressed.",
    )


class SqliteRunner(DatabaseRunner):
    """A SQLite database restored from a backup, checked and queried in the sandbox."""

    kind: ClassVar[str] = "sqlite"
    engine: ClassVar[str] = SQLITE
    verify_model = DatabaseVerify
    sections: ClassVar[dict[str, tuple[Any, Any]]] = {
        "database": (
            SqliteDatabase,
            Field(default_factory=lambda: SqliteDatabase(), description="The SQLite backup."),
        )
    }

    def server_commands(self, scenario: Any) -> tuple[list[str] | None, list[str] | None]:
        return None, None  # no server: the shell opens the file

    def load_dump(self, context: RunContext, located: Located, dump: Dump) -> list[Check]:
        timeout = database_section(context.scenario).load_timeout
        if dump.format == "file":
            wal = (
                ""
                if dump.compression
                else f'if [ -f "$1-wal" ]; then cat -- "$1-wal" > {COPY}-wal; fi; '
            )
            pipeline = f'$DUMP_READ < "$1" > {COPY} && {wal}{_SHARE}*'
            what = "copying the database file"
        else:
            pipeline = f'$DUMP_READ < "$1" | sqlite3 -bail {COPY} && {_SHARE}'
            what = "loading the dump"
        result = read_dump(context, located, dump, pipeline, timeout)
        fields = {
            "observed": f"exit {result.exit_code}",
            "detail": result.detail(),
            "seconds": result.seconds,
        }
        if result.exit_code == 127:  # bash: command not found
            return [
                Check.error(
                    "load",
                    f"sqlite3 is not in the sandbox image {context.sandbox.spec.image}: "
                    f"{result.last_line()}",
                    **fields,
                )
            ]
        if result.exit_code != 0:
            return [Check.failed("load", load_failed(result, what), **fields)]
        if dump.format == "sql" and not text_dump_complete(context, located, dump, "COMMIT;"):
            return [
                Check.failed(
                    "load", f"{located.path} is cut short: a .dump ends with COMMIT;", **fields
                )
            ]
        return [Check.passed("load", **{**fields, "observed": dump.description})]

    def query_argv(self, context: RunContext, sql: str) -> list[str]:
        return ["sqlite3", "-readonly", "-bail", "-csv", "-header", "-nullvalue", NULL, COPY, sql]

    def parse_rows(self, rows: list[list[str]]) -> list[list[str | None]]:
        return [[None if cell == NULL else cell for cell in row] for row in rows]

    def is_syntax_error(self, message: str) -> bool:
        return "syntax error" in message or "incomplete input" in message

    def integrity_check(self, context: RunContext) -> Check:
        name = "integrity (PRAGMA integrity_check)"
        answer = self.run_sql(context, "PRAGMA integrity_check", 3600.0)
        if answer.error:
            return Check.failed(name, f"the database cannot be checked: {answer.error}")
        lines = [
            line
            for row in answer.rows
            for line in (row[0] or "").splitlines()
            if line and not line.startswith("*** in database")
        ]
        if lines == ["ok"]:
            return Check.passed(name, observed="ok", proves_data=True)
        return Check.failed(
            name,
            f"integrity_check found {len(lines)} problems; first: {lines[0] if lines else '-'}",
            expected="ok",
            observed=f"{len(lines)} problems",
            detail="\n".join(lines[:50]),
        )

    def table_count_sql(self, context: RunContext) -> str:
        return (
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )

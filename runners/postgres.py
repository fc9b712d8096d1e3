"""PostgreSQL: a pg_dump archive (custom, directory, tar) or plain SQL dump, compressed or not,
loaded into a disposable server that the runner starts itself inside the sandbox (initdb,
pg_ctl; no image entrypoint), on a unix socket only, then checked with pg_amcheck and queried
with psql."""

from __future__ import annotations

import re
import shlex
from typing import Any, ClassVar, Literal

from pydantic import Field

from restore_tests.results import Check, one_line
from restore_tests.sandbox import READY_GAVE_UP
from runners.base import RunContext
from runners.database import (
    DatabaseRunner,
    DatabaseSection,
    DatabaseVerify,
    Located,
    copy_template,
    database_section,
    load_failed,
    read_dump,
    text_dump_complete,
)
from runners.dumps import POSTGRES, Dump, major_version

SOCKET = "/scratch"
DATA = "/scratch/pgdata"
LOG = "/scratch/postgres.log"
ERRORS = "/scratch/load-errors.log"
DEFAULT_IMAGE = "restore-tests/postgres:15"
# The engine's binaries, wherever the image keeps them (Debian: /usr/lib/postgresql/N/bin).
_PATH = (
    'for dir in /usr/lib/postgresql/*/bin; do [ -d "$dir" ] && PATH=$PATH:$dir; done; '
    "for tool in initdb pg_ctl psql pg_restore; do command -v $tool >/dev/null || "
    '{ echo "$tool is not in this image" >&2; exit 127; }; done; '
)
# A server for one load: nothing listens on a network; durability is not needed (the data is
# thrown away), speed is.
_SERVER_OPTIONS = (
    "-c listen_addresses='' -c unix_socket_directories=/scratch -c fsync=off "
    "-c full_page_writes=off -c synchronous_commit=off -c max_wal_size=256MB "
    "-c dynamic_shared_memory_type=mmap"
)
# The project's images hold a data directory made when they were built: copying it takes a
# third of initdb's time. Any other image (the official ones) gets initdb.
TEMPLATE = "/var/lib/restore-tests/pgdata-template"
_START = (
    f"if [ -d {TEMPLATE} ]; then {copy_template(TEMPLATE, DATA)}; else "
    f"initdb -D {DATA} -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 "
    f">/scratch/initdb.log 2>&1 || {{ tail -n 5 /scratch/initdb.log >&2; exit 1; }}; fi; "
    # In the background: the server comes up while the data is fetched. pg_ctl's exit status
    # tells the readiness check when it never will.
    f'(pg_ctl -D {DATA} -l {LOG} -w -t 60 -o "{_SERVER_OPTIONS}" start >/scratch/pg_ctl.out 2>&1; '
    "echo $? >/scratch/pg_ctl.status) </dev/null >/dev/null 2>&1 &"
)
_READY = (
    f"psql -h {SOCKET} -U postgres -d postgres -XAtqc 'select 1' >/dev/null 2>&1 && exit 0; "
    'status=$(cat /scratch/pg_ctl.status 2>/dev/null); if [ -n "$status" ] && '
    f'[ "$status" != 0 ]; then cat /scratch/pg_ctl.out >&2; exit {READY_GAVE_UP}; fi; exit 1'
)
# Ownership and grants name roles of the production cluster, which a fresh server lacks: they
# are not data, so they are not restored (pg_restore --no-owner --no-acl; for plain dumps their
# "role does not exist" errors are not counted).
_ROLE_ERROR = r'role ".*" does not exist'
_ERROR_LINE = re.compile(r"(ERROR:|error:)")


class PostgresDatabase(DatabaseSection):
    """The PostgreSQL dump and the database it restores."""

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_$-]*$",
        max_length=63,
        description="The database the dump holds (a pg_dump archive says it; a plain dump is "
        "loaded into a database of this name).",
        examples=["billing"],
    )
    format: Literal["auto", "custom", "directory", "tar", "plain"] = Field(
        "auto", description="pg_dump's format, or 'auto' (read from the dump)."
    )
    jobs: int = Field(
        2, ge=1, le=16, description="pg_restore -j: parallel jobs (custom and directory)."
    )


def _shell(script: str) -> list[str]:
    return ["bash", "-c", _PATH + script]


class PostgresRunner(DatabaseRunner):
    """A PostgreSQL dump loaded into a disposable server in the sandbox, checked and queried."""

    kind: ClassVar[str] = "postgres"
    engine: ClassVar[str] = POSTGRES
    verify_model = DatabaseVerify
    default_image = DEFAULT_IMAGE
    server_user: ClassVar[str | None] = "postgres"
    log_file: ClassVar[str | None] = LOG
    sections: ClassVar[dict[str, tuple[Any, Any]]] = {
        "database": (PostgresDatabase, Field(description="The dump and its database."))
    }

    def server_commands(self, scenario: Any) -> tuple[list[str] | None, list[str] | None]:
        return _shell(_START), _shell(_READY)

    def load_dump(self, context: RunContext, located: Located, dump: Dump) -> list[Check]:
        section: PostgresDatabase = database_section(context.scenario)
        refused = self._refuse_version(context, dump) or self._refuse_name(located, dump, section)
        if refused is not None:
            return [refused]
        name = shlex.quote(section.name)
        target = f"-h {SOCKET} -U postgres -d {name}"
        if dump.format == "plain":
            loader = f'$DUMP_READ < "$1" | psql -X -q {target} >/dev/null'
        else:
            parallel = dump.format in ("custom", "directory") and not dump.compression
            jobs = f"-j {section.jobs}" if parallel else ""  # -j needs a file it can seek in
            source = '"$1"' if not dump.compression else ""  # else stdin
            reader = '$DUMP_READ < "$1" | ' if dump.compression else ""
            loader = f"{reader}pg_restore {target} --no-owner --no-acl {jobs} {source}"
        script = (
            f"createdb -h {SOCKET} -U postgres {name} || exit 1; "
            f"{loader} 2>{ERRORS}; status=$?; "
            f"grep -E 'ERROR:|error:' {ERRORS} | grep -Ev '{_ROLE_ERROR}' | head -n 5; "
            f"exit $status"
        )
        result = read_dump(context, located, dump, _PATH + script, section.load_timeout, user=None)
        return [self._load_verdict(context, located, dump, result)]

    def _load_verdict(
        self, context: RunContext, located: Located, dump: Dump, result: Any
    ) -> Check:
        first_errors = [line for line in result.stdout.splitlines() if _ERROR_LINE.search(line)]
        fields = {"detail": result.detail(), "seconds": result.seconds}
        if result.oom_killed or result.timed_out:
            return Check.failed("load", load_failed(result, f"loading {located.path}"), **fields)
        if first_errors:
            return Check.failed(
                "load",
                one_line(f"{located.path} loads with errors; first: {first_errors[0]}"),
                observed=f"exit {result.exit_code}",
                **fields,
            )
        if result.exit_code != 0:
            return Check.failed("load", load_failed(result, f"loading {located.path}"), **fields)
        marker = "-- PostgreSQL database dump complete"
        if dump.format == "plain" and not text_dump_complete(context, located, dump, marker):
            return Check.failed(
                "load", f"{located.path} is cut short: it does not end with '{marker}'", **fields
            )
        return Check.passed("load", observed=dump.description, **fields)

    def _refuse_version(self, context: RunContext, dump: Dump) -> Check | None:
        """A dump from a newer server than the sandbox's tools: an ERROR naming both."""
        result = context.sandbox.exec(_shell("pg_restore --version"), 30.0)
        tools = result.stdout.strip().rsplit(" ", 1)[-1] if result.exit_code == 0 else ""
        dump_major, tools_major = major_version(dump.server_version), major_version(tools)
        if dump_major and tools_major and dump_major > tools_major:
            return Check.error(
                "load",
                f"the dump was made by PostgreSQL {dump.server_version}, newer than this "
                f"sandbox's pg_restore {tools} ({context.sandbox.spec.image}): use an image of "
                f"PostgreSQL {dump_major} or newer",
                expected=f"PostgreSQL <= {tools}",
                observed=f"PostgreSQL {dump.server_version}",
            )
        return None

    def _refuse_name(self, located: Located, dump: Dump, section: PostgresDatabase) -> Check | None:
        if dump.database and dump.database != section.name:
            return Check.failed(
                "load",
                f"database {section.name} is not in {located.path}: the dump holds database "
                f"{dump.database}",
                expected=section.name,
                observed=dump.database,
            )
        return None

    def query_argv(self, context: RunContext, sql: str) -> list[str]:
        name = database_section(context.scenario).name
        return [
            *_shell(
                'psql -h /scratch -U postgres -d "$1" -X -q --csv -v ON_ERROR_STOP=1 '
                '-P "null=\\N" -c "$2"'
            ),
            "query",
            name,
            sql,
        ]

    def parse_rows(self, rows: list[list[str]]) -> list[list[str | None]]:
        return [[None if cell == "\\N" else cell for cell in row] for row in rows]

    def is_syntax_error(self, message: str) -> bool:
        return "syntax error" in message

    def integrity_check(self, context: RunContext) -> Check:
        name = "integrity (pg_amcheck)"
        database = database_section(context.scenario).name
        result = context.sandbox.exec(
            [
                *_shell('pg_amcheck -h /scratch -U postgres --install-missing -d "$1"'),
                "check",
                database,
            ],
            3600.0,
        )
        # Without the amcheck extension pg_amcheck only warns, and exits 0: not a pass.
        if result.exit_code == 0 and "amcheck" not in result.stderr:
            return Check.passed(name, observed="no corruption", proves_data=True)
        if "amcheck" in result.stderr:
            return Check.error(name, f"pg_amcheck cannot run: {result.last_line()}")
        return Check.failed(
            name,
            f"pg_amcheck found corruption: {result.last_line() or result.reason('pg_amcheck')}",
            detail=result.detail(),
        )

    def table_count_sql(self, context: RunContext) -> str:
        return (
            "SELECT count(*) FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )

"""MariaDB/MySQL: a mysqldump / mariadb-dump SQL file (plain, gzip, zstd or xz) loaded with the
client into a disposable MariaDB server that the runner starts itself inside the sandbox
(mariadb-install-db, mariadbd with networking off), checked with mariadb-check and queried."""

from __future__ import annotations

import re
import shlex
from typing import Any, ClassVar, Literal

from pydantic import Field

from restore_tests.results import Check, one_line
from restore_tests.sandbox import READY_GAVE_UP
from restore_tests.sandbox_output import ExecResult
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
from runners.dumps import HEAD_BYTES, MYSQL, Dump, decompressed_head, read_head

SOCKET = "/scratch/mysqld.sock"
DATA = "/scratch/mysql"
LOG = "/scratch/mysqld.log"
PID = "/scratch/mysqld.pid"
EXITED = "/scratch/mysqld.exit"  # the server's exit status, once it has exited
STOP_SECONDS, READY_SECONDS = 30, 60  # the restart's bounds
DEFAULT_IMAGE = "restore-tests/mariadb:10.11"
COMPLETE_MARKER = "-- Dump completed"
# The tools under either name (MariaDB's, or the mysql* names older images keep).
_TOOLS = (
    "pick() { for name; do command -v $name >/dev/null && { echo $name; return; }; done; "
    'echo "none of $* is in this image" >&2; return 127; }; '
    "CLIENT=$(pick mariadb mysql) && CHECK=$(pick mariadb-check mysqlcheck) || exit 127; "
)
_CLIENT = f"$CLIENT --no-defaults --socket={SOCKET} -uroot"
# A server for one load, alone in its sandbox: no network, no binary log, no durability.
_SERVER = (
    f"--no-defaults --datadir={DATA} --socket={SOCKET} --skip-networking "
    f"--pid-file={PID} --log-error={LOG} --tmpdir=/tmp --skip-log-bin "
    "--innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=0 "
    "--innodb-doublewrite=0 --skip-name-resolve --innodb-log-file-size=16M"
)


def _launch(options: str = "") -> str:
    """The server started in the background: as the start runs it, and the restart (options)."""
    return (
        f"SERVER=$(pick mariadbd mysqld) || exit 127; rm -f {EXITED}; "
        f"(nohup $SERVER {_SERVER}{options}; echo $? >{EXITED}) </dev/null >/dev/null 2>&1 & "
    )


# The project's image holds a data directory made when it was built: copying it is faster than
# mariadb-install-db. Any other image gets mariadb-install-db.
TEMPLATE = "/var/lib/restore-tests/mysql-template"
_START = (
    f"if [ -d {TEMPLATE} ]; then {copy_template(TEMPLATE, DATA)}; else "
    "INSTALL=$(pick mariadb-install-db mysql_install_db) || exit 127; "
    f"$INSTALL --no-defaults --datadir={DATA} --auth-root-authentication-method=normal "
    "--skip-test-db --skip-name-resolve --skip-log-bin --innodb-log-file-size=16M "
    ">/scratch/install.log 2>&1 || { tail -n 5 /scratch/install.log >&2; exit 1; }; fi; "
    + _launch()
)
# `mariadb-admin ping` answers "alive" even when access is denied: only a real query counts.
_READY = f"[ \"$({_CLIENT} -Nse 'select 1')\" = 1 ]"
# While the server starts: ready, not yet, or gone (its exit recorded: waiting is pointless).
_READY_OR_GONE = (
    f"{_READY} 2>/dev/null && exit 0; [ -e {EXITED} ] && "
    f'{{ echo "the server exited ($(cat {EXITED}))" >&2; exit {READY_GAVE_UP}; }}; exit 1'
)
# A dump that loads the mysql schema and ends with FLUSH PRIVILEGES (--all-databases
# --flush-privileges) gives root the source's password: the client is then refused. SIGTERM
# stops the server whatever the grants (mariadb-admin shutdown needs a login); the pid file goes
# when it has stopped (a stopped server stays <defunct> under `sleep infinity`: kill -0 succeeds).
_RESTART = (
    f'kill -TERM "$(cat {PID})" || exit 1; SECONDS=0; '
    f"while [ -e {PID} ]; do [ $SECONDS -lt {STOP_SECONDS} ] || "
    f"{{ echo 'the server did not stop within {STOP_SECONDS}s' >&2; exit 1; }}; sleep 0.02; done; "
    + _launch(" --skip-grant-tables")
    + "SECONDS=0; "
    f"until {{ {_READY}; }} 2>/dev/null; do kill -0 $! 2>/dev/null || "
    "{ echo 'the server exited' >&2; exit 1; }; "
    f"[ $SECONDS -lt {READY_SECONDS} ] || "
    f"{{ echo 'the server did not answer within {READY_SECONDS}s' >&2; exit 1; }}; "
    "sleep 0.02; done"
)
GRANTS_REPLACED = "the dump replaced the grant tables: restarted without them for the checks"
_DATABASE_HEADER = re.compile(rb"^-- Host: .*Database: (\S+)", re.MULTILINE)
_UNESCAPE = {"\\\\": "\\", "\\t": "\t", "\\n": "\n", "\\0": "\0"}


class MysqlDatabase(DatabaseSection):
    """The MariaDB/MySQL dump and the database it restores."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_$]+$",
        max_length=64,
        description="The database the dump holds (a dump of one database without CREATE "
        "DATABASE is loaded into a database of this name).",
        examples=["shop"],
    )
    format: Literal["auto", "sql"] = Field(
        "auto", description="'sql' (mysqldump / mariadb-dump output), or 'auto'."
    )


def _shell(script: str) -> list[str]:
    return ["bash", "-c", _TOOLS + script]


class MysqlRunner(DatabaseRunner):
    """A MariaDB/MySQL dump loaded into a disposable server in the sandbox, checked, queried."""

    kind: ClassVar[str] = "mysql"
    engine: ClassVar[str] = MYSQL
    verify_model = DatabaseVerify
    default_image = DEFAULT_IMAGE
    server_user: ClassVar[str | None] = "mysql"
    log_file: ClassVar[str | None] = LOG
    sections: ClassVar[dict[str, tuple[Any, Any]]] = {
        "database": (MysqlDatabase, Field(description="The dump and its database."))
    }

    def server_commands(self, scenario: Any) -> tuple[list[str] | None, list[str] | None]:
        return _shell(_START), _shell(_READY_OR_GONE)

    def load_dump(self, context: RunContext, located: Located, dump: Dump) -> list[Check]:
        section: MysqlDatabase = database_section(context.scenario)
        head = decompressed_head(read_head(located.host_path, HEAD_BYTES))[1]
        named = _DATABASE_HEADER.search(head)
        if named and named[1].decode(errors="replace") != section.name:
            found = named[1].decode(errors="replace")
            return [
                Check.failed(
                    "load",
                    f"database {section.name} is not in {located.path}: the dump holds "
                    f"database {found}",
                    expected=section.name,
                    observed=found,
                )
            ]
        name = shlex.quote(section.name)
        script = (
            f"{_CLIENT} -e 'CREATE DATABASE IF NOT EXISTS `{section.name}`' || exit 1; "
            f'$DUMP_READ < "$1" | {_CLIENT} --binary-mode {name}'
        )
        result = read_dump(context, located, dump, _TOOLS + script, section.load_timeout)
        return [self._load_verdict(context, located, dump, result)]

    def _load_verdict(
        self, context: RunContext, located: Located, dump: Dump, result: ExecResult
    ) -> Check:
        fields = {"detail": result.detail(), "seconds": result.seconds}
        if result.exit_code != 0:
            first = next(
                (line for line in result.stderr.splitlines() if line.startswith("ERROR")), ""
            )
            if first and not (result.oom_killed or result.timed_out):
                return Check.failed(
                    "load", one_line(f"{located.path} loads with errors; first: {first}"), **fields
                )
            return Check.failed("load", load_failed(result, f"loading {located.path}"), **fields)
        if not text_dump_complete(context, located, dump, COMPLETE_MARKER):
            return Check.failed(
                "load",
                f"{located.path} is cut short: it does not end with '{COMPLETE_MARKER}'",
                **fields,
            )
        return self._logged_in(context, Check.passed("load", observed=dump.description, **fields))

    def _logged_in(self, context: RunContext, load: Check) -> Check:
        """The load's check once the client can log in again: when the dump's grant tables
        refuse it, the server restarts without them; an ERROR if that fails."""
        probe = context.sandbox.exec(_shell(_READY), 30.0, user=self.server_user)
        if probe.exit_code == 0 or "ERROR 1045" not in probe.stderr:
            return load
        restart = context.sandbox.exec(
            _shell(_RESTART), STOP_SECONDS + READY_SECONDS + 10.0, user=self.server_user
        )
        if restart.exit_code != 0:
            log = context.sandbox.log_tail() or "empty"
            return Check.error(
                "load",
                one_line(
                    "the dump replaced the grant tables and the server did not restart without "
                    f"them: {restart.reason('restart')}; log: {log}"
                ),
                detail=restart.detail(),
            )
        load.observed = f"{load.observed}; {GRANTS_REPLACED}"
        load.detail = "\n".join(text for text in (load.detail, GRANTS_REPLACED) if text)
        return load

    def query_argv(self, context: RunContext, sql: str) -> list[str]:
        name = database_section(context.scenario).name
        return [*_shell(f'{_CLIENT} --batch -D "$1" -e "$2"'), "query", name, sql]

    def split_rows(self, text: str) -> list[list[str]]:
        return [line.split("\t") for line in text.splitlines()]

    def parse_rows(self, rows: list[list[str]]) -> list[list[str | None]]:
        return [[None if cell == "NULL" else _unescaped(cell) for cell in row] for row in rows]

    def is_syntax_error(self, message: str) -> bool:
        return "ERROR 1064" in message

    def integrity_check(self, context: RunContext) -> Check:
        name = "integrity (mariadb-check)"
        database = database_section(context.scenario).name
        result = context.sandbox.exec(
            [
                *_shell('$CHECK --no-defaults --socket=/scratch/mysqld.sock -uroot "$1"'),
                "check",
                database,
            ],
            3600.0,
        )
        problems = [
            line.strip()
            for line in result.stdout.splitlines()
            if re.search(r"\berror\b|corrupt", line, re.IGNORECASE)
        ]
        if result.exit_code != 0 and not problems:
            return Check.error(name, f"mariadb-check could not run: {result.reason('check')}")
        if problems:
            return Check.failed(
                name,
                one_line(f"mariadb-check found {len(problems)} problems; first: {problems[0]}"),
                detail=result.detail(),
            )
        tables = sum(1 for line in result.stdout.splitlines() if line.rstrip().endswith("OK"))
        return Check.passed(name, observed=f"{tables} tables OK", proves_data=tables > 0)

    def table_count_sql(self, context: RunContext) -> str:
        return (
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
            "AND table_type = 'BASE TABLE'"
        )


def _unescaped(cell: str) -> str:
    """The client's --batch escapes: backslash, tab, newline and NUL."""
    if "\\" not in cell:
        return cell
    return re.sub(r"\\[\\tn0]", lambda match: _UNESCAPE[match[0]], cell)

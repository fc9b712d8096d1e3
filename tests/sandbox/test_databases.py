"""Database backups end to end: real dumps of PostgreSQL, MariaDB and SQLite, made by the engines'
own tools, loaded into real servers inside real sandboxes through `restore-tests check`, from
restic, local and S3 sources; each failure with its exact reason, history row, and nothing left
behind."""

from __future__ import annotations

import gzip
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, PASSWORD_VARIABLE, assert_no_leftovers, history_rows
from tests.database_helpers import (
    MARIADB,
    PG15,
    PG17,
    SANDBOX,
    backed_up_with_restic,
    check,
    checks_by_name,
    copy,
    database_scenario,
    local,
    make_postgres_dumps,
    make_sqlite_file,
)

pytestmark = pytest.mark.sandbox

PG_VERIFY = (
    "  tables: {min: 2}\n"
    "  queries:\n"
    "    - {sql: 'SELECT count(*) FROM invoices', expect: '= 2000'}\n"
    "    - {sql: 'SELECT max(issued_at) FROM invoices', fresher_than: 2h}\n"
    "    - {sql: 'SELECT id, name FROM customers ORDER BY id', rows: [[1, Acme], [2, Globex], "
    "[3, null]]}\n"
)
MYSQL_VERIFY = (
    "  queries:\n"
    "    - {sql: 'SELECT count(*) FROM orders', expect: '>= 1500'}\n"
    "    - {sql: 'SELECT max(placed_at) FROM orders', fresher_than: 2h}\n"
)
SQLITE_VERIFY = (
    "  tables: {min: 2}\n  queries:\n    - {sql: 'SELECT count(*) FROM contacts', expect: 5000}\n"
)


def pg_scenario(folder: Path, source: str, verify: str = PG_VERIFY, **fields: str) -> Path:
    database = fields.pop("database", "{name: billing}")
    return database_scenario(folder, "billing-db", "postgres", source, database, verify, **fields)


# --- PostgreSQL


def test_a_postgres_dump_restored_from_restic_loads_answers_and_judges_the_rpo_on_its_rows(
    pg_dumps, restic_binary, tmp_path, history_url
):
    backed_up = tmp_path / "host"
    copy(pg_dumps / "billing.c", backed_up / "var" / "backups" / "billing.dump")
    (backed_up / "var" / "backups" / "other.log").write_text("not the dump\n")
    repository = backed_up_with_restic(restic_binary, backed_up, tmp_path)
    source = (
        f"{{type: restic, repository: {repository}, password_env: {PASSWORD_VARIABLE}, "
        f"path: /var/backups/billing.dump, restic_binary: {restic_binary}}}"
    )

    code, record = check(
        pg_scenario(tmp_path, source), history_url, **{PASSWORD_VARIABLE: PASSWORD}
    )

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    checks = checks_by_name(record)
    assert checks["load"]["observed"].startswith("a PostgreSQL custom-format dump from server 15.")
    assert checks["integrity (pg_amcheck)"]["status"] == "passed"
    assert checks["tables"]["observed"] == "2"
    assert checks["query 1: SELECT count(*) FROM invoices"]["observed"] == "2000"
    assert checks["query 3: SELECT id, name FROM customers ORDER BY id"]["status"] == "passed"
    # The newest invoice is an hour older than the snapshot: the RPO is judged on it.
    assert record["rpo_basis"] == "newest_row"
    assert record["rpo_seconds"] >= 3600
    assert {"sandbox", "fetch", "load", "verify"} <= set(record["phases"])
    [row] = history_rows(history_url)
    assert (row["status"], row["rpo_basis"]) == ("pass", "newest_row")
    assert_no_leftovers()


@pytest.mark.parametrize(
    ("dump", "name"),
    [("billing.t", "billing.tar"), ("billing.p", "billing.sql"), ("billing.c", "billing.dump")],
)
def test_tar_plain_and_gzip_compressed_postgres_dumps_load_and_pass(
    pg_dumps, tmp_path, history_url, dump, name
):
    path = copy(pg_dumps / dump, tmp_path / "backups" / name)
    if name.endswith(".dump"):  # a custom archive, gzip-compressed by the backup job
        path = tmp_path / "backups" / "billing.dump.gz"
        path.write_bytes(gzip.compress((pg_dumps / dump).read_bytes()))

    code, record = check(pg_scenario(tmp_path, local(path)), history_url)

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    assert checks_by_name(record)["load"]["status"] == "passed"
    assert_no_leftovers()


def test_a_truncated_postgres_archive_fails_quoting_pg_restore(pg_dumps, tmp_path, history_url):
    whole = (pg_dumps / "billing.c").read_bytes()
    path = tmp_path / "billing.dump"
    path.write_bytes(whole[: len(whole) * 2 // 3])

    code, record = check(pg_scenario(tmp_path, local(path)), history_url)

    assert (code, record["status"]) == (1, "fail")
    assert record["reason"].startswith("/billing.dump loads with errors; first: pg_restore: error:")
    assert history_rows(history_url)[0]["reason"] == record["reason"]
    assert_no_leftovers()


def test_a_plain_dump_cut_between_two_statements_fails_as_cut_short(
    pg_dumps, tmp_path, history_url
):
    text = (pg_dumps / "billing.p").read_text()
    path = tmp_path / "billing.sql"
    path.write_text(text[: text.index("CREATE INDEX")])  # loads without an error

    code, record = check(
        pg_scenario(tmp_path, local(path), verify="  tables: {min: 1}\n"), history_url
    )

    assert (code, record["status"]) == (1, "fail")
    assert record["reason"] == (
        "/billing.sql is cut short: it does not end with '-- PostgreSQL database dump complete'"
    )
    assert_no_leftovers()


def test_a_plain_dump_that_loads_with_errors_fails_with_the_first_error(
    pg_dumps, tmp_path, history_url
):
    text = (pg_dumps / "billing.p").read_text()
    broken = text.replace("CREATE INDEX", "INSERT INTO ledger VALUES (1);\nCREATE INDEX", 1)
    path = tmp_path / "billing.sql"
    path.write_text(broken)

    code, record = check(pg_scenario(tmp_path, local(path)), history_url)

    assert (code, record["status"]) == (1, "fail")
    assert record["reason"].startswith("/billing.sql loads with errors; first: ")
    assert 'relation "ledger" does not exist' in record["reason"]
    assert_no_leftovers()


def test_a_dump_that_writes_without_end_is_stopped_at_its_scratch_size_and_fails(
    pg_dumps, tmp_path, history_url
):
    text = (pg_dumps / "billing.p").read_text()
    flood = (
        "CREATE TABLE public.flood (filler text);\n"
        "INSERT INTO public.flood SELECT repeat(md5(g::text), 30)\n"
        "  FROM generate_series(1, 5000000) g;\n"
    )
    path = tmp_path / "billing.sql"
    path.write_text(text.replace("CREATE INDEX", flood + "CREATE INDEX", 1))
    scenario = pg_scenario(
        tmp_path,
        local(path),
        database="{name: billing, scratch: 300m}",
        verify="  tables: {min: 1}\n",
    )

    started = time.monotonic()
    code, record = check(scenario, history_url)

    assert (code, record["status"]) == (1, "fail"), record["reason"]
    assert record["reason"].startswith("the sandbox wrote ")
    assert "more than the 300.0 MiB set aside for it: stopped" in record["reason"]
    assert time.monotonic() - started < 60  # stopped, not loaded to the end (about 5 GB)
    assert history_rows(history_url)[0]["reason"] == record["reason"]
    assert_no_leftovers()


def test_a_dump_from_a_newer_server_is_an_error_naming_both_versions(
    tmp_path_factory, tmp_path, history_url
):
    newer = make_postgres_dumps(tmp_path_factory.mktemp("pg17"), PG17)
    path = copy(newer / "billing.c", tmp_path / "billing.dump")

    code, record = check(pg_scenario(tmp_path, local(path)), history_url)

    assert (code, record["status"]) == (1, "error")
    assert record["reason"].startswith("the dump was made by PostgreSQL 17.")
    assert "newer than this sandbox's pg_restore 15." in record["reason"]
    assert record["reason"].endswith("use an image of PostgreSQL 17 or newer")
    assert_no_leftovers()


def test_a_mariadb_dump_given_as_a_postgres_backup_fails_naming_what_it_is(
    mysql_dump, tmp_path, history_url
):
    path = copy(mysql_dump, tmp_path / "billing.sql")

    code, record = check(pg_scenario(tmp_path, local(path)), history_url)

    assert (code, record["status"]) == (1, "fail")
    assert record["reason"].startswith("/billing.sql is a MariaDB/MySQL SQL dump from server 10.11")
    assert record["reason"].endswith("not a PostgreSQL dump it can load")
    assert_no_leftovers()


def test_a_database_name_that_is_not_in_the_dump_fails(pg_dumps, tmp_path, history_url):
    path = copy(pg_dumps / "billing.c", tmp_path / "billing.dump")
    scenario = pg_scenario(tmp_path, local(path), database="{name: payroll}")

    code, record = check(scenario, history_url)

    assert (code, record["status"]) == (1, "fail")
    assert record["reason"] == (
        "database payroll is not in /billing.dump: the dump holds database billing"
    )
    assert_no_leftovers()


def test_a_query_with_a_syntax_error_is_an_error_and_an_unmet_expectation_a_failure(
    pg_dumps, tmp_path, history_url
):
    path = copy(pg_dumps / "billing.c", tmp_path / "billing.dump")
    verify = (
        "  queries:\n"
        "    - {sql: 'SELEC count(*) FROM invoices', expect: '> 0'}\n"
        "    - {sql: 'SELECT count(*) FROM invoices', expect: 'between 5000 and 9000'}\n"
        "    - {sql: 'SELECT count(*) FROM payments', expect: '> 0'}\n"
    )

    code, record = check(pg_scenario(tmp_path, local(path), verify=verify), history_url)

    assert (code, record["status"]) == (1, "error")
    checks = list(checks_by_name(record).values())[-3:]
    assert [check["status"] for check in checks] == ["error", "failed", "failed"]
    assert checks[0]["reason"].startswith(
        'query 1 is not valid SQL: ERROR: syntax error at or near "SELEC"'
    )
    assert checks[1]["reason"] == "query 2: 2000, expected between 5000 and 9000"
    assert (checks[1]["expected"], checks[1]["observed"]) == ("between 5000 and 9000", "2000")
    assert checks[2]["reason"].startswith(
        'query 3 failed: ERROR: relation "payments" does not exist'
    )
    assert_no_leftovers()


def test_a_server_killed_by_the_memory_limit_is_reported_as_out_of_memory(
    pg_dumps, tmp_path, history_url
):
    path = copy(pg_dumps / "billing.c", tmp_path / "billing.dump")
    verify = (
        "  queries:\n    - {sql: 'SELECT length(string_agg(repeat(md5(g::text), 40), '''')) "
        "FROM generate_series(1, 3000000) g', expect: '> 0'}\n"
    )
    scenario = pg_scenario(tmp_path, local(path), verify=verify, extra="sandbox: {memory: 256m}\n")

    code, record = check(scenario, history_url)

    assert (code, record["status"]) == (1, "fail")
    assert record["reason"].startswith("query 1 failed: ")
    assert "out of memory, limit 256 MiB" in record["reason"]
    assert_no_leftovers()


def broken_image(folder: Path, base: str, binary: str, script: str, tag: str) -> str:
    """The real image with one program replaced by a script that fails as a server that cannot
    start does (no network needed: COPY only)."""
    (folder / "program").write_text(script)
    (folder / "program").chmod(0o755)
    (folder / "Dockerfile").write_text(f"FROM {base}\nCOPY program {binary}\n")
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, str(folder)],
        check=True,
        capture_output=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    return tag


@pytest.fixture(scope="module")
def broken_postgres_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A pg_ctl that writes a FATAL line to the server's log and complains, as pg_ctl does."""
    script = (
        "#!/bin/sh\n"
        "echo 'FATAL:  could not map anonymous shared memory: simulated' >> /scratch/postgres.log\n"
        "echo 'pg_ctl: could not start server' >&2\nexit 1\n"
    )
    tag = "restore-tests-test/broken-postgres:15"
    yield broken_image(
        tmp_path_factory.mktemp("broken-pg"), PG15, "/usr/lib/postgresql/15/bin/pg_ctl", script, tag
    )
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


@pytest.fixture(scope="module")
def broken_mariadb_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A mariadbd that logs an error and exits at once, as a server that cannot start does."""
    script = (
        "#!/bin/sh\n"
        "echo '[ERROR] InnoDB: simulated: cannot allocate the buffer pool' >> /scratch/mysqld.log\n"
        "exit 1\n"
    )
    tag = "restore-tests-test/broken-mariadb:10.11"
    yield broken_image(
        tmp_path_factory.mktemp("broken-mariadb"), MARIADB, "/usr/sbin/mariadbd", script, tag
    )
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_a_server_that_does_not_start_is_an_error_with_its_last_log_lines(
    pg_dumps, broken_postgres_image, tmp_path, history_url
):
    path = copy(pg_dumps / "billing.c", tmp_path / "billing.dump")
    scenario = pg_scenario(
        tmp_path, local(path), extra=f"sandbox: {{image: '{broken_postgres_image}'}}\n"
    )

    code, record = check(scenario, history_url)

    assert (code, record["status"]) == (1, "error"), record["reason"]
    assert record["reason"].startswith("the server in sandbox restore-tests-")
    assert (
        f"({broken_postgres_image}) did not start: pg_ctl: could not start server"
        in (record["reason"])
    )
    assert record["reason"].endswith("log: FATAL: could not map anonymous shared memory: simulated")
    assert history_rows(history_url)[0]["status"] == "error"
    assert_no_leftovers()


def test_a_mariadb_server_that_exits_at_start_is_an_error_at_once_with_its_log(
    mysql_dump, broken_mariadb_image, tmp_path, history_url
):
    path = copy(mysql_dump, tmp_path / "shop.sql")
    scenario = database_scenario(
        tmp_path, "shop-db", "mysql", local(path), "{name: shop}", MYSQL_VERIFY,
        extra=f"sandbox: {{image: '{broken_mariadb_image}'}}\n",
    )  # fmt: skip

    started = time.monotonic()
    code, record = check(scenario, history_url)

    assert (code, record["status"]) == (1, "error"), record["reason"]
    assert record["reason"] == (
        f"the server in sandbox {record['reason'].split()[4]} ({broken_mariadb_image}) did not "
        "start: the server exited (1); log: [ERROR] InnoDB: simulated: cannot allocate the buffer "
        "pool"
    )
    assert time.monotonic() - started < 30  # not the 60 s readiness limit: it is gone
    assert_no_leftovers()


def test_an_image_without_postgresql_is_an_error_naming_the_image(pg_dumps, tmp_path, history_url):
    path = copy(pg_dumps / "billing.c", tmp_path / "billing.dump")
    scenario = pg_scenario(tmp_path, local(path), extra=f"sandbox: {{image: '{SANDBOX}'}}\n")

    code, record = check(scenario, history_url)

    assert (code, record["status"]) == (1, "error")
    assert record["reason"] == (
        f"sandbox image {SANDBOX} has no user postgres: it is not an image of this kind's engine"
    )
    assert_no_leftovers()


# --- MariaDB


def test_a_mariadb_dump_from_s3_loads_answers_and_passes(
    mysql_dump, s3_server, uploader, bucket, tmp_path, history_url
):
    uploader.put_object(
        Bucket=bucket,
        Key="nightly/shop-2026-12-01.sql.gz",
        Body=gzip.compress(mysql_dump.read_bytes()),
    )
    source = (
        f"{{type: s3, endpoint: '{s3_server.endpoint}', bucket: {bucket}, prefix: nightly/, "
        "unpack: none, env_from: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]}"
    )
    scenario = database_scenario(tmp_path, "shop-db", "mysql", source, "{name: shop}", MYSQL_VERIFY)

    code, record = check(scenario, history_url)

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    checks = checks_by_name(record)
    assert checks["load"]["observed"].startswith("a MariaDB/MySQL SQL dump (gzip-compressed)")
    assert checks["integrity (mariadb-check)"]["observed"] == "2 tables OK"
    assert checks["query 1: SELECT count(*) FROM orders"]["observed"] == "1500"
    assert_no_leftovers()


def test_a_truncated_mariadb_dump_fails(mysql_dump, tmp_path, history_url):
    text = mysql_dump.read_text()
    path = tmp_path / "shop.sql"
    path.write_text(text[: len(text) // 2])

    code, record = check(
        database_scenario(tmp_path, "shop-db", "mysql", local(path), "{name: shop}", MYSQL_VERIFY),
        history_url,
    )

    assert (code, record["status"]) == (1, "fail")
    assert record["reason"].startswith("/shop.sql loads with errors; first: ERROR 1064")
    assert history_rows(history_url)[0]["status"] == "fail"
    assert_no_leftovers()


def test_a_mariadb_query_with_a_syntax_error_is_an_error(mysql_dump, tmp_path, history_url):
    path = copy(mysql_dump, tmp_path / "shop.sql")
    verify = "  queries:\n    - {sql: 'SELECT count(* FROM orders', expect: '> 0'}\n"

    code, record = check(
        database_scenario(tmp_path, "shop-db", "mysql", local(path), "{name: shop}", verify),
        history_url,
    )

    assert (code, record["status"]) == (1, "error")
    assert record["reason"].startswith("query 1 is not valid SQL: ERROR 1064 (42000)")
    assert_no_leftovers()


# --- SQLite


def test_a_sqlite_database_file_is_copied_checked_queried_and_passes(tmp_path, history_url):
    path = make_sqlite_file(tmp_path / "nas" / "crm.sqlite3")

    code, record = check(
        database_scenario(tmp_path, "crm", "sqlite", local(path), "{}", SQLITE_VERIFY), history_url
    )

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    checks = checks_by_name(record)
    assert checks["integrity (PRAGMA integrity_check)"]["observed"] == "ok"
    assert checks["tables"]["observed"] == "2"
    assert_no_leftovers()


def test_a_corrupt_sqlite_file_fails_with_the_integrity_output(tmp_path, history_url):
    path = make_sqlite_file(tmp_path / "nas" / "crm.sqlite3")
    with open(path, "r+b") as stream:  # garbage over a page of the contacts table
        stream.seek(4096 * 3 + 100)
        stream.write(b"\xff" * 3000)

    code, record = check(
        database_scenario(tmp_path, "crm", "sqlite", local(path), "{}", SQLITE_VERIFY), history_url
    )

    assert (code, record["status"]) == (1, "fail")
    integrity = checks_by_name(record)["integrity (PRAGMA integrity_check)"]
    assert integrity["status"] == "failed"
    assert integrity["reason"].startswith("integrity_check found ")
    assert "On tree page" in integrity["detail"]
    assert_no_leftovers()


def test_a_sqlite_dump_loads_and_passes_and_a_truncated_one_fails(tmp_path, history_url):
    database = make_sqlite_file(tmp_path / "made" / "crm.sqlite3")
    text = subprocess.run(
        ["sqlite3", str(database), ".dump"], capture_output=True, text=True, check=True
    ).stdout
    whole, cut = tmp_path / "whole" / "crm.sql", tmp_path / "cut" / "crm.sql"
    whole.parent.mkdir()
    cut.parent.mkdir()
    whole.write_text(text)
    cut.write_text(text[: text.rindex("COMMIT;")])

    results = [
        check(
            database_scenario(folder, "crm", "sqlite", local(path), "{}", SQLITE_VERIFY),
            history_url,
        )
        for folder, path in ((whole.parent, whole), (cut.parent, cut))
    ]

    assert (results[0][0], results[0][1]["status"]) == (0, "pass"), results[0][1]["reason"]
    assert (results[1][0], results[1][1]["status"]) == (1, "fail")
    assert results[1][1]["reason"] == "/crm.sql is cut short: a .dump ends with COMMIT;"
    assert_no_leftovers()

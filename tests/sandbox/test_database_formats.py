"""Database dump formats and placements end to end, through `restore-tests check`: a pg_dump
directory from restic, a dump named among several restored files, a MariaDB dump of another
database, zstd and xz compression, a plain dump whose owner role is missing, and a kept sandbox
in which nothing listens on a network port. Each with its exact verdict and nothing left
behind."""

from __future__ import annotations

import io
import json
import lzma
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from tests.conftest import (
    PASSWORD,
    PASSWORD_VARIABLE,
    assert_no_leftovers,
    history_rows,
    run_cli,
)
from tests.database_helpers import (
    backed_up_with_restic,
    check,
    checks_by_name,
    copy,
    database_scenario,
    local,
    make_sqlite_file,
)

pytestmark = pytest.mark.sandbox

TCP_LISTEN = "0A"  # the st column of /proc/net/tcp for a listening socket
PG_VERIFY = (
    "  tables: {min: 2}\n"
    "  queries:\n    - {sql: 'SELECT count(*) FROM invoices', expect: '= 2000'}\n"
)
SQLITE_VERIFY = (
    "  tables: {min: 2}\n  queries:\n    - {sql: 'SELECT count(*) FROM contacts', expect: 5000}\n"
)


def pg_scenario(folder: Path, source: str, database: str = "{name: billing}") -> Path:
    return database_scenario(folder, "billing-db", "postgres", source, database, PG_VERIFY)


def tar_archive(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


# --- where the dump is


def test_a_pg_dump_directory_restored_from_restic_loads_and_passes(
    pg_dumps, restic_binary, tmp_path, history_url
):
    host = tmp_path / "host"
    copy(pg_dumps / "billing.d", host / "var" / "backups" / "billing.d")
    repository = backed_up_with_restic(restic_binary, host, tmp_path)
    source = (
        f"{{type: restic, repository: {repository}, password_env: {PASSWORD_VARIABLE}, "
        f"path: /var/backups/billing.d, restic_binary: {restic_binary}}}"
    )

    code, record = check(
        pg_scenario(tmp_path, source), history_url, **{PASSWORD_VARIABLE: PASSWORD}
    )

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    checks = checks_by_name(record)
    assert checks["load"]["observed"].startswith(
        "a PostgreSQL directory-format dump from server 15."
    )
    assert checks["query 1: SELECT count(*) FROM invoices"]["observed"] == "2000"
    [row] = history_rows(history_url)
    assert row["status"] == "pass"
    assert_no_leftovers()


def test_several_restored_files_fail_unless_database_dump_names_one(
    pg_dumps, tmp_path, history_url
):
    archive = tar_archive(
        tmp_path / "nas" / "host.tar",
        {
            "var/backups/billing.dump": (pg_dumps / "billing.c").read_bytes(),
            "var/backups/other.log": b"not the dump\n",
        },
    )
    source = f"{{type: local, path: {archive}, unpack: auto}}"
    unnamed, named = tmp_path / "unnamed", tmp_path / "named"
    unnamed.mkdir()
    named.mkdir()

    failed_code, failed = check(pg_scenario(unnamed, source), history_url)
    passed_code, passed = check(
        pg_scenario(named, source, database="{name: billing, dump: /var/backups/billing.dump}"),
        history_url,
    )

    assert (failed_code, failed["status"]) == (1, "fail")
    assert failed["reason"] == (
        "the restored data holds 2 files (var/backups/billing.dump, var/backups/other.log): "
        "name the dump with database.dump"
    )
    assert (passed_code, passed["status"]) == (0, "pass"), passed["reason"]
    assert checks_by_name(passed)["load"]["observed"].startswith(
        "a PostgreSQL custom-format dump from server 15."
    )
    rows = {row["status"]: row for row in history_rows(history_url)}
    assert rows["fail"]["reason"] == failed["reason"]
    assert set(rows) == {"fail", "pass"}
    assert_no_leftovers()


def test_a_mariadb_dump_of_another_database_fails_naming_the_one_it_holds(
    mysql_dump, tmp_path, history_url
):
    path = copy(mysql_dump, tmp_path / "shop.sql")
    assert re.search(r"^-- Host: .*Database: shop$", path.read_text(), re.MULTILINE)
    verify = "  queries:\n    - {sql: 'SELECT count(*) FROM orders', expect: '>= 1500'}\n"
    scenario = database_scenario(
        tmp_path, "orders-db", "mysql", local(path), "{name: orders}", verify
    )

    code, record = check(scenario, history_url)

    assert (code, record["status"]) == (1, "fail")
    assert record["reason"] == "database orders is not in /shop.sql: the dump holds database shop"
    load = checks_by_name(record)["load"]
    assert (load["expected"], load["observed"]) == ("orders", "shop")
    assert history_rows(history_url)[0]["reason"] == record["reason"]
    assert_no_leftovers()


# --- compressed files


def test_a_zstd_compressed_sqlite_file_is_decompressed_checked_and_passes(tmp_path, history_url):
    database = make_sqlite_file(tmp_path / "made" / "crm.sqlite3")
    path = tmp_path / "nas" / "crm.sqlite3.zst"
    path.parent.mkdir()
    path.write_bytes(zstandard.ZstdCompressor().compress(database.read_bytes()))

    code, record = check(
        database_scenario(tmp_path, "crm", "sqlite", local(path), "{}", SQLITE_VERIFY), history_url
    )

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    checks = checks_by_name(record)
    assert (checks["load"]["status"], checks["load"]["observed"]) == (
        "passed",
        "a SQLite database file (zstd-compressed)",
    )
    assert checks["integrity (PRAGMA integrity_check)"]["observed"] == "ok"
    assert checks["query 1: SELECT count(*) FROM contacts"]["observed"] == "5000"
    assert history_rows(history_url)[0]["status"] == "pass"
    assert_no_leftovers()


def test_an_xz_compressed_plain_postgres_dump_loads_and_passes(pg_dumps, tmp_path, history_url):
    path = tmp_path / "backups" / "billing.sql.xz"
    path.parent.mkdir()
    path.write_bytes(lzma.compress((pg_dumps / "billing.p").read_bytes()))

    code, record = check(pg_scenario(tmp_path, local(path)), history_url)

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    assert checks_by_name(record)["load"]["observed"].startswith(
        "a PostgreSQL SQL dump (xz-compressed) from server 15."
    )
    assert_no_leftovers()


# --- a plain dump's roles


def test_a_plain_dump_whose_owner_role_is_missing_loads_and_passes(pg_dumps, tmp_path, history_url):
    path = copy(pg_dumps / "billing.p", tmp_path / "billing.sql")
    # The sandbox's fresh server has no role billing_app: this line fails there, uncounted.
    assert "OWNER TO billing_app;" in path.read_text()

    code, record = check(pg_scenario(tmp_path, local(path)), history_url)

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    load = checks_by_name(record)["load"]
    assert load["status"] == "passed"
    assert load["observed"].startswith("a PostgreSQL SQL dump from server 15.")
    assert history_rows(history_url)[0]["status"] == "pass"
    assert_no_leftovers()


# --- the sandbox's network


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def socket_lines(container: str, table: str) -> list[list[str]]:
    """The sockets of /proc/net/TABLE inside the container, split in columns (no header)."""
    text = docker("exec", container, "cat", f"/proc/net/{table}")
    return [line.split() for line in text.splitlines()[1:] if line.strip()]


def test_a_kept_postgres_sandbox_listens_on_no_network_port_only_on_its_unix_socket(
    pg_dumps, tmp_path, history_url
):
    path = copy(pg_dumps / "billing.c", tmp_path / "billing.dump")
    result = run_cli(
        "check", str(pg_scenario(tmp_path, local(path))), "--db", history_url, "--keep", "--json"
    )
    output = json.loads(result.stdout)
    [record] = output["results"]
    run_id = output["run_id"]
    try:
        assert (result.returncode, record["status"]) == (0, "pass"), record["reason"]
        container = re.search(r"docker exec -it (\S+) sh", record["kept"])[1]
        assert f"restore-tests prune --run {run_id})" in record["kept"]

        listening = {
            table: [line for line in socket_lines(container, table) if line[3] == TCP_LISTEN]
            for table in ("tcp", "tcp6")
        }
        datagram = {table: socket_lines(container, table) for table in ("udp", "udp6")}
        network_mode = docker("inspect", "-f", "{{.HostConfig.NetworkMode}}", container)
        unix_socket = subprocess.run(
            ["docker", "exec", container, "test", "-S", "/scratch/.s.PGSQL.5432"], timeout=60
        )
    finally:
        pruned = run_cli("prune", "--run", run_id)

    assert listening == {"tcp": [], "tcp6": []}
    assert datagram == {"udp": [], "udp6": []}
    assert network_mode.strip() == "none"
    assert unix_socket.returncode == 0, "no server socket at /scratch/.s.PGSQL.5432"
    assert f"removed container {container}" in pruned.stdout
    assert "removed staging" in pruned.stdout
    assert history_rows(history_url)[0]["status"] == "pass"
    assert_no_leftovers()


def test_a_restic_path_not_in_the_snapshot_restores_nothing_and_fails(
    pg_dumps, restic_binary, tmp_path, history_url
):
    host = tmp_path / "host"
    copy(pg_dumps / "billing.c", host / "var" / "backups" / "billing.dump")
    repository = backed_up_with_restic(restic_binary, host, tmp_path)
    source = (
        f"{{type: restic, repository: {repository}, password_env: {PASSWORD_VARIABLE}, "
        f"path: /var/backups/payroll.dump, restic_binary: {restic_binary}}}"
    )

    code, record = check(
        pg_scenario(tmp_path, source), history_url, **{PASSWORD_VARIABLE: PASSWORD}
    )

    assert (code, record["status"]) == (1, "fail")
    assert record["reason"].startswith("the restore produced no files (snapshot ")
    assert "; path /var/backups/payroll.dump is not in the snapshot)" in record["reason"]
    assert checks_by_name(record)["dump"]["reason"] == (
        "the restored data holds no file: there is no dump to read"
    )
    assert history_rows(history_url)[0]["status"] == "fail"
    assert_no_leftovers()

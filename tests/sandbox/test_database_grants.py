"""A MariaDB dump that replaces the grant tables: made by the real mariadb-dump of a server whose
root has a password, with --all-databases --flush-privileges, so loading it locks the sandbox's
root out. The drill must still check the restored data, and say why it restarted the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import assert_no_leftovers, history_rows
from tests.database_helpers import (
    MARIADB,
    MYSQL_SERVER,
    check,
    checks_by_name,
    database_scenario,
    run_in_image,
)

pytestmark = pytest.mark.sandbox

SHOP_DATA = """
CREATE DATABASE shop; USE shop;
CREATE TABLE items (id int PRIMARY KEY, name varchar(40));
INSERT INTO items SELECT seq, concat('item ', seq) FROM seq_1_to_250;
ALTER USER root@localhost IDENTIFIED BY 'x';
"""
# The shop, dumped whole while root has a password (the data sets it last).
DUMP_SCRIPT = MYSQL_SERVER + (
    "mariadb-dump --no-defaults --socket=/scratch/s -uroot -px --all-databases "
    "--flush-privileges > /out/all.sql\n"
)
VERIFY = "  queries:\n    - {sql: 'SELECT count(*) FROM items', expect: '= 250'}\n"


def make_dump_with_root_password(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.sql").write_text(SHOP_DATA)
    run_in_image(MARIADB, "mysql", DUMP_SCRIPT, out)
    return out / "all.sql"


def test_a_dump_that_replaces_the_grant_tables_still_passes_after_a_restart_without_them(
    tmp_path, history_url
):
    dump = make_dump_with_root_password(tmp_path / "made")
    assert b"FLUSH PRIVILEGES" in dump.read_bytes()
    source = f"{{type: local, path: {dump}, unpack: none}}"
    scenario = database_scenario(tmp_path, "shop-db", "mysql", source, "{name: shop}", VERIFY)

    code, record = check(scenario, history_url)

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    checks = checks_by_name(record)
    load = checks["load"]
    assert load["status"] == "passed"
    assert load["observed"].startswith("a MariaDB/MySQL SQL dump from server 10.11.")
    assert load["observed"].endswith(
        "; the dump replaced the grant tables: restarted without them for the checks"
    )
    assert checks["integrity (mariadb-check)"]["status"] == "passed"
    assert checks["query 1: SELECT count(*) FROM items"]["observed"] == "250"
    [row] = history_rows(history_url)
    assert (row["scenario"], row["status"]) == ("shop-db", "pass")
    assert checks_by_name(row)["load"]["observed"] == load["observed"]
    assert_no_leftovers()

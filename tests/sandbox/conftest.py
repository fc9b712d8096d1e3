"""Fixtures of the sandbox tests: real dumps, made once per session by the engines' own tools
in the local images (a few seconds each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.database_helpers import make_mysql_dump, make_postgres_dumps


@pytest.fixture(scope="session")
def pg_dumps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """billing.c, .d, .t, .p: pg_dump's four formats of one small database (PostgreSQL 15)."""
    return make_postgres_dumps(tmp_path_factory.mktemp("pg15"))


@pytest.fixture(scope="session")
def mysql_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """shop.sql: mariadb-dump of one small database (MariaDB 10.11)."""
    return make_mysql_dump(tmp_path_factory.mktemp("mariadb"))

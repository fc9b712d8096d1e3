"""The versioned JSON of history --json, and a result's proof read back from the history (real
SQLite, the real command line)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from restore_tests.history.store import HistoryStore
from restore_tests.report.proof import proven
from restore_tests.report.records import from_result, from_row
from restore_tests.results import FAIL, PASS, Check, ScenarioResult
from restore_tests.timing import judge
from tests.conftest import run_cli
from tests.history_helpers import record

pytestmark = pytest.mark.integration

STARTED = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


def test_history_json_rows_carry_the_schema_version_and_the_shared_statuses(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    store = HistoryStore(url)
    record(store, "share", STARTED)
    record(store, "erp-db", STARTED, status=FAIL)
    store.start_drill("run-running", "drill", "backup01", "test", None, STARTED)
    store.record_running(
        "run-running", ScenarioResult("crm", "sqlite", "/s/crm.yaml", "cd", STARTED)
    )

    shown = run_cli("history", "--json", "--db", url)

    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert [row["schema_version"] for row in rows] == [1, 1, 1]
    assert sorted(row["status"] for row in rows) == ["fail", "pass", "running"]


def test_a_history_row_says_what_was_proven_as_the_fresh_result_did(tmp_path) -> None:
    store = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    result = ScenarioResult("erp-db", "postgres", "/s/erp-db.yaml", "ab" * 32, STARTED)
    result.status, result.finished_at, result.files, result.bytes = PASS, STARTED, 1, 2048
    result.rto = judge("rto", 12.0, 900.0, "measured")
    result.checks = [
        Check.passed("load", observed="a pg_dump custom archive"),
        Check.passed("integrity (pg_amcheck)", observed="no corruption", proves_data=True),
        Check.passed("query 1: SELECT count(*) FROM invoices", observed="1204", proves_data=True),
    ]
    store.start_drill("run-1", "check", "backup01", "test", None, STARTED)
    store.record_result("run-1", result)

    [row] = store.results(limit=None)

    assert proven(from_row(row)) == proven(from_result(result, "run-1"))
    assert proven(from_row(row)) == "1 query passed, integrity checked"

"""The history store on real SQLite files: migrations, round trips, queries, concurrency."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from restore_tests.errors import EnvironmentUnusable
from restore_tests.history.store import SCHEMA_REVISION, HistoryStore
from restore_tests.report.records import from_result, from_row
from restore_tests.results import ERROR, FAIL, PASS, Check, ScenarioResult
from restore_tests.timing import judge
from tests.conftest import (
    PASSWORD,
    PASSWORD_VARIABLE,
    assert_no_leftovers,
    run_cli,
    write_scenario,
)
from tests.history_helpers import write_concurrently

pytestmark = pytest.mark.integration

STARTED = datetime(2026, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)


def database_file(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def raw_rows(url: str, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(database_file(url)) as connection:
        return connection.execute(query).fetchall()


def a_result(
    scenario: str = "share", started_at: datetime = STARTED, status: str = PASS
) -> ScenarioResult:
    """A result as the pipeline builds one: objectives, phases and checks of every status."""
    result = ScenarioResult(
        scenario,
        "files",
        f"/etc/restore-tests/{scenario}.yaml",
        "ab" * 32,
        started_at,
        status=status,
        reason="" if status == PASS else "1 file differs from SHA256SUMS: data/compta/x.bin",
        finished_at=started_at + timedelta(seconds=42.5),
        snapshot_id="8ee13d15ef87f714d41ed5f3ccd9f1549b49fc677d6eff6bd65db8af773cc160",
        snapshot_time=started_at - timedelta(hours=3, minutes=12),
        source_version="0.18.0",
        files=1204,
        bytes=3 * 1024**3,
        rto=judge("rto", 41.25, 900.0, "measured"),
        rpo=judge("rpo", 11520.0, 93600.0, "snapshot_time"),
        phases={
            "preflight": 0.5,
            "select": 0.75,
            "fetch": 30.0,
            "sandbox": 1.25,
            "load": 0.0,
            "verify": 9.5,
            "teardown": 0.4,
        },
        checks=[
            Check.passed(
                "manifest /data/compta/SHA256SUMS",
                expected="44 files",
                observed="44 files match",
                proves_data=True,
                seconds=9.25,
            ),
            Check.failed(
                "sandbox file count",
                "found 3 files, expected at least 10",
                expected=">= 10",
                observed="3",
                detail="/restore/data",
            ),
            Check.error("sandbox: sh", "exited 127", detail="sh: unzip: not found"),
        ],
        kept="",
    )
    return result


def record(store: HistoryStore, run_id: str, *results: ScenarioResult) -> None:
    started = min((result.started_at for result in results), default=STARTED)
    store.start_drill(run_id, "check", "fs01", "0.1.0", "27.3.1", started)
    for result in results:
        store.record_result(run_id, result)
    store.finish_drill(run_id, PASS, f"{len(results)} passed", started + timedelta(minutes=1))


def test_a_fresh_database_gets_the_schema_through_alembic(history_url):
    assert not database_file(history_url).exists()
    HistoryStore(history_url)
    assert raw_rows(history_url, "SELECT version_num FROM alembic_version") == [(SCHEMA_REVISION,)]
    tables = {
        name
        for (name,) in raw_rows(history_url, "SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert tables >= {"alembic_version", "drills", "results", "phases", "checks"}


def test_opening_a_database_twice_keeps_its_schema_and_its_rows(history_url):
    record(HistoryStore(history_url), "run-1", a_result())
    again = HistoryStore(history_url)
    assert raw_rows(history_url, "SELECT version_num FROM alembic_version") == [(SCHEMA_REVISION,)]
    assert [row.scenario for row in again.results()] == ["share"]
    assert [drill.run_id for drill in again.drills()] == ["run-1"]


def test_a_result_round_trips_with_its_checks_phases_and_objectives(history_url):
    result = a_result(status=FAIL)
    store = HistoryStore(history_url)
    record(store, "run-1", result)
    [row] = HistoryStore(history_url).results()
    stored, fresh = from_row(row), from_result(result, "run-1")
    assert {key: stored[key] for key in fresh if key in stored} == {
        key: value for key, value in fresh.items() if key in stored
    }
    assert stored["trigger"] == "check" and stored["host"] == "fs01"
    assert list(stored["phases"]) == list(result.phases)  # in the order they ran
    assert [check["status"] for check in stored["checks"]] == ["passed", "failed", "error"]
    assert stored["checks"][0]["proves_data"] is True
    assert stored["rto_status"] == "passed" and stored["rpo_basis"] == "snapshot_time"
    assert row.started_at == STARTED.replace(tzinfo=None)  # naive UTC, microseconds kept
    [drill] = store.drills()
    assert (drill.trigger, drill.status, drill.reason) == ("check", PASS, "1 passed")
    assert drill.docker_version == "27.3.1" and drill.finished_at is not None


def test_results_filter_by_scenario_and_limit_newest_first(history_url):
    store = HistoryStore(history_url)
    moments = [STARTED + timedelta(hours=hour) for hour in range(5)]
    record(store, "run-1", a_result("share", moments[0]), a_result("erp", moments[1]))
    record(store, "run-2", a_result("share", moments[2], status=FAIL))
    record(store, "run-3", a_result("erp", moments[3], status=ERROR), a_result("share", moments[4]))

    def summary(rows):
        return [(row.scenario, row.status, row.drill.run_id) for row in rows]

    assert summary(store.results(limit=None)) == [
        ("share", PASS, "run-3"),
        ("erp", ERROR, "run-3"),
        ("share", FAIL, "run-2"),
        ("erp", PASS, "run-1"),
        ("share", PASS, "run-1"),
    ]
    assert summary(store.results(scenario="share")) == [
        ("share", PASS, "run-3"),
        ("share", FAIL, "run-2"),
        ("share", PASS, "run-1"),
    ]
    assert summary(store.results(scenario="share", limit=2)) == [
        ("share", PASS, "run-3"),
        ("share", FAIL, "run-2"),
    ]
    assert summary(store.results(limit=1)) == [("share", PASS, "run-3")]
    assert store.results(scenario="nothing-of-that-name") == []


def test_an_unusable_url_is_an_environment_error_naming_the_database(tmp_path):
    url = "sqlite:////nonexistent-dir/x.db"
    with pytest.raises(EnvironmentUnusable) as raised:
        HistoryStore(url)
    assert url in str(raised.value) and "/nonexistent-dir does not exist" in str(raised.value)
    with pytest.raises(EnvironmentUnusable) as raised:
        HistoryStore("not a database url")
    assert str(raised.value).startswith("history database <invalid URL> is unusable: ")
    shown = run_cli("history", "--db", url, cwd=tmp_path)
    assert shown.returncode == 2
    assert shown.stderr.strip() == (
        f"restore-tests: no history database at {url} (nothing was created): give its "
        "location with --db, RESTORE_TESTS_DB or `db` in the configuration file"
    )
    assert not Path("/nonexistent-dir").exists()


def test_a_postgresql_url_that_cannot_be_used_is_an_environment_error(tmp_path):
    # Nothing listens on port 1; without the driver installed, it cannot even be tried.
    url = "postgresql://restore:s3cret-pw@127.0.0.1:1/history"
    shown = run_cli("history", "--db", url, cwd=tmp_path)
    assert "s3cret-pw" not in shown.stdout + shown.stderr
    assert shown.stderr.startswith(
        "restore-tests: history database postgresql://restore:***@127.0.0.1:1/history is unusable: "
    ), shown.stderr
    assert shown.returncode == 3
    with pytest.raises(EnvironmentUnusable):
        HistoryStore(url)


def test_two_threads_writing_to_one_new_file_are_both_recorded(history_url):
    results_per_writer = 25
    write_concurrently(history_url, results_per_writer, a_result, STARTED, timeout=120)
    store = HistoryStore(history_url)
    assert sorted((drill.run_id, drill.status) for drill in store.drills()) == [
        ("run-1", PASS),
        ("run-2", PASS),
    ]
    rows = store.results(limit=None)
    assert len(rows) == 2 * results_per_writer
    assert {row.drill.run_id for row in rows} == {"run-1", "run-2"}
    assert raw_rows(history_url, "SELECT count(*) FROM checks") == [(3 * 2 * results_per_writer,)]


def test_a_writer_waits_for_a_lock_held_longer_than_sqlite_default_timeout(history_url):
    store = HistoryStore(history_url)
    store.start_drill("run-1", "check", "fs01", "0.1.0", None, STARTED)
    holder = sqlite3.connect(
        database_file(history_url), isolation_level=None, check_same_thread=False
    )
    holder.execute("BEGIN IMMEDIATE")  # another process is writing, slowly
    released = threading.Event()

    def release_later() -> None:
        time.sleep(6)  # longer than pysqlite's default 5 s timeout
        holder.execute("COMMIT")
        holder.close()
        released.set()

    threading.Thread(target=release_later, daemon=True).start()
    store.record_result("run-1", a_result())
    assert released.is_set()
    assert [row.scenario for row in store.results()] == ["share"]


@pytest.mark.sandbox
def test_a_real_run_stores_no_secret(repository, tmp_path, history_url):
    """A passing and a failing check; the password reaches restic but never the database."""
    secret_file = tmp_path / "share.pass"
    secret_file.write_text(PASSWORD + "\n")
    passing = write_scenario(tmp_path, "share", str(repository.path))
    failing = write_scenario(
        tmp_path,
        "share-by-command",
        str(repository.path),
        verify="  manifest: /data/compta/MISSING.sums\n",
    )
    failing.write_text(
        failing.read_text().replace(
            f"password_env: {PASSWORD_VARIABLE}",
            f"password_command: [sh, -c, 'cat {secret_file}']",
        )
    )
    result = run_cli(
        "check",
        str(passing),
        str(failing),
        "--db",
        history_url,
        env={PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": repository.binary},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("PASS  share  RTO ")
    assert "FAIL  share-by-command  manifest /data/compta/MISSING.sums" in result.stdout
    raw = database_file(history_url).read_bytes()
    assert b"share-by-command" in raw  # the file is readable as it is stored
    assert PASSWORD.encode() not in raw
    assert PASSWORD.encode("utf-16-le") not in raw
    assert not list(tmp_path.glob("history.db-*")), "a journal was left next to the database"
    assert_no_leftovers()

"""A history that cannot be written: writes retried, then named; a drill never passes unrecorded.

Real SQLite files, locked by a second connection as another process would lock them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from restore_tests.drill import DrillOutcome
from restore_tests.errors import EnvironmentUnusable, UsageError
from restore_tests.history.store import TIMEOUT_VARIABLE, HistoryStore, busy_seconds
from restore_tests.results import CAUSE_ENVIRONMENT, ERROR, FAIL, PASS, ScenarioResult
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

STARTED = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)


def a_result(scenario: str = "share", status: str = PASS, cause: str = "") -> ScenarioResult:
    return ScenarioResult(
        scenario,
        "files",
        f"/etc/restore-tests/{scenario}.yaml",
        "ab" * 32,
        STARTED,
        status=status,
        cause=cause,
        finished_at=STARTED + timedelta(seconds=3),
    )


def database_file(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


@contextmanager
def locked(url: str, mode: str = "EXCLUSIVE") -> Iterator[sqlite3.Connection]:
    """The history file locked by another writer until the block ends."""
    holder = sqlite3.connect(database_file(url), isolation_level=None, check_same_thread=False)
    holder.execute(f"BEGIN {mode}")
    try:
        yield holder
    finally:
        if holder.in_transaction:
            holder.execute("COMMIT")
        holder.close()


# -- the drill's outcome ----------------------------------------------------------------------


def test_a_drill_without_any_result_is_an_error_that_says_nothing_finished() -> None:
    outcome = DrillOutcome("run-1", "drill")

    assert outcome.status == ERROR
    assert outcome.summary() == "no scenario finished"
    assert outcome.exit_code() == 1


def test_a_passing_result_the_history_could_not_record_makes_the_drill_an_error_exiting_3() -> None:
    outcome = DrillOutcome("run-1", "check", results=[a_result()], unrecorded=["share"])
    outcome.history_failures.append("history database sqlite:///x.db: could not record ...")

    assert outcome.status == ERROR
    assert outcome.summary() == "1 passed, 0 failed, 0 errors; 1 result could not be recorded"
    assert outcome.exit_code() == 3
    assert not outcome.recorded(outcome.results[0])


def test_results_that_could_not_be_recorded_are_counted_in_the_plural() -> None:
    outcome = DrillOutcome(
        "run-1",
        "drill",
        results=[a_result("a"), a_result("b", FAIL), a_result("c")],
        unrecorded=["a", "b"],
        history_failures=["one", "two"],
    )

    assert outcome.summary() == "2 passed, 1 failed, 0 errors; 2 results could not be recorded"
    assert outcome.status == ERROR
    assert outcome.exit_code() == 3  # the history is unusable: worse than one failed scenario


def test_an_interruption_still_exits_130_when_the_history_also_failed() -> None:
    outcome = DrillOutcome(
        "run-1",
        "drill",
        results=[a_result()],
        interrupted=True,
        unrecorded=["share"],
        history_failures=["history database sqlite:///x.db: could not record ..."],
    )

    assert outcome.status == "interrupted"
    assert outcome.exit_code() == 130
    assert outcome.summary().endswith("1 result could not be recorded (interrupted)")


def test_a_drill_whose_results_were_all_recorded_keeps_its_verdict_and_exit_code() -> None:
    passing = DrillOutcome("run-1", "drill", results=[a_result("a"), a_result("b")])
    failing = DrillOutcome("run-2", "drill", results=[a_result("a"), a_result("b", FAIL)])
    no_docker = DrillOutcome("run-3", "drill", results=[a_result("a", ERROR, CAUSE_ENVIRONMENT)])

    assert (passing.status, passing.exit_code(), passing.summary()) == (
        PASS,
        0,
        "2 passed, 0 failed, 0 errors",
    )
    assert (failing.status, failing.exit_code()) == (FAIL, 1)
    assert (no_docker.status, no_docker.exit_code()) == (ERROR, 3)


# -- the busy timeout -------------------------------------------------------------------------


def test_the_busy_timeout_is_60_seconds_unless_the_environment_says_otherwise(monkeypatch) -> None:
    monkeypatch.delenv(TIMEOUT_VARIABLE, raising=False)
    assert busy_seconds() == 60.0
    monkeypatch.setenv(TIMEOUT_VARIABLE, "1.5")
    assert busy_seconds() == 1.5


@pytest.mark.parametrize("given", ["soon", "0", "-3", "inf", "nan"])
def test_a_busy_timeout_that_is_not_a_positive_number_is_a_usage_error(monkeypatch, given) -> None:
    monkeypatch.setenv(TIMEOUT_VARIABLE, given)

    with pytest.raises(UsageError) as raised:
        busy_seconds()

    assert str(raised.value) == (
        f"RESTORE_TESTS_DB_TIMEOUT must be a number of seconds above 0, not {given!r}"
    )


def test_the_command_line_refuses_a_busy_timeout_that_is_not_a_number(history_url) -> None:
    HistoryStore(history_url)
    shown = run_cli("history", "--db", history_url, env={TIMEOUT_VARIABLE: "soon"})

    assert shown.returncode == 2
    assert shown.stderr == (
        "restore-tests: RESTORE_TESTS_DB_TIMEOUT must be a number of seconds above 0, not 'soon'\n"
    )


# -- writes that meet a lock ------------------------------------------------------------------


def test_a_write_that_meets_a_lock_is_retried_and_lands_once_the_lock_is_gone(
    history_url, monkeypatch
) -> None:
    monkeypatch.setenv(TIMEOUT_VARIABLE, "0.4")
    store = HistoryStore(history_url)
    store.start_drill("run-1", "check", "fs01", "0.1.0", None, STARTED)
    with locked(history_url, "IMMEDIATE") as holder:
        # Held past the first attempt (0.4 s) and its pause (0.5 s), released before the last.
        release = threading.Timer(1.2, lambda: holder.execute("COMMIT"))
        release.start()
        started = time.monotonic()
        store.record_result("run-1", a_result())
        release.join()
    assert time.monotonic() - started > 1.0  # it did meet the lock, more than once
    assert [(row.scenario, row.status) for row in store.results()] == [("share", PASS)]


def test_a_write_locked_through_every_attempt_names_the_database_the_scenario_and_the_cause(
    history_url, monkeypatch
) -> None:
    monkeypatch.setenv(TIMEOUT_VARIABLE, "0.2")
    store = HistoryStore(history_url)
    store.start_drill("run-1", "check", "fs01", "0.1.0", None, STARTED)
    with locked(history_url), pytest.raises(EnvironmentUnusable) as raised:
        store.record_result("run-1", a_result())

    assert str(raised.value) == (
        f"history database {history_url}: could not record the result of share: database is locked"
    )
    assert [row.scenario for row in store.results()] == []


def test_a_drill_that_cannot_record_its_start_names_the_run(history_url, monkeypatch) -> None:
    monkeypatch.setenv(TIMEOUT_VARIABLE, "0.2")
    store = HistoryStore(history_url)
    with locked(history_url), pytest.raises(EnvironmentUnusable) as raised:
        store.start_drill("run-1", "check", "fs01", "0.1.0", None, STARTED)

    assert str(raised.value) == (
        f"history database {history_url}: could not record the start of run run-1: "
        "database is locked"
    )
    assert store.drills() == []


def test_a_result_row_left_running_by_a_drill_that_finished_says_it_was_not_recorded(
    history_url,
) -> None:
    store = HistoryStore(history_url)
    store.start_drill("run-1", "check", "fs01", "0.1.0", None, STARTED)
    store.record_running("run-1", a_result("lost"))
    kept = store.record_running("run-1", a_result("kept"))
    store.record_result("run-1", a_result("kept"), kept)
    store.finish_drill("run-1", ERROR, "1 passed, ...", STARTED + timedelta(minutes=1))

    rows = {row.scenario: row for row in store.results()}
    assert (rows["kept"].status, rows["kept"].reason) == (PASS, "")
    assert (rows["lost"].status, rows["lost"].reason) == (
        ERROR,
        "not recorded: the history database failed when this scenario finished "
        "(its verdict was printed, not stored)",
    )
    assert len(rows) == 2  # the running row was updated in place, not doubled

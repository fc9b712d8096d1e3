"""The history database locked by another process while a real check runs.

The verdict is printed before the history write; a write that still fails after its retries is
named on stderr, the exit code is 3, and the drill row never says "pass" for what it lacks.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from restore_tests.drill import new_run_id, run_drill
from restore_tests.errors import EnvironmentUnusable
from restore_tests.history.store import TIMEOUT_VARIABLE, HistoryStore
from restore_tests.pipeline import RunOptions
from restore_tests.scenario import load_file
from tests.conftest import (
    PASSWORD,
    PASSWORD_VARIABLE,
    ROOT,
    assert_no_leftovers,
    history_rows,
    run_cli,
    write_scenario,
)

pytestmark = pytest.mark.sandbox

NOT_RECORDED = (
    "not recorded: the history database failed when this scenario finished "
    "(its verdict was printed, not stored)"
)


def environment(repository, **extra: str) -> dict[str, str]:
    return {
        PASSWORD_VARIABLE: PASSWORD,
        "RESTIC_BINARY": repository.binary,
        TIMEOUT_VARIABLE: "1",
        **extra,
    }


class RunningCli:
    """The command line in a child process, its stdout and stderr read line by line as they come."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.stdout)),
            threading.Thread(target=self._read, args=(self.process.stderr, self.stderr)),
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for(self, lines: list[str], text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in list(lines) if text in line]
            if found:
                return found[0]
            if self.process.poll() is not None and not any(r.is_alive() for r in self.readers):
                break
            time.sleep(0.05)
        self.process.kill()
        raise AssertionError(f"never saw {text!r}: {self.stdout} {self.stderr}")

    def finish(self, timeout: float = 120) -> int:
        try:
            returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        for reader in self.readers:
            reader.join(timeout=10)
        return returncode


def database_file(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


@contextmanager
def locked(url: str, mode: str = "EXCLUSIVE") -> Iterator[sqlite3.Connection]:
    """Another process writing to the history, for as long as the block lasts."""
    holder = sqlite3.connect(database_file(url), isolation_level=None, check_same_thread=False)
    holder.execute(f"BEGIN {mode}")
    try:
        yield holder
    finally:
        if holder.in_transaction:
            holder.execute("COMMIT")
        holder.close()


def history_failure(url: str, what: str) -> str:
    return f"restore-tests: history database {url}: could not {what}: database is locked"


def test_a_history_locked_for_the_rest_of_the_run_keeps_the_verdict_and_exits_3(
    repository, tmp_path, history_url
):
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    check = RunningCli("check", str(scenario), "--db", history_url, env=environment(repository))
    check.wait_for(check.stderr, "share: fetching snapshot")  # the drill row is written
    with locked(history_url):
        returncode = check.finish()
    [drill] = HistoryStore(history_url).drills()

    assert returncode == 3, check.stdout + check.stderr
    [verdict] = check.stdout
    assert verdict.startswith("PASS  share  RTO "), verdict
    failures = [line for line in check.stderr if line.startswith("restore-tests: ")]
    assert failures == [
        history_failure(history_url, "record the result of share"),
        history_failure(history_url, f"record the end of run {drill.run_id}"),
    ]
    assert drill.status == "running"  # nothing could be written: never "pass"
    # Its process has ended: the next look at the history calls it what it is.
    [row] = json.loads(run_cli("history", "--db", history_url, "--json").stdout)
    assert (row["scenario"], row["status"]) == ("share", "abandoned")
    assert row["reason"].startswith(f"abandoned: process {check.process.pid} on ")
    assert HistoryStore(history_url).drills()[0].status == "abandoned"
    assert_no_leftovers()


def test_a_result_the_history_could_not_record_is_counted_in_the_drill_row_and_json(
    repository, tmp_path, history_url
):
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    check = RunningCli(
        "check", str(scenario), "--db", history_url, "--json", env=environment(repository)
    )
    check.wait_for(check.stderr, "share: fetching snapshot")
    with locked(history_url):
        check.wait_for(check.stderr, "could not record the result of share")
    returncode = check.finish()  # the lock is gone: the drill's end is recorded

    assert returncode == 3, check.stdout + check.stderr
    document = json.loads("\n".join(check.stdout))
    assert (document["status"], document["exit_code"]) == ("error", 3)
    [result] = document["results"]
    assert (result["scenario"], result["status"], result["recorded"]) == ("share", "pass", False)
    assert [line for line in check.stderr if line.startswith("restore-tests: ")] == [
        history_failure(history_url, "record the result of share")
    ]
    [drill] = HistoryStore(history_url).drills()
    assert (drill.run_id, drill.status, drill.reason) == (
        document["run_id"],
        "error",
        "1 passed, 0 failed, 0 errors; 1 result could not be recorded",
    )
    [row] = history_rows(history_url)
    assert (row["scenario"], row["status"], row["reason"]) == ("share", "error", NOT_RECORDED)
    assert_no_leftovers()


def test_ctrl_c_while_a_locked_history_is_retried_exits_130_with_the_verdict_printed(
    repository, tmp_path, history_url
):
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    check = RunningCli("check", str(scenario), "--db", history_url, env=environment(repository))
    check.wait_for(check.stderr, "share: fetching snapshot")
    with locked(history_url):
        check.wait_for(check.stdout, "PASS  share  RTO ")  # then its write waits for the lock
        check.process.send_signal(signal.SIGINT)
        returncode = check.finish()

    assert returncode == 130, check.stdout + check.stderr
    assert len(check.stdout) == 1 and check.stdout[0].startswith("PASS  share  RTO ")
    [drill] = HistoryStore(history_url).drills()
    assert [line for line in check.stderr if line.startswith("restore-tests: ")] == [
        history_failure(history_url, "record the result of share"),
        history_failure(history_url, f"record the end of run {drill.run_id}"),
    ]
    assert_no_leftovers()


def test_a_history_locked_before_the_run_runs_nothing_and_exits_3(
    repository, tmp_path, history_url
):
    HistoryStore(history_url)  # an existing, current history
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    with locked(history_url):
        shown = run_cli("check", str(scenario), "--db", history_url, env=environment(repository))

    assert shown.returncode == 3
    assert shown.stdout == ""
    assert shown.stderr == (
        f"restore-tests: history database {history_url} is unusable: database is locked\n"
    )
    assert HistoryStore(history_url).drills() == []
    assert_no_leftovers()


def test_a_drill_whose_start_cannot_be_recorded_raises_before_anything_runs(
    repository, tmp_path, history_url, monkeypatch
):
    monkeypatch.setenv(TIMEOUT_VARIABLE, "0.2")
    store = HistoryStore(history_url)
    scenarios = load_file(write_scenario(tmp_path, "share", str(repository.path)))
    run_id = new_run_id()
    work_dir = Path(os.environ["RESTORE_TESTS_WORK_DIR"])
    verdicts: list[object] = []
    with locked(history_url, "IMMEDIATE"), pytest.raises(EnvironmentUnusable) as raised:
        run_drill(
            scenarios, RunOptions(run_id, work_dir), store, "check", on_result=verdicts.append
        )

    assert str(raised.value) == (
        f"history database {history_url}: could not record the start of run {run_id}: "
        "database is locked"
    )
    assert verdicts == [] and store.drills() == []
    assert not [path for path in work_dir.iterdir() if path.name.startswith(run_id)]
    assert_no_leftovers()


def test_the_verdict_line_comes_before_the_history_is_touched(repository, tmp_path, history_url):
    """Seen from outside: the PASS line is on stdout while the history is still locked."""
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    check = RunningCli("check", str(scenario), "--db", history_url, env=environment(repository))
    check.wait_for(check.stderr, "share: fetching snapshot")
    with locked(history_url):
        verdict = check.wait_for(check.stdout, "share")
        assert check.process.poll() is None  # still trying to record it
    returncode = check.finish()

    assert re.match(r"PASS  share  RTO \S+ / 15m  RPO \S+ / 26h  ", verdict), verdict
    assert returncode == 0, check.stdout + check.stderr  # recorded once the lock was gone
    [row] = history_rows(history_url)
    assert (row["scenario"], row["status"]) == ("share", "pass")
    assert_no_leftovers()

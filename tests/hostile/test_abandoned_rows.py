"""Drills whose process ended without finishing are marked abandoned; live ones never are.

Real processes (started and ended here), real SQLite files, a real first-schema database.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config

from restore_tests.history.processes import ProcessIdentity
from restore_tests.history.store import MIGRATIONS, SCHEMA_REVISION, HistoryStore
from restore_tests.results import PASS, ScenarioResult
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

STARTED = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
HOST = socket.gethostname()


def ended_process() -> ProcessIdentity:
    """The identity a process had while it ran; it has ended (and been reaped) since."""
    process = subprocess.Popen(["sleep", "30"])
    identity = ProcessIdentity.of(process.pid)
    process.kill()
    process.wait()
    return identity


def a_result(scenario: str, status: str = PASS) -> ScenarioResult:
    return ScenarioResult(
        scenario, "files", f"/srv/{scenario}.yaml", "ab" * 32, STARTED, status=status
    )


def abandoned(pid: int, host: str = HOST) -> str:
    return f"abandoned: process {pid} on {host} ended without finishing (killed?)"


def test_a_killed_drill_is_marked_abandoned_with_its_running_scenarios_by_the_next_drill(
    history_url,
):
    killed = ended_process()
    store = HistoryStore(history_url)
    store.start_drill("run-killed", "drill", HOST, "0.1.0", None, STARTED, owner=killed)
    store.record_result("run-killed", a_result("finished"))
    store.record_running("run-killed", a_result("in-flight"))

    later = ProcessIdentity.current()
    store.start_drill("run-later", "check", HOST, "0.1.0", None, STARTED, owner=later)

    drills = {drill.run_id: drill for drill in store.drills()}
    assert (drills["run-killed"].status, drills["run-killed"].reason) == (
        "abandoned",
        abandoned(killed.pid),
    )
    assert drills["run-killed"].finished_at is None
    assert drills["run-later"].status == "running"  # this process: alive
    assert (drills["run-later"].pid, drills["run-later"].host) == (os.getpid(), HOST)
    rows = {row.scenario: (row.status, row.reason) for row in store.results()}
    assert rows == {"finished": (PASS, ""), "in-flight": ("abandoned", abandoned(killed.pid))}


def test_a_pid_now_used_by_a_later_process_does_not_keep_a_drill_running(history_url):
    me = ProcessIdentity.current()
    assert me.start_ticks is not None
    # The same pid, but a process that started at another time: the drill's ended, the pid
    # was given to this one.
    reused = ProcessIdentity(HOST, me.pid, me.boot_id, me.start_ticks - 1)
    store = HistoryStore(history_url)
    store.start_drill("run-1", "drill", HOST, "0.1.0", None, STARTED, owner=reused)

    assert store.mark_abandoned() == ["run-1"]
    assert store.drills()[0].reason == abandoned(me.pid)


def test_a_drill_of_a_previous_boot_is_abandoned(history_url):
    me = ProcessIdentity.current()
    before_reboot = ProcessIdentity(HOST, me.pid, "another-boot", me.start_ticks)
    store = HistoryStore(history_url)
    store.start_drill("run-1", "drill", HOST, "0.1.0", None, STARTED, owner=before_reboot)

    assert store.mark_abandoned() == ["run-1"]


def test_live_drills_and_drills_of_other_hosts_stay_running(history_url):
    store = HistoryStore(history_url)
    store.start_drill(
        "run-live", "drill", HOST, "0.1.0", None, STARTED, owner=ProcessIdentity.current()
    )
    elsewhere = ended_process()
    store.start_drill(
        "run-elsewhere",
        "drill",
        "another-host",
        "0.1.0",
        None,
        STARTED,
        owner=ProcessIdentity("another-host", elsewhere.pid),
    )
    store.start_drill("run-unknown", "drill", HOST, "0.1.0", None, STARTED)  # no process known

    assert store.mark_abandoned() == []
    assert {drill.status for drill in store.drills()} == {"running"}


def test_a_dry_run_names_abandoned_drills_without_marking_them(history_url):
    killed = ended_process()
    store = HistoryStore(history_url)
    store.start_drill("run-1", "drill", HOST, "0.1.0", None, STARTED, owner=killed)

    assert store.mark_abandoned(dry_run=True) == ["run-1"]
    assert store.drills()[0].status == "running"
    assert store.mark_abandoned() == ["run-1"]
    assert store.mark_abandoned() == []  # marked once
    assert store.abandoned_runs({"run-1", "run-2"}) == {"run-1"}


def test_history_shows_an_abandoned_scenario_as_table_csv_and_json(history_url):
    killed = ended_process()
    store = HistoryStore(history_url)
    store.start_drill("run-1", "drill", HOST, "0.1.0", None, STARTED, owner=killed)
    store.record_running("run-1", a_result("share"))

    table = run_cli("history", "--db", history_url)
    assert table.returncode == 0, table.stderr
    [row] = table.stdout.splitlines()[2:]
    scenario, _, status, rto, rpo, reason = re.split(r"\s{2,}", row.strip())
    assert (scenario, status, rto, rpo) == ("share", "ABANDONED", "-", "-")
    expected = abandoned(killed.pid)
    assert reason == (expected if len(expected) <= 90 else expected[:87] + "...")  # long host
    as_csv = run_cli("history", "--db", history_url, "--format", "csv").stdout.splitlines()
    assert as_csv[1].startswith(f"share,files,abandoned,{abandoned(killed.pid)},run-1,")
    [record] = json.loads(run_cli("history", "--db", history_url, "--json").stdout)
    assert (record["status"], record["reason"]) == ("abandoned", abandoned(killed.pid))


def test_a_history_of_the_first_schema_is_upgraded_and_keeps_its_running_drills(history_url):
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", history_url)
    command.upgrade(config, "0001")
    with sqlite3.connect(Path(history_url.removeprefix("sqlite:///"))) as connection:
        connection.execute(
            "INSERT INTO drills (run_id, trigger, host, tool_version, started_at, status, reason)"
            " VALUES ('run-old', 'drill', ?, '0.1.0', '2026-03-14 09:26:53', 'running', '')",
            (HOST,),
        )

    store = HistoryStore(history_url)

    assert store.revision() == SCHEMA_REVISION == "0003"
    [drill] = store.drills()
    assert (drill.run_id, drill.status, drill.pid) == ("run-old", "running", None)
    assert store.mark_abandoned() == []  # its process is unknown: it is never guessed
    assert drill.started_at == datetime(2026, 3, 14, 9, 26, 53)
    assert timedelta(0) < datetime.now(UTC).replace(tzinfo=None) - drill.started_at

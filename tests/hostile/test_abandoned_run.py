"""A run killed with SIGKILL: `history` shows it abandoned, `prune` removes its leftovers at once.

A real check (real restic, a real sandbox running `sleep 600`), killed the way the OOM killer or
an impatient operator kills; and owner files of real processes that have ended.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from restore_tests.history.processes import ProcessIdentity
from restore_tests.history.store import HistoryStore
from tests.conftest import (
    PASSWORD,
    PASSWORD_VARIABLE,
    assert_no_leftovers,
    run_cli,
    write_scenario,
)
from tests.hostile.test_history_locked import RunningCli

pytestmark = pytest.mark.sandbox

NAMES = ("--format", "{{.Names}}")
SLEEPING_SANDBOX = "sandbox:\n  commands:\n    - [sleep, '600']\n"


def work_dir() -> Path:
    return Path(os.environ["RESTORE_TESTS_WORK_DIR"])


def containers_of(run_id: str) -> list[str]:
    listed = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label=restore-tests.run={run_id}", *NAMES],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def folders_of(run_id: str) -> list[Path]:
    return sorted(path for path in work_dir().iterdir() if path.name.startswith(f"{run_id}-"))


def abandoned(pid: int) -> str:
    return f"abandoned: process {pid} on {socket.gethostname()} ended without finishing (killed?)"


def test_a_killed_check_is_shown_abandoned_and_prune_removes_its_sandbox_and_staging_at_once(
    repository, tmp_path, history_url
):
    scenario = write_scenario(tmp_path, "share", str(repository.path), extra=SLEEPING_SANDBOX)
    check = RunningCli(
        "check",
        str(scenario),
        "--db",
        history_url,
        env={PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": repository.binary},
    )
    check.wait_for(check.stderr, "share: running sandbox: sleep 600")
    check.process.send_signal(signal.SIGKILL)
    assert check.finish() == -signal.SIGKILL
    [drill] = HistoryStore(history_url).drills()
    run_id, pid = drill.run_id, check.process.pid
    try:
        assert (drill.status, drill.pid, drill.host) == ("running", pid, socket.gethostname())
        [container] = containers_of(run_id)
        [staging] = folders_of(run_id)
        assert (work_dir() / f"{run_id}.owner").is_file()

        table = run_cli("history", "--db", history_url)
        assert table.returncode == 0, table.stderr
        [row] = table.stdout.splitlines()[2:]
        name, _, status, rto, _, reason = re.split(r"\s{2,}", row.strip())
        assert (name, status, rto) == ("share", "ABANDONED", "- / 15m")
        assert reason.startswith(f"abandoned: process {pid} on ")
        shown = run_cli("history", "--db", history_url, "--format", "csv").stdout
        [as_csv] = csv.DictReader(io.StringIO(shown))
        assert (as_csv["status"], as_csv["reason"], as_csv["run_id"]) == (
            "abandoned",
            abandoned(pid),
            run_id,
        )
        [as_json] = json.loads(run_cli("history", "--db", history_url, "--json").stdout)
        assert (as_json["status"], as_json["reason"]) == ("abandoned", abandoned(pid))
        [drill] = HistoryStore(history_url).drills()
        assert (drill.status, drill.reason) == ("abandoned", abandoned(pid))

        dry = run_cli("prune", "--dry-run")  # the default history is out of reach here: not needed
        assert dry.returncode == 0, dry.stderr
        assert f"would remove container {container} (run {run_id})" in dry.stdout.splitlines()
        assert f"would remove staging {staging}" in dry.stdout.splitlines()
        assert containers_of(run_id) == [container] and staging.is_dir()
        pruned = run_cli("prune")
        assert pruned.returncode == 0, pruned.stderr
        assert f"removed container {container} (run {run_id})" in pruned.stdout.splitlines()
        assert f"removed staging {staging}" in pruned.stdout.splitlines()
        assert containers_of(run_id) == []
        assert folders_of(run_id) == []
        assert not (work_dir() / f"{run_id}.owner").exists()
    finally:  # a failed assertion must not leave the sandbox running for 10 minutes
        run_cli("prune", "--run", run_id)
        (work_dir() / f"{run_id}.owner").unlink(missing_ok=True)
    assert_no_leftovers()


def ended_process() -> ProcessIdentity:
    process = subprocess.Popen(["sleep", "30"])
    identity = ProcessIdentity.of(process.pid)
    process.kill()
    process.wait()
    return identity


def leave_run(run_id: str, owner: ProcessIdentity) -> Path:
    """What a run leaves in the work dir: its owner file and a staging folder with data."""
    (work_dir() / f"{run_id}.owner").write_text(json.dumps(owner.to_dict()))
    staging = work_dir() / f"{run_id}-0a1b2c3d"
    (staging / "restore").mkdir(parents=True)
    (staging / "restore" / "ledger.txt").write_text("restored\n")
    return staging


def test_prune_removes_at_once_the_staging_of_a_run_whose_process_ended_and_no_other(
    tmp_path,
):
    dead_run, live_run = "20991231T235959Z-dead01", "20991231T235959Z-11fe01"
    dead = leave_run(dead_run, ended_process())
    live = leave_run(live_run, ProcessIdentity.current())  # this test's process: alive
    try:
        dry = run_cli("prune", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"would remove staging {dead}" in dry.stdout.splitlines()
        assert live_run not in dry.stdout
        assert dead.is_dir() and (work_dir() / f"{dead_run}.owner").exists()

        pruned = run_cli("prune")
        assert pruned.returncode == 0, pruned.stderr
        assert f"removed staging {dead}" in pruned.stdout.splitlines()
        assert live_run not in pruned.stdout
        assert not dead.exists() and not (work_dir() / f"{dead_run}.owner").exists()
        assert live.is_dir() and (work_dir() / f"{live_run}.owner").exists()
    finally:
        run_cli("prune", "--run", live_run)
        (work_dir() / f"{live_run}.owner").unlink(missing_ok=True)
    assert_no_leftovers()


def test_prune_with_a_history_marks_abandoned_drills_and_removes_what_they_left(
    history_url,
):
    killed = ended_process()
    run_id = "20991231T235959Z-a0a0a0"
    store = HistoryStore(history_url)
    started = datetime.now(UTC)
    store.start_drill(run_id, "drill", killed.host, "0.1.0", None, started, owner=killed)
    staging = work_dir() / f"{run_id}-0a1b2c3d"  # no owner file: only the history knows
    staging.mkdir()

    dry = run_cli("prune", "--dry-run", "--db", history_url)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [f"would remove staging {staging}"]
    assert store.drills()[0].status == "running"  # a dry run writes nothing

    pruned = run_cli("prune", "--db", history_url)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.splitlines() == [f"removed staging {staging}"]
    assert not staging.exists()
    [drill] = store.drills()
    assert (drill.status, drill.reason) == ("abandoned", abandoned(killed.pid))
    assert_no_leftovers()


def test_prune_with_a_locked_history_still_cleans_and_names_the_history_exiting_3(
    history_url,
):
    HistoryStore(history_url)
    holder = sqlite3.connect(history_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        pruned = run_cli("prune", "--db", history_url, env={"RESTORE_TESTS_DB_TIMEOUT": "0.5"})
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert pruned.returncode == 3
    assert pruned.stderr == (
        f"restore-tests: history database {history_url} is unusable: database is locked "
        "(abandoned runs were not checked in the history)\n"
    )
    assert_no_leftovers()

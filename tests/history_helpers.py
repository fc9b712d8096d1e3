"""Histories for the manager's views: results recorded through the real store, and a large one
(100 scenarios x 5 years of weekly drills = 26,000 results) inserted in bulk for the benchmark
and the size test."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from restore_tests.history.models import CheckRow, Drill, Phase, Result
from restore_tests.history.store import HistoryStore, tags_column
from restore_tests.results import FAIL, PASS, Check, ScenarioResult
from restore_tests.timing import judge

PHASES = ("fetch", "sandbox", "verify", "teardown")


def record(
    store: HistoryStore,
    scenario: str,
    started_at: datetime,
    status: str = PASS,
    rto: float = 40.0,
    sha256: str = "ab" * 32,
    client: str = "",
    reason: str = "",
) -> None:
    """One drill with one result, written as a drill writes it."""
    run_id = f"{started_at:%Y%m%dT%H%M%S}-{scenario}"
    store.start_drill(run_id, "drill", "backup01", "test", None, started_at)
    result = ScenarioResult(
        scenario,
        "files",
        f"/srv/scenarios/{scenario}.yaml",
        sha256,
        started_at,
        status=status,
        reason=reason or ("" if status == PASS else "1 file differs from SHA256SUMS: a.bin"),
        finished_at=started_at + timedelta(seconds=rto + 1),
        snapshot_id="8ee13d15",
        snapshot_time=started_at - timedelta(hours=3),
        files=10,
        bytes=1024,
        rto=judge("rto", rto, 900.0, "measured"),
        rpo=judge("rpo", 3 * 3600.0, 26 * 3600.0, "snapshot_time"),
        phases={"fetch": rto - 5, "sandbox": 1.0, "verify": 4.0, "teardown": 0.5},
        checks=[Check.passed("manifest SHA256SUMS", proves_data=True)],
        client=client,
    )
    store.record_result(run_id, result)
    store.finish_drill(run_id, status, "", started_at + timedelta(seconds=rto + 2))


def scenario_file(
    folder: Path, name: str, client: str = "", every: str = "", extra: str = ""
) -> Path:
    """A valid files scenario (never run by these tests: the views only read its fields)."""
    lines = [
        f"name: {name}",
        "kind: files",
        f"client: {client}" if client else "",
        f"every: {every}" if every else "",
        "source: {type: local, path: /srv/backups/share.tar}",
        "objectives: {rto: 15m, rpo: 26h}",
        "verify: {expect: {min_files: 1}}",
        extra,
    ]
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(line for line in lines if line) + "\n")
    return path


def bulk_history(url: str, scenarios: int = 100, weeks: int = 260, seed: int = 7) -> None:
    """scenarios x weeks results, one drill a week, inserted in bulk (seconds, not minutes)."""
    store = HistoryStore(url)
    chance = random.Random(seed)
    first = datetime.now(UTC).replace(tzinfo=None) - timedelta(weeks=weeks)
    drills, results, phases, checks = [], [], [], []
    result_id = 0
    for week in range(weeks):
        started = first + timedelta(weeks=week)
        drills.append(_drill_row(week + 1, started))
        for number in range(scenarios):
            result_id += 1
            status = PASS if chance.random() > 0.03 else FAIL
            rto = 30 + number + week * 0.1 + chance.random() * 5
            results.append(_result_row(result_id, week + 1, number, started, status, rto))
            phases.extend(
                {"result_id": result_id, "position": i, "name": name, "seconds": rto / 4}
                for i, name in enumerate(PHASES)
            )
            checks.append(_check_row(result_id, status))
    with store.engine.begin() as connection:
        for model, rows in (
            (Drill, drills),
            (Result, results),
            (Phase, phases),
            (CheckRow, checks),
        ):
            connection.execute(insert(model), rows)


def _drill_row(drill_id: int, started: datetime) -> dict[str, object]:
    return {
        "id": drill_id,
        "run_id": f"{started:%Y%m%dT%H%M%SZ}-bulk",
        "trigger": "drill",
        "host": "backup01",
        "tool_version": "bench",
        "started_at": started,
        "finished_at": started + timedelta(hours=2),
        "status": PASS,
        "reason": "",
    }


def _result_row(
    result_id: int, drill_id: int, number: int, started: datetime, status: str, rto: float
) -> dict[str, object]:
    return {
        "id": result_id,
        "drill_id": drill_id,
        "scenario": f"scenario-{number:03d}",
        "kind": "files",
        "scenario_path": f"/srv/scenarios/scenario-{number:03d}.yaml",
        "scenario_sha256": "ab" * 32,
        "status": status,
        "reason": "" if status == PASS else "1 file differs from SHA256SUMS: a.bin",
        "cause": "",
        "started_at": started + timedelta(seconds=number * 60),
        "finished_at": started + timedelta(seconds=number * 60 + rto),
        "rto_seconds": rto,
        "rto_target_seconds": 900.0,
        "rto_status": "passed",
        "rpo_seconds": 3 * 3600.0,
        "rpo_target_seconds": 26 * 3600.0,
        "rpo_status": "passed",
        "rpo_basis": "snapshot_time",
        "kept": "",
        "client": f"client-{number % 7}",
        "owner": "it-ops",
        "tags": tags_column(["weekly"]),
        "every_seconds": 7 * 86400.0,
        "rto_applies_to": "restored",
    }


def _check_row(result_id: int, status: str) -> dict[str, object]:
    return {
        "result_id": result_id,
        "position": 0,
        "name": "manifest SHA256SUMS",
        "status": "passed" if status == PASS else "failed",
        "reason": "",
        "expected": "",
        "observed": "",
        "detail": "",
        "proves_data": True,
    }


def write_concurrently(
    url: str,
    results_per_writer: int,
    make_result: Callable[[str, datetime], ScenarioResult],
    started: datetime,
    timeout: float = 60.0,
) -> None:
    """Two threads open one new history at the same moment (both migrate it) and each records
    a drill, run-1 and run-2, of results_per_writer results. Fails if a writer is stuck or
    raised."""
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def write(run_id: str) -> None:
        try:
            start.wait(timeout=30)
            store = HistoryStore(url)  # both migrate the same empty database at once
            store.start_drill(run_id, "drill", "fs01", "0.1.0", None, started)
            for index in range(results_per_writer):
                moment = started + timedelta(seconds=index)
                store.record_result(run_id, make_result(f"{run_id}-{index:02}", moment))
            store.finish_drill(run_id, PASS, "all passed", started + timedelta(minutes=1))
        except BaseException as error:  # reported by the caller's thread
            failures.append(error)

    writers = [threading.Thread(target=write, args=(f"run-{n}",), daemon=True) for n in (1, 2)]
    for writer in writers:
        writer.start()
    deadline = time.monotonic() + timeout
    for writer in writers:
        writer.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(writer.is_alive() for writer in writers), "a writer is stuck"
    assert failures == []

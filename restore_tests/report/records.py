"""One flat record per result, the same keys for a fresh result and a history row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from restore_tests.history.models import Result
from restore_tests.results import ScenarioResult


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def from_result(result: ScenarioResult, run_id: str) -> dict[str, Any]:
    return {
        "scenario": result.scenario,
        "kind": result.kind,
        "status": result.status,
        "reason": result.reason,
        "run_id": run_id,
        "started_at": _iso(result.started_at),
        "finished_at": _iso(result.finished_at),
        "snapshot_id": result.snapshot_id,
        "snapshot_time": _iso(result.snapshot_time),
        "rto_seconds": result.rto.measured_seconds,
        "rto_target_seconds": result.rto.target_seconds,
        "rto_status": result.rto.status,
        "rpo_seconds": result.rpo.measured_seconds,
        "rpo_target_seconds": result.rpo.target_seconds,
        "rpo_status": result.rpo.status,
        "rpo_basis": result.rpo.basis,
        "files": result.files,
        "bytes": result.bytes,
        "source_version": result.source_version,
        "scenario_path": result.scenario_path,
        "scenario_sha256": result.scenario_sha256,
        "phases": dict(result.phases),
        "kept": result.kept or None,
        "checks": [
            {
                "name": check.name,
                "status": check.status,
                "reason": check.reason,
                "expected": check.expected,
                "observed": check.observed,
                "detail": check.detail,
                "proves_data": check.proves_data,
                "seconds": check.seconds,
            }
            for check in result.checks
        ],
    }


def from_row(row: Result) -> dict[str, Any]:
    return {
        "scenario": row.scenario,
        "kind": row.kind,
        "status": row.status,
        "reason": row.reason,
        "run_id": row.drill.run_id,
        "trigger": row.drill.trigger,
        "host": row.drill.host,
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
        "snapshot_id": row.snapshot_id,
        "snapshot_time": _iso(row.snapshot_time),
        "rto_seconds": row.rto_seconds,
        "rto_target_seconds": row.rto_target_seconds,
        "rto_status": row.rto_status,
        "rpo_seconds": row.rpo_seconds,
        "rpo_target_seconds": row.rpo_target_seconds,
        "rpo_status": row.rpo_status,
        "rpo_basis": row.rpo_basis,
        "files": row.files,
        "bytes": row.bytes,
        "source_version": row.source_version,
        "scenario_path": row.scenario_path,
        "scenario_sha256": row.scenario_sha256,
        "phases": {phase.name: phase.seconds for phase in row.phases},
        "checks": [
            {
                "name": check.name,
                "status": check.status,
                "reason": check.reason,
                "expected": check.expected,
                "observed": check.observed,
                "detail": check.detail,
                "proves_data": check.proves_data,
                "seconds": check.seconds,
            }
            for check in row.checks
        ],
    }

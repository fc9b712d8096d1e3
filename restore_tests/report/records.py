"""One flat record per result, the same keys for a fresh result and a history row, and the
JSON objects of check, drill and history (docs/json-format.md): each carries schema_version.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from restore_tests.history.models import Result
from restore_tests.history.store import tags_of
from restore_tests.results import ScenarioResult

if TYPE_CHECKING:
    from restore_tests.drill import DrillOutcome


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


# The version of every JSON object printed (records, documents, JSON lines): a field that is
# renamed, removed or changes meaning makes it 2; a new field does not.
SCHEMA_VERSION = 1
SHARED = (
    "scenario",
    "kind",
    "status",
    "reason",
    "snapshot_id",
    "files",
    "bytes",
    "source_version",
    "scenario_path",
    "scenario_sha256",
    "client",
    "owner",
    "every_seconds",
    "full_bytes",
    "throughput_bytes_per_second",
    "projected_rto_seconds",
    "rto_applies_to",
)
CHECK_FIELDS = (
    "name",
    "status",
    "reason",
    "expected",
    "observed",
    "detail",
    "proves_data",
    "seconds",
)


def _record(
    source: ScenarioResult | Result,
    objectives: dict[str, Any],
    phases: dict[str, float],
    checks: list[Any],
) -> dict[str, Any]:
    record: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    record.update((name, getattr(source, name)) for name in SHARED)
    tags = source.tags
    record["tags"] = tags_of(tags) if isinstance(tags, str) else list(tags)
    record.update(objectives)
    record.update(
        started_at=_iso(source.started_at),
        finished_at=_iso(source.finished_at),
        snapshot_time=_iso(source.snapshot_time),
        phases=phases,
        checks=[{name: getattr(check, name) for name in CHECK_FIELDS} for check in checks],
    )
    return record


def from_result(result: ScenarioResult, run_id: str) -> dict[str, Any]:
    objectives: dict[str, Any] = {"run_id": run_id, "kept": result.kept or None}
    for objective in (result.rto, result.rpo):
        objectives[f"{objective.name}_seconds"] = objective.measured_seconds
        objectives[f"{objective.name}_target_seconds"] = objective.target_seconds
        objectives[f"{objective.name}_status"] = objective.status
    objectives["rpo_basis"] = result.rpo.basis
    return _record(result, objectives, dict(result.phases), result.checks)


def from_row(row: Result) -> dict[str, Any]:
    columns = (
        "rto_seconds",
        "rto_target_seconds",
        "rto_status",
        "rpo_seconds",
        "rpo_target_seconds",
        "rpo_status",
        "rpo_basis",
    )
    objectives = {name: getattr(row, name) for name in columns}
    objectives.update(run_id=row.drill.run_id, trigger=row.drill.trigger, host=row.drill.host)
    phases = {phase.name: phase.seconds for phase in row.phases}
    return _record(row, objectives, phases, row.checks)


def drill_document(outcome: DrillOutcome) -> dict[str, Any]:
    """The --json document of check and drill; each result says whether the history holds it."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": outcome.run_id,
        "status": outcome.status,
        "exit_code": outcome.exit_code(),
        "results": [
            {**from_result(result, outcome.run_id), "recorded": outcome.recorded(result)}
            for result in outcome.results
        ],
    }


def result_line(result: ScenarioResult, run_id: str) -> dict[str, Any]:
    """A --json-lines object for one finished scenario, written before the history records it
    (whether it could be recorded is in the summary's "unrecorded")."""
    return {"schema_version": SCHEMA_VERSION, "type": "result", **from_result(result, run_id)}


def summary_line(outcome: DrillOutcome, seconds: float, history: str) -> dict[str, Any]:
    """The last --json-lines object: the run's status, counts, duration and history."""
    return {
        "schema_version": SCHEMA_VERSION,
        "type": "summary",
        "run_id": outcome.run_id,
        "trigger": outcome.trigger,
        "status": outcome.status,
        "exit_code": outcome.exit_code(),
        "scenarios": len(outcome.results),
        "counts": outcome.counts(),
        "interrupted": outcome.interrupted,
        "unrecorded": list(outcome.unrecorded),
        "seconds": round(seconds, 3),
        "history": history,
    }

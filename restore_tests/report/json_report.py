"""The report as JSON (schema_version 1): the status rows of `status --json`, each with its
figures over the period, and the period's failures. Times are ISO 8601 in UTC."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from restore_tests.history.views import RtoPoint
from restore_tests.report.document import ReportDocument, rto_summary
from restore_tests.report.records import SCHEMA_VERSION
from restore_tests.report.status import FAILING, NEVER_TESTED, OK, OVERDUE, status_document


def render_json(document: ReportDocument) -> str:
    return json.dumps(report_document(document), indent=2, ensure_ascii=False) + "\n"


def report_document(document: ReportDocument) -> dict[str, Any]:
    status = status_document(document.status)
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": document.generated_at.isoformat(),
        "time_zone": document.generated_at.astimezone().strftime("%Z %z"),
        "period": {"since": _iso(document.since), "until": _iso(document.until)},
        "filters": {"clients": list(document.clients), "tags": list(document.tags)},
        "history": document.status.history,
        "scenario_folder": document.folder,
        "tool_version": document.tool_version,
        "summary": _counts(document),
        "scenarios": [_scenario(document, row) for row in status["scenarios"]],
        "failures": [
            {**asdict(failure), "started_at": _iso(failure.started_at)}
            for failure in document.failures
        ],
        "failures_truncated": document.more_failures,
        "retired": status["retired"],
    }


def _counts(document: ReportDocument) -> dict[str, int]:
    counts = {"scenarios": len(document.rows)}
    for state in (OK, FAILING, OVERDUE, NEVER_TESTED):
        counts[state.replace(" ", "_")] = document.status.count(state)
    return counts


def _scenario(document: ReportDocument, row: dict[str, Any]) -> dict[str, Any]:
    """A status row, what its newest pass proved, and its figures over the period."""
    name = row["scenario"]
    points = document.rto_points.get(name, [])
    summary = rto_summary(points)
    rpo = document.rpo.get(name)
    period = {
        "rto": asdict(summary) if summary else None,
        "rto_points": [_point(point) for point in points],
        "phase_means_seconds": document.phases.get(name, {}),
        "rpo": asdict(rpo) if rpo else None,
    }
    return {**row, "last_pass_proved": document.proofs.get(name), "period": period}


def _point(point: RtoPoint) -> dict[str, Any]:
    """A point as asdict() would make it, without its deep copies (26,000 in 5 years of weeks)."""
    return {
        "started_at": point.started_at.isoformat(),
        "status": point.status,
        "rto_seconds": point.rto_seconds,
        "rto_target_seconds": point.rto_target_seconds,
        "projected_rto_seconds": point.projected_rto_seconds,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None

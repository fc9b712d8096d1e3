"""The status as a Prometheus textfile-collector file (node_exporter --collector.textfile).

prometheus_client writes the exposition format (label escaping, HELP and TYPE lines); the
command line writes it to its file atomically, as it writes a report.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from restore_tests.report.status import FAILING, NEVER_TESTED, OVERDUE, StatusReport
from restore_tests.results import PASS

LABELS = ("scenario", "client", "kind")
PREFIX = "restore_tests_"
# name: help. Each is one gauge per scenario; a value that is unknown is left out, not 0.
GAUGES = {
    "last_pass": "1 when the scenario's last verdict is a pass, else 0.",
    "failing": "1 when the last verdict is a fail or an error.",
    "overdue": "1 when no pass is within the scenario's every: interval.",
    "never_tested": "1 when the history has no verdict for the scenario.",
    "last_success_timestamp_seconds": "When the last pass started (Unix time).",
    "last_success_age_seconds": "Age of the last pass when this file was written.",
    "rto_seconds": "The last measured RTO.",
    "rto_target_seconds": "The scenario's RTO target.",
    "projected_rto_seconds": "The full restore's projected RTO (subset restores).",
    "rpo_seconds": "The last measured RPO (age of the restored backup).",
    "rpo_target_seconds": "The scenario's RPO target.",
}


def registry(report: StatusReport) -> CollectorRegistry:
    """One gauge per measure, one sample per scenario, plus the time the file was made."""
    collectors = CollectorRegistry()
    gauges = {
        name: Gauge(PREFIX + name, text, LABELS, registry=collectors)
        for name, text in GAUGES.items()
    }
    now = report.generated_at
    for row in report.rows:
        values = {
            "last_pass": float(row.last_status == PASS),
            "failing": float(FAILING in row.problems),
            "overdue": float(OVERDUE in row.problems),
            "never_tested": float(NEVER_TESTED in row.problems),
            "last_success_timestamp_seconds": _timestamp(row.last_pass_at),
            "last_success_age_seconds": row.proof_age_seconds(now),
            "rto_seconds": row.rto_seconds,
            "rto_target_seconds": row.rto_target_seconds,
            "projected_rto_seconds": row.projected_rto_seconds,
            "rpo_seconds": row.rpo_seconds,
            "rpo_target_seconds": row.rpo_target_seconds,
        }
        for name, value in values.items():
            if value is not None:
                gauges[name].labels(row.scenario, row.client, row.kind).set(value)
    made = Gauge(
        PREFIX + "metrics_generated_timestamp_seconds",
        "When this file was written.",
        registry=collectors,
    )
    made.set(now.timestamp())
    return collectors


def _timestamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment else None


def exposition(report: StatusReport) -> str:
    return generate_latest(registry(report)).decode()

"""Human renderings: the one-line verdict, the drill summary and the RTO history table."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from tabulate import tabulate

from restore_tests.report.proof import proven
from restore_tests.timing import format_duration

HISTORY_COLUMNS = (
    "scenario",
    "when",
    "status",
    "RTO / target",
    "RPO / target",
    "reason",
)  # when: local
REASON_WIDTH = 90


def verdict_line(record: dict[str, Any]) -> str:
    """`PASS  share  RTO 41s / 15m  RPO 3h12m / 26h  1,204 files hashed (3.1 GiB)`: what was
    proven (report/proof.py), else the reason; where --keep left the sandbox, on every verdict."""
    status = record["status"].upper()
    head = f"{status:<5} {record['scenario']}"
    if record["status"] == "pass":
        parts = [head, f"RTO {_objective(record, 'rto')}", f"RPO {_objective(record, 'rpo')}"]
        line = "  ".join([*parts, proven(record)]).rstrip()
    else:
        line = f"{head}  {record['reason']}"
    if record.get("kept"):
        line += f"\n      kept for inspection: {record['kept']}"
    return line


def _objective(record: dict[str, Any], name: str) -> str:
    """'41s / 15m'; an RTO projected to the full restore: '41s (full ~2h10m) / 2h'."""
    measured = record.get(f"{name}_seconds")
    target = record.get(f"{name}_target_seconds")
    text = format_duration(measured)
    projected = record.get("projected_rto_seconds") if name == "rto" else None
    if projected is not None:
        text += f" (full ~{format_duration(projected)})"
    return f"{text} / {format_duration(target)}" if target is not None else text


def _mark(record: dict[str, Any], name: str) -> str:
    text = _objective(record, name)
    return text + (" !" if record.get(f"{name}_status") == "failed" else "")


def _when(record: dict[str, Any]) -> str:
    started = record.get("started_at")
    return (
        datetime.fromisoformat(started).astimezone().strftime("%Y-%m-%d %H:%M") if started else "-"
    )


def zone_name() -> str:
    """The local time zone, for column headers: "when (Europe/Paris)", else "when (CET)"."""
    named = os.environ.get("TZ", "").lstrip(":")
    if not named:
        localtime = Path("/etc/localtime")
        if localtime.is_symlink() and "zoneinfo/" in str(localtime.resolve()):
            named = str(localtime.resolve()).split("zoneinfo/", 1)[1]
    return named or datetime.now().astimezone().tzname() or "local time"


def _short(text: str, width: int = REASON_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def history_table(records: list[dict[str, Any]]) -> str:
    """The measured RTO history: one row per result, newest first."""
    if not records:
        return "no results in the history yet"
    rows = [
        (
            record["scenario"],
            _when(record),
            record["status"].upper(),
            _mark(record, "rto"),
            _mark(record, "rpo"),
            _short(record.get("reason") or ""),
        )
        for record in records
    ]
    headers = (HISTORY_COLUMNS[0], f"when ({zone_name()})", *HISTORY_COLUMNS[2:])
    return tabulate(rows, headers=headers, tablefmt="simple")


def drill_table(records: list[dict[str, Any]]) -> str:
    rows = [
        (
            record["scenario"],
            record["status"].upper(),
            _mark(record, "rto"),
            _mark(record, "rpo"),
            f"{record['files']:,}" if record.get("files") is not None else "-",
            _short(record.get("reason") or "", 70),
        )
        for record in records
    ]
    return tabulate(
        rows,
        headers=("scenario", "status", "RTO / target", "RPO / target", "files", "reason"),
        tablefmt="simple",
    )


def to_json(records: Any) -> str:
    return json.dumps(records, indent=2, sort_keys=False, default=str)


CSV_FIELDS = (
    "scenario",
    "kind",
    "status",
    "reason",
    "run_id",
    "started_at",
    "snapshot_id",
    "snapshot_time",
    "rto_seconds",
    "rto_target_seconds",
    "rto_status",
    "rpo_seconds",
    "rpo_target_seconds",
    "rpo_status",
    "files",
    "bytes",
)


def to_csv(records: list[dict[str, Any]]) -> str:
    output = io.StringIO()
    writer = csv.DictWriter(output, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    return output.getvalue()

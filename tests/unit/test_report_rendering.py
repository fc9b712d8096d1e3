"""Human renderings: the one-line verdict, the RTO history table and the CSV export."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from restore_tests.report.table import history_table, to_csv, verdict_line


def record(**changes: Any) -> dict[str, Any]:
    """A flat result record as report.records produces it: a passing nightly run of `share`."""
    base: dict[str, Any] = {
        "scenario": "share",
        "kind": "files",
        "status": "pass",
        "reason": "",
        "run_id": "r-42",
        "started_at": "2024-05-01T03:00:12+00:00",
        "snapshot_id": "4f2c1a9e" * 8,
        "snapshot_time": "2024-04-30T23:48:00+00:00",
        "rto_seconds": 41.0,
        "rto_target_seconds": 900.0,
        "rto_status": "passed",
        "rpo_seconds": 11520.0,
        "rpo_target_seconds": 93600.0,
        "rpo_status": "passed",
        "files": 1204,
        "bytes": int(3.1 * 1024**3),
        "kept": None,
    }
    base.update(changes)
    return base


def cells(line: str) -> list[str]:
    """The cells of one tabulate 'simple' row (cells are separated by two spaces or more)."""
    return re.split(r"\s{2,}", line.strip())


# -- the verdict line -------------------------------------------------------------------------


def test_a_passing_verdict_shows_objectives_and_what_was_proven() -> None:
    manifest = {
        "name": "manifest /data/SHA256SUMS",
        "status": "passed",
        "expected": "1204 files match",
        "observed": f"1,204 match ({int(3.1 * 1024**3):,} bytes hashed)",
        "proves_data": True,
    }

    assert verdict_line(record(checks=[manifest])) == (
        "PASS  share  RTO 41s / 15m  RPO 3h12m / 26h  1,204 files hashed (3.1 GiB)"
    )


def test_a_passing_verdict_without_a_proving_check_says_restored_not_verified() -> None:
    assert verdict_line(record()) == (
        "PASS  share  RTO 41s / 15m  RPO 3h12m / 26h  1,204 files restored (3.1 GiB)"
    )


def test_a_passing_verdict_without_targets_or_counts_shows_what_is_known() -> None:
    line = verdict_line(
        record(rto_target_seconds=None, rpo_seconds=None, rpo_target_seconds=None, files=None)
    )

    assert line == "PASS  share  RTO 41s  RPO -"


def test_a_passing_verdict_kept_with_keep_says_where_the_sandbox_is() -> None:
    kept = "sandbox: docker exec -it restore-tests-r-42-share-1 sh ; staging: /tmp/rt/r-42-1"

    assert verdict_line(record(kept=kept)).splitlines() == [
        "PASS  share  RTO 41s / 15m  RPO 3h12m / 26h  1,204 files restored (3.1 GiB)",
        f"      kept for inspection: {kept}",
    ]


def test_a_failing_verdict_shows_the_reason() -> None:
    line = verdict_line(record(status="fail", reason="RTO 4m12s exceeds target 2m"))

    assert line == "FAIL  share  RTO 4m12s exceeds target 2m"


def test_a_failing_verdict_says_where_the_restored_data_was_kept() -> None:
    line = verdict_line(
        record(
            status="fail",
            reason="1 file differs: ledger.xlsx",
            kept="/var/lib/restore-tests/kept/share-42",
        )
    )

    assert line.splitlines() == [
        "FAIL  share  1 file differs: ledger.xlsx",
        "      kept for inspection: /var/lib/restore-tests/kept/share-42",
    ]


def test_an_error_verdict_shows_the_reason() -> None:
    line = verdict_line(
        record(status="error", reason="restic: wrong password for repository /srv/restic/share")
    )

    assert line == "ERROR share  restic: wrong password for repository /srv/restic/share"


# -- the history table ------------------------------------------------------------------------


def test_an_empty_history_says_so() -> None:
    assert history_table([]) == "no results in the history yet"


@pytest.fixture
def in_paris(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The local time zone is Europe/Paris for the test, and the process's own afterwards."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("in_paris")
def test_the_history_table_has_one_row_per_result_in_the_given_order() -> None:
    table = history_table(
        [
            record(),
            record(
                status="fail",
                reason="RTO 4m12s exceeds target 2m",
                rto_seconds=252.0,
                rto_target_seconds=120.0,
                rto_status="failed",
                started_at="2024-04-30T03:00:09+00:00",
            ),
        ]
    )
    header, rule, *rows = table.splitlines()

    assert cells(header) == [
        "scenario",
        "when (Europe/Paris)",
        "status",
        "RTO / target",
        "RPO / target",
        "reason",
    ]
    assert set(rule.replace(" ", "")) == {"-"}
    assert [cells(row) for row in rows] == [
        ["share", "2024-05-01 05:00", "PASS", "41s / 15m", "3h12m / 26h"],
        [
            "share",
            "2024-04-30 05:00",
            "FAIL",
            "4m12s / 2m !",
            "3h12m / 26h",
            "RTO 4m12s exceeds target 2m",
        ],
    ]


def test_a_long_or_multiline_reason_is_shortened_to_one_line() -> None:
    reason = "restic could not restore 40 files (damaged data):\n" + "/data/compta/x.txt " * 20

    [row] = history_table([record(status="fail", reason=reason, started_at=None)]).splitlines()[2:]

    shown = cells(row)[-1]
    assert cells(row)[1] == "-"
    assert len(shown) == 90
    assert shown.startswith("restic could not restore 40 files (damaged data): /data/compta/")
    assert shown.endswith("...")


# -- CSV --------------------------------------------------------------------------------------


def test_the_csv_export_has_a_fixed_header_and_ignores_other_keys() -> None:
    text = to_csv([record(phases={"fetch": 12.0}, checks=[])])
    rows = list(csv.reader(io.StringIO(text)))

    assert text.splitlines()[0] == (
        "scenario,kind,status,reason,run_id,started_at,snapshot_id,snapshot_time,rto_seconds,"
        "rto_target_seconds,rto_status,rpo_seconds,rpo_target_seconds,rpo_status,files,bytes"
    )
    assert rows[1][:6] == ["share", "files", "pass", "", "r-42", "2024-05-01T03:00:12+00:00"]
    assert rows[1][-2:] == ["1204", str(int(3.1 * 1024**3))]


def test_the_csv_export_of_no_records_is_the_header_alone() -> None:
    assert to_csv([]).splitlines() == [to_csv([record()]).splitlines()[0]]

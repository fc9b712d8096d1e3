"""The RTO projection of a subset restore: the math, the verdict against it, the scenario's
rto_applies_to, and how a verdict line shows it."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from restore_tests.errors import ScenarioError
from restore_tests.report.table import history_table, verdict_line
from restore_tests.scenario import load_file
from restore_tests.timing import (
    FAILED,
    NOT_CONFIGURED,
    PASSED,
    PROJECTED,
    UNKNOWN,
    Projection,
    judge_projected_rto,
    project_rto,
)

GIB = 1024**3
PHASES = {"sandbox": 2.0, "fetch": 10.0, "load": 5.0, "verify": 5.0, "boot": 3.0}


def projection(restored: int, full: int, measured: float, projected: float) -> Projection:
    return Projection(restored, full, measured, restored / measured, projected)


# -- the math ---------------------------------------------------------------------------------


def test_fetch_load_and_verify_are_scaled_by_the_size_ratio_and_sandbox_and_boot_are_not() -> None:
    found = project_rto(PHASES, 25.0, restored_bytes=GIB, full_bytes=10 * GIB)

    assert found is not None
    assert found.projected_seconds == pytest.approx(2 + 3 + 10 * 20)
    assert found.throughput_bytes_per_second == pytest.approx(GIB / 20)
    assert (found.restored_bytes, found.full_bytes, found.measured_seconds) == (
        GIB,
        10 * GIB,
        25.0,
    )


def test_the_gaps_between_phases_count_as_a_fixed_cost() -> None:
    found = project_rto(PHASES, 26.5, restored_bytes=GIB, full_bytes=10 * GIB)

    assert found is not None
    assert found.projected_seconds == pytest.approx(6.5 + 10 * 20)


def test_a_restore_of_the_whole_size_projects_the_measured_rto() -> None:
    found = project_rto(PHASES, 25.0, restored_bytes=GIB, full_bytes=GIB)

    assert found is not None
    assert found.projected_seconds == pytest.approx(25.0)


def test_a_full_size_below_the_restored_bytes_never_projects_less_than_was_measured() -> None:
    found = project_rto(PHASES, 25.0, restored_bytes=GIB, full_bytes=GIB // 2)

    assert found is not None
    assert found.projected_seconds == pytest.approx(25.0)


@pytest.mark.parametrize(
    ("phases", "measured", "restored", "full"),
    [
        (PHASES, 25.0, 0, GIB),  # nothing restored
        (PHASES, 25.0, GIB, None),  # the full size is unknown
        (PHASES, 25.0, GIB, 0),
        (PHASES, None, GIB, GIB),  # the RTO was not measured
        ({"sandbox": 2.0, "boot": 3.0}, 5.0, GIB, GIB),  # no data phase was timed
    ],
)
def test_there_is_no_projection_without_both_sizes_and_a_timed_data_phase(
    phases: dict[str, float], measured: float | None, restored: int, full: int | None
) -> None:
    assert project_rto(phases, measured, restored, full) is None


@pytest.mark.parametrize(
    ("restored", "shown"), [(int(0.031 * 12 * GIB), "3.1%"), (int(0.00042 * 12 * GIB), "0.042%")]
)
def test_the_projection_names_the_measured_rto_and_the_restored_share(
    restored: int, shown: str
) -> None:
    described = projection(restored, 12 * GIB, 41.0, 7800.0).describe()

    assert described == f"measured 41s restoring {shown} of 12.0 GiB"


# -- the verdict ------------------------------------------------------------------------------


def test_a_projection_over_the_target_fails_with_the_projected_and_the_measured_rto() -> None:
    projected = projection(int(0.031 * 12 * GIB), 12 * GIB, 41.0, 7800.0)

    objective = judge_projected_rto(41.0, 7200.0, projected)

    assert (objective.status, objective.basis) == (FAILED, PROJECTED)
    assert (objective.measured_seconds, objective.target_seconds) == (41.0, 7200.0)
    assert objective.failure_reason() == (
        "projected full-restore RTO 2h10m exceeds target 2h "
        "(measured 41s restoring 3.1% of 12.0 GiB)"
    )


def test_a_projection_within_the_target_passes() -> None:
    objective = judge_projected_rto(41.0, 7200.0, projection(GIB, 12 * GIB, 41.0, 7100.0))

    assert (objective.status, objective.failure_reason()) == (PASSED, None)


def test_a_projection_that_could_not_be_made_leaves_the_rto_unknown_and_says_why() -> None:
    objective = judge_projected_rto(41.0, 7200.0, None)

    assert (objective.status, objective.measured_seconds) == (UNKNOWN, 41.0)
    assert objective.failure_reason() == (
        "full-restore RTO could not be projected (restored or full size unknown)"
    )


def test_a_projection_without_a_target_is_not_configured() -> None:
    objective = judge_projected_rto(41.0, None, projection(GIB, 12 * GIB, 41.0, 7800.0))

    assert (objective.status, objective.failure_reason()) == (NOT_CONFIGURED, None)


# -- the scenario -----------------------------------------------------------------------------

SCENARIO = """\
name: share
kind: files
source:
  type: restic
  repository: repos/share
  password_env: SHARE_RESTIC_PASSWORD
  include: [/data/compta]
objectives:
{objectives}
verify:
  manifest: /data/compta/SHA256SUMS
"""


def scenario_file(folder: Path, objectives: str) -> Path:
    path = folder / "share.yaml"
    path.write_text(SCENARIO.format(objectives=textwrap.indent(objectives, "  ")))
    return path


def test_the_rto_applies_to_the_restore_as_run_unless_the_scenario_says_full(
    tmp_path: Path,
) -> None:
    [default] = load_file(scenario_file(tmp_path, "rto: 2h"))
    [full] = load_file(scenario_file(tmp_path, "rto: 2h\nrto_applies_to: full"))

    assert (default.objectives.rto_applies_to, full.objectives.rto_applies_to) == (
        "restored",
        "full",
    )


def test_an_rto_that_applies_to_the_full_restore_needs_a_target(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as raised:
        load_file(scenario_file(tmp_path, "rpo: 26h\nrto_applies_to: full"))

    [problem] = raised.value.problems
    assert (problem.line, problem.field, problem.message) == (
        8,
        "objectives",
        "rto_applies_to: full needs an rto to hold the projection against",
    )


# -- how it is shown --------------------------------------------------------------------------


def record(**changes: Any) -> dict[str, Any]:
    """A passing record of a subset restore: 41s measured against a 15m target."""
    base: dict[str, Any] = {
        "scenario": "share",
        "status": "pass",
        "reason": "",
        "started_at": "2024-05-01T03:00:12+00:00",
        "rto_seconds": 41.0,
        "rto_target_seconds": 900.0,
        "rto_status": "passed",
        "rpo_seconds": 11520.0,
        "rpo_target_seconds": 93600.0,
        "rpo_status": "passed",
        "files": 12,
        "bytes": 4096,
    }
    return {**base, **changes}


def test_a_verdict_line_shows_the_projected_full_restore_next_to_the_measured_rto() -> None:
    line = verdict_line(record(rto_target_seconds=7200.0, projected_rto_seconds=7800.0))

    assert "  RTO 41s (full ~2h10m) / 2h  RPO 3h12m / 26h" in line


def test_a_result_without_a_projection_shows_the_rto_as_before() -> None:
    assert "  RTO 41s / 15m  " in verdict_line(record(projected_rto_seconds=None))


def test_the_history_table_marks_a_missed_projection_next_to_the_measured_rto() -> None:
    table = history_table(
        [record(rto_target_seconds=7200.0, projected_rto_seconds=7800.0, rto_status="failed")]
    )

    assert "41s (full ~2h10m) / 2h !" in table

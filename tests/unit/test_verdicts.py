"""ScenarioResult.conclude(): how checks and objectives become PASS, FAIL or ERROR."""

from __future__ import annotations

from datetime import UTC, datetime

from restore_tests.results import ERROR, FAIL, PASS, Check, ScenarioResult
from restore_tests.timing import judge

NO_PROOF = (
    "no check proved the data: configure a manifest, checksums, a source digest or verify, "
    "or an expectation above zero"
)


def result_with(
    *checks: Check, rto_seconds: float | None = None, rto_target: float | None = None
) -> ScenarioResult:
    result = ScenarioResult(
        "share",
        "files",
        "/etc/restore-tests/share.yaml",
        "0" * 64,
        datetime(2024, 5, 1, 3, 0, tzinfo=UTC),
        checks=list(checks),
    )
    result.rto = judge("rto", rto_seconds, rto_target, "fetch to verify")
    return result


def proof() -> Check:
    return Check.passed("manifest /data/compta/SHA256SUMS", proves_data=True)


def test_a_passing_check_that_proves_the_data_makes_the_scenario_pass() -> None:
    result = result_with(
        Check.passed("restic restore"), proof(), rto_seconds=41.0, rto_target=900.0
    )

    result.conclude()

    assert (result.status, result.reason) == (PASS, "")


def test_passing_checks_that_prove_nothing_do_not_make_the_scenario_pass() -> None:
    result = result_with(Check.passed("restic restore"), Check.passed("sandbox file count"))

    result.conclude()

    assert (result.status, result.reason) == (FAIL, NO_PROOF)


def test_no_checks_at_all_is_no_proof() -> None:
    result = result_with()

    result.conclude()

    assert (result.status, result.reason) == (FAIL, NO_PROOF)


def test_errors_win_over_failures_and_the_first_two_are_named() -> None:
    result = result_with(
        proof(),
        Check.failed("manifest", "3 files differ: a, b, c"),
        Check.error("sandbox", "sandbox could not start"),
        Check.error("sandbox command", "docker exec timed out"),
        Check.error("file count", "find failed"),
        rto_seconds=1000.0,
        rto_target=900.0,
    )

    result.conclude()

    assert (result.status, result.reason) == (
        ERROR,
        "sandbox could not start; docker exec timed out",
    )


def test_failures_and_missed_objectives_combine_in_one_reason() -> None:
    result = result_with(
        proof(),
        Check.failed("manifest", "1 file differs: ledger.xlsx"),
        rto_seconds=252.0,
        rto_target=120.0,
    )
    result.rpo = judge("rpo", 3 * 86400.0, 86400.0, "snapshot time")

    result.conclude()

    assert (result.status, result.reason) == (
        FAIL,
        "1 file differs: ledger.xlsx; RTO 4m12s exceeds target 2m; snapshot is 3d old, RPO is 24h",
    )


def test_at_most_three_failure_reasons_are_joined() -> None:
    result = result_with(
        *(Check.failed(f"check {index}", f"reason {index}") for index in range(5)),
        rto_seconds=252.0,
        rto_target=120.0,
    )

    result.conclude()

    assert result.reason == "reason 0; reason 1; reason 2"


def test_a_missed_objective_alone_fails_a_scenario_whose_data_is_proved() -> None:
    result = result_with(proof(), rto_seconds=252.0, rto_target=120.0)

    result.conclude()

    assert (result.status, result.reason) == (FAIL, "RTO 4m12s exceeds target 2m")


def test_an_objective_that_could_not_be_established_fails_the_scenario() -> None:
    result = result_with(proof())
    result.rpo = judge("rpo", None, 93600.0, "restic printed no snapshot time")

    result.conclude()

    assert (result.status, result.reason) == (
        FAIL,
        "RPO could not be established (restic printed no snapshot time)",
    )


def test_an_error_already_recorded_is_kept_as_it_is() -> None:
    result = result_with(proof())
    result.status, result.reason = ERROR, "restic: wrong password for repository /srv/restic"

    result.conclude()

    assert (result.status, result.reason) == (
        ERROR,
        "restic: wrong password for repository /srv/restic",
    )

"""Durations and sizes as people write them, phase timing, and RTO/RPO verdicts."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from restore_tests import timing
from restore_tests.timing import (
    FAILED,
    NOT_CONFIGURED,
    PASSED,
    UNKNOWN,
    PhaseClock,
    format_duration,
    format_size,
    judge,
    parse_duration,
    parse_size,
)

# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("4h", 14400),
        ("7d", 604800),
        ("2w", 1209600),
        ("1h30m", 5400),
        ("1.5h", 5400),
    ],
)
def test_a_duration_is_parsed_into_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "soon", "15", "m", "15x", "-5m", "1h30", "h1", "1,5h", "1h 30m", "26H"]
)
def test_an_unreadable_duration_raises_naming_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_duration(text)

    assert str(error.value) == (
        f"{text!r} is not a duration; write it like 90s, 15m, 4h, 7d or 1h30m"
    )


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512m", 512 * 1024**2),
        ("2g", 2 * 1024**3),
        ("1.5GiB", 1536 * 1024**2),
        ("10 KB", 10 * 1024),
        ("3t", 3 * 1024**4),
        ("1024", 1024),
        (4096, 4096),
        ("0", 0),
    ],
)
def test_a_size_is_parsed_into_bytes_with_binary_units(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "-1g", "2x", "1.5 gigs", ""])
def test_an_unreadable_size_raises_naming_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_size(text)

    assert str(error.value) == f"{text!r} is not a size; write it like 512m, 2g or 1.5GiB"


# -- formatting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0.0s"),
        (0.4, "0.4s"),
        (10, "10s"),
        (41, "41s"),
        (41.4, "41s"),
        (60, "1m"),
        (252, "4m12s"),
        (3599, "59m59s"),
        (3600, "1h"),
        (11520, "3h12m"),
        (93600, "26h"),
        (2 * 86400 - 60, "47h59m"),
        (2 * 86400, "2d"),
        (2 * 86400 + 4 * 3600, "2d4h"),
        (3 * 86400, "3d"),
    ],
)
def test_a_duration_is_shown_in_its_shortest_human_form(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "-"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (int(3.1 * 1024**3), "3.1 GiB"),
        (1024**4, "1.0 TiB"),
        (5 * 1024**5, "5120.0 TiB"),
    ],
)
def test_a_size_is_shown_in_binary_units(size: int | None, text: str) -> None:
    assert format_size(size) == text


# -- the phase clock --------------------------------------------------------------------------


def clock_with(**spans: tuple[float, float]) -> PhaseClock:
    return PhaseClock(started=0.0, spans=dict(spans))


def test_the_measured_rto_is_the_wall_span_from_fetch_start_to_verify_end() -> None:
    clock = clock_with(
        select=(0.0, 3.0),
        fetch=(3.0, 40.0),
        sandbox=(40.0, 42.0),
        load=(42.0, 50.0),
        verify=(50.0, 70.0),
        cleanup=(70.0, 95.0),
    )

    assert clock.measured_rto() == 67.0


def test_overlapping_phases_are_not_counted_twice_in_the_measured_rto() -> None:
    # The sandbox starts while fetch still runs: the sum of phases (40 + 30 + 20) would be 90.
    clock = clock_with(fetch=(0.0, 40.0), sandbox=(10.0, 40.0), verify=(40.0, 60.0))

    assert sum(clock.phases.values()) == 90.0
    assert clock.measured_rto() == 60.0


@pytest.mark.parametrize(
    "spans",
    [
        {"fetch": (0.0, 10.0), "sandbox": (10.0, 12.0)},
        {"sandbox": (0.0, 2.0), "verify": (2.0, 10.0)},
        {},
    ],
    ids=["no verify", "no fetch", "nothing"],
)
def test_the_measured_rto_is_unknown_without_both_fetch_and_verify(
    spans: dict[str, tuple[float, float]],
) -> None:
    assert clock_with(**spans).measured_rto() is None


class FakeMonotonic:
    """A monotonic clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMonotonic]:
    clock = FakeMonotonic()
    monkeypatch.setattr(timing, "time", SimpleNamespace(monotonic=clock))
    yield clock


def test_a_phase_entered_twice_spans_from_its_first_start_to_its_last_end(
    fake_time: FakeMonotonic,
) -> None:
    clock = PhaseClock(started=100.0)
    with clock.phase("fetch"):
        fake_time.now = 110.0
    fake_time.now = 115.0
    with clock.phase("fetch"):
        fake_time.now = 130.0

    assert clock.spans == {"fetch": (0.0, 30.0)}
    assert clock.phases == {"fetch": 30.0}


def test_a_phase_that_raises_is_still_timed(fake_time: FakeMonotonic) -> None:
    clock = PhaseClock(started=100.0)

    with pytest.raises(RuntimeError, match="restic failed"), clock.phase("fetch"):
        fake_time.now = 104.5
        raise RuntimeError("restic failed")

    assert clock.phases == {"fetch": 4.5}


# -- verdicts on objectives -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("measured", "target", "status"),
    [
        (41.0, 900.0, PASSED),
        (900.0, 900.0, PASSED),
        (901.0, 900.0, FAILED),
        (None, 900.0, UNKNOWN),
        (41.0, None, NOT_CONFIGURED),
        (None, None, NOT_CONFIGURED),
    ],
)
def test_an_objective_is_judged_against_its_target(
    measured: float | None, target: float | None, status: str
) -> None:
    objective = judge("rto", measured, target, "fetch to verify")

    assert (objective.status, objective.measured_seconds, objective.target_seconds) == (
        status,
        measured,
        target,
    )


def test_a_missed_rto_names_the_measure_and_the_target() -> None:
    objective = judge("rto", 252.0, 120.0, "fetch to verify")

    assert objective.failure_reason() == "RTO 4m12s exceeds target 2m"
    assert objective.describe() == "4m12s / 2m"


def test_a_missed_rpo_names_the_age_of_the_snapshot_and_the_target() -> None:
    objective = judge("rpo", 3 * 86400.0, 86400.0, "snapshot time")

    assert objective.failure_reason() == "snapshot is 3d old, RPO is 24h"


def test_an_unknown_objective_says_why_it_could_not_be_established() -> None:
    objective = judge("rpo", None, 93600.0, "restic printed no snapshot time")

    assert objective.failure_reason() == (
        "RPO could not be established (restic printed no snapshot time)"
    )


@pytest.mark.parametrize(("measured", "target"), [(41.0, 900.0), (41.0, None), (None, None)])
def test_a_met_or_unconfigured_objective_gives_no_failure_reason(
    measured: float | None, target: float | None
) -> None:
    assert judge("rto", measured, target, "").failure_reason() is None

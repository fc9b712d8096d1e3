"""`snapshot: {random_within: 30d}`: which snapshots a draw picks from, and its seed."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from restore_tests.sources.restic import (
    SEED_VARIABLE,
    ResticSettings,
    SnapshotFilter,
    draw_snapshot,
    seeded_random,
)
from restore_tests.sources.restic_cli import Snapshot

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
DAY = 86400.0


def snapshot(days_old: float, snapshot_id: str) -> Snapshot:
    return Snapshot(
        id=snapshot_id * 8,
        time=NOW - timedelta(days=days_old),
        hostname="fs01",
        paths=("/srv/share",),
        tags=("nightly",),
        size_bytes=None,
    )


SERIES = [snapshot(45, "a"), snapshot(29, "b"), snapshot(12, "c"), snapshot(0.1, "d")]


def test_a_draw_picks_only_snapshots_taken_within_the_window_and_each_of_them_sometimes() -> None:
    drawn = [draw_snapshot(SERIES, 30 * DAY, NOW, random.Random(seed)) for seed in range(40)]

    assert {each.snapshot.id[0] for each in drawn if each} == {"b", "c", "d"}
    assert {each.among for each in drawn if each} == {3}


def test_the_same_seed_draws_the_same_snapshot_whatever_order_restic_lists_them_in() -> None:
    shuffled = [SERIES[2], SERIES[0], SERIES[3], SERIES[1]]

    for seed in range(10):
        first = draw_snapshot(SERIES, 30 * DAY, NOW, random.Random(seed))
        again = draw_snapshot(shuffled, 30 * DAY, NOW, random.Random(seed))
        assert first == again


def test_no_snapshot_within_the_window_draws_nothing() -> None:
    assert draw_snapshot(SERIES[:1], 30 * DAY, NOW, random.Random(1)) is None
    assert draw_snapshot([], 30 * DAY, NOW, random.Random(1)) is None


def test_a_snapshot_at_the_edge_of_the_window_or_dated_in_the_future_is_within() -> None:
    edge, ahead = snapshot(30, "e"), snapshot(-0.5, "f")

    drawn = {draw_snapshot([edge, ahead], 30 * DAY, NOW, random.Random(seed)) for seed in range(20)}

    assert {each.snapshot.id[0] for each in drawn if each} == {"e", "f"}


def test_the_seed_variable_makes_draws_repeatable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SEED_VARIABLE, "quarterly-2026")

    assert [seeded_random().random() for _ in range(2)] == [
        random.Random("quarterly-2026").random()
    ] * 2


def test_random_within_is_a_duration_in_the_snapshot_filter() -> None:
    settings = ResticSettings(
        type="restic",
        repository="/srv/restic",
        password_env="P",
        snapshot={"tags": ["nightly"], "random_within": "30d"},
    )

    assert settings.snapshot == SnapshotFilter(tags=["nightly"], random_within=30 * DAY)
    with pytest.raises(ValidationError, match="is not a duration"):
        SnapshotFilter(random_within="a month")  # type: ignore[arg-type]


def test_a_filter_describes_itself_as_a_reason_names_it() -> None:
    assert SnapshotFilter(tags=["nightly", "db"], host="fs01").describe() == (
        "tags nightly,db, host fs01"
    )
    assert SnapshotFilter(random_within=DAY).describe() == ""

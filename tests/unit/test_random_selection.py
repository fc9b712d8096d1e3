"""`drill --random K`: K scenarios drawn at random, weighted toward the least recently proven."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from restore_tests.selection import MIN_WEIGHT, choose, weigh

NOW = datetime(2026, 7, 1, 3, 30, tzinfo=UTC)
DAY = 86400.0
QUARTER = 92 * DAY
DRAWS = 6000


@dataclass(frozen=True)
class Scenario:
    name: str
    every: float = QUARTER


FOLDER = [Scenario("never"), Scenario("overdue"), Scenario("half-due"), Scenario("just-passed")]
LAST_PASSES = {
    "overdue": NOW - timedelta(days=138),  # 1.5 intervals ago
    "half-due": NOW - timedelta(days=46),
    "just-passed": NOW - timedelta(hours=1),
}


def chosen_names(count: int, rng: random.Random, last_passes=LAST_PASSES) -> list[str]:
    return [each.scenario.name for each in choose(FOLDER, last_passes, NOW, count, rng)]


def test_weight_is_the_time_since_the_last_pass_over_the_interval_with_a_floor():
    weights = {each.scenario.name: each.weight for each in weigh(FOLDER, LAST_PASSES, NOW)}
    assert weights["overdue"] == pytest.approx(1.5)
    assert weights["half-due"] == pytest.approx(0.5)
    assert weights["just-passed"] == MIN_WEIGHT


def test_a_scenario_that_never_passed_weighs_twice_the_heaviest_of_the_others():
    weighed = {each.scenario.name: each for each in weigh(FOLDER, LAST_PASSES, NOW)}
    assert weighed["never"].weight == pytest.approx(3.0)
    assert weighed["never"].reason == "never passed"
    assert weighed["overdue"].reason == "last passed 138d ago, every 92d"


def test_a_never_passed_scenario_weighs_at_least_two_when_the_others_are_fresh():
    fresh = {name: NOW - timedelta(days=1) for name in ("overdue", "half-due", "just-passed")}
    weights = {each.scenario.name: each.weight for each in weigh(FOLDER, fresh, NOW)}
    assert weights["never"] == 2.0


def test_a_last_pass_in_the_future_clock_skew_weighs_the_floor():
    skewed = {"overdue": NOW + timedelta(days=3)}
    weights = {each.scenario.name: each.weight for each in weigh(FOLDER, skewed, NOW)}
    assert weights["overdue"] == MIN_WEIGHT


def test_the_interval_of_each_scenario_scales_its_weight():
    weekly = [Scenario("weekly", every=7 * DAY), Scenario("quarterly")]
    passed = {"weekly": NOW - timedelta(days=14), "quarterly": NOW - timedelta(days=14)}
    weights = [each.weight for each in weigh(weekly, passed, NOW)]
    assert weights == [pytest.approx(2.0), pytest.approx(14 / 92)]


@pytest.mark.parametrize("count", [4, 5, 100])
def test_k_not_less_than_the_count_runs_them_all_in_folder_order(count):
    assert chosen_names(count, random.Random(1)) == [each.name for each in FOLDER]


def test_the_same_seed_repeats_the_same_choice():
    assert chosen_names(2, random.Random(42)) == chosen_names(2, random.Random(42))


def test_over_many_seeded_draws_each_is_chosen_in_proportion_to_its_weight():
    rng = random.Random(20260701)
    counts = Counter(name for _ in range(DRAWS) for name in chosen_names(1, rng))
    total = 3.0 + 1.5 + 0.5 + MIN_WEIGHT
    for name, weight in (("never", 3.0), ("overdue", 1.5), ("half-due", 0.5)):
        assert counts[name] / DRAWS == pytest.approx(weight / total, abs=0.025), counts
    assert counts["just-passed"] / DRAWS < 0.01, counts
    assert counts["never"] > counts["overdue"] > counts["half-due"] > counts["just-passed"]


def test_the_never_passed_scenario_is_among_two_chosen_far_more_often_than_the_just_passed():
    rng = random.Random(7)
    counts = Counter(name for _ in range(DRAWS) for name in chosen_names(2, rng))
    assert sum(counts.values()) == 2 * DRAWS
    assert counts["never"] / DRAWS > 0.85, counts
    assert counts["just-passed"] / DRAWS < 0.03, counts


def test_without_any_history_the_choice_is_uniform():
    rng = random.Random(3)
    counts = Counter(name for _ in range(DRAWS) for name in chosen_names(1, rng, {}))
    assert set(counts) == {each.name for each in FOLDER}
    for name in counts:
        assert counts[name] / DRAWS == pytest.approx(0.25, abs=0.025), counts

"""Choosing K scenarios of a folder at random, weighted toward the least recently proven.

A scenario's weight is the time since its last pass divided by its `every:` interval (1.0 when
it is exactly due, 2.0 when a whole interval overdue), never below MIN_WEIGHT, so that a scenario
proven yesterday is still drilled now and then. A scenario that never passed weighs most: twice
the heaviest of the others, and at least NEVER_PASSED_MIN_WEIGHT. When none has passed, all weigh
the same: the choice is uniform. K scenarios are drawn one by one without replacement.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

from restore_tests.history.store import HistoryStore
from restore_tests.timing import format_duration

log = logging.getLogger(__name__)

MIN_WEIGHT = 0.01  # a scenario that just passed: chosen rarely, never excluded
NEVER_PASSED_MIN_WEIGHT = 2.0  # as much as a scenario a whole interval overdue


class Scheduled(Protocol):
    """What the choice needs of a scenario: its name and how often it must be proven."""

    @property
    def name(self) -> str: ...

    @property
    def every(self) -> float: ...


S = TypeVar("S", bound=Scheduled)


@dataclass(frozen=True)
class Weighed(Generic[S]):
    """A scenario, its weight in the draw and what the weight was computed from."""

    scenario: S
    weight: float
    reason: str


def weigh(
    scenarios: Sequence[S], last_passes: Mapping[str, datetime], now: datetime
) -> list[Weighed[S]]:
    """Each scenario's weight (see the module's docstring), in the order given."""
    proven: dict[str, tuple[float, str]] = {}
    for scenario in scenarios:
        if scenario.name in last_passes:
            age = max(0.0, (now - last_passes[scenario.name]).total_seconds())
            reason = (
                f"last passed {format_duration(age)} ago, every {format_duration(scenario.every)}"
            )
            proven[scenario.name] = (max(MIN_WEIGHT, age / scenario.every), reason)
    never = max([NEVER_PASSED_MIN_WEIGHT, *(2 * weight for weight, _ in proven.values())])
    return [
        Weighed(scenario, *proven.get(scenario.name, (never, "never passed")))
        for scenario in scenarios
    ]


def draw(weighed: Sequence[Weighed[S]], count: int, rng: random.Random) -> list[Weighed[S]]:
    """count of them, drawn one at a time in proportion to their weights, without replacement;
    all of them when count is not less than their number. Returned in the order given."""
    if count >= len(weighed):
        return list(weighed)
    remaining = list(range(len(weighed)))
    chosen: set[int] = set()
    while len(chosen) < count:
        index = rng.choices(remaining, weights=[weighed[each].weight for each in remaining])[0]
        remaining.remove(index)
        chosen.add(index)
    return [each for index, each in enumerate(weighed) if index in chosen]


def choose(
    scenarios: Sequence[S],
    last_passes: Mapping[str, datetime],
    now: datetime,
    count: int,
    rng: random.Random,
) -> list[Weighed[S]]:
    """count scenarios chosen at random, weighted toward the least recently proven."""
    return draw(weigh(scenarios, last_passes, now), count, rng)


def choose_from_history(
    scenarios: Sequence[S], store: HistoryStore, count: int, rng: random.Random
) -> list[Weighed[S]]:
    """choose(), with the last passes read from the history; logs every weight and the choice."""
    last_passes = store.last_passes([scenario.name for scenario in scenarios])
    weighed = weigh(scenarios, last_passes, datetime.now(UTC))
    total = sum(each.weight for each in weighed) or 1.0
    for each in weighed:
        log.info(
            "%s: weight %.2f (%.1f%% of the draw): %s",
            each.scenario.name,
            each.weight,
            100 * each.weight / total,
            each.reason,
        )
    chosen = draw(weighed, count, rng)
    log.info(
        "chose %d of %d at random: %s",
        len(chosen),
        len(weighed),
        ", ".join(each.scenario.name for each in chosen),
    )
    return chosen

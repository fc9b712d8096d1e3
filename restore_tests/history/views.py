"""Read-only queries of the history for the manager's views (history, status, report, metrics).

Each view asks for what it shows, aggregated in the database where it can: a status over
100 scenarios and five years of weekly drills reads a few hundred rows, not 26,000 results.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import selectinload

from restore_tests.errors import UsageError
from restore_tests.history.models import Drill, Phase, Result
from restore_tests.history.store import HistoryStore, tags_column
from restore_tests.results import PASS
from restore_tests.timing import FAILED, parse_duration

FINISHED = ("pass", "fail", "error", "abandoned")  # verdicts; "running" is not one yet
Query = TypeVar("Query")  # a Select of any columns
RELATIVE = re.compile(r"^(\d+(\.\d+)?[smhdw])+$")


def parse_moment(text: str, option: str, now: datetime | None = None) -> datetime:
    """A point in time given on the command line: 2026-07-01, 2026-07-01T12:00[+02:00], or a
    duration ago (90d, 12w). Aware, UTC; a future moment or anything else is a usage error."""
    now = now or datetime.now(UTC)
    given = text.strip()
    try:
        if RELATIVE.match(given):
            moment = now - timedelta(seconds=parse_duration(given))
        else:
            moment = datetime.fromisoformat(given)
            if moment.tzinfo is None:  # a date or local time: as the person's clock reads it
                moment = moment.astimezone()
            moment = moment.astimezone(UTC)
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not a date: write 2026-07-01, 2026-07-01T12:00 or a "
            "duration ago such as 90d"
        ) from None
    if moment > now:
        raise UsageError(f"{option} {text} is in the future ({moment:%Y-%m-%d %H:%M} UTC)")
    return moment


def start_of_day(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time()).astimezone(UTC)


@dataclass(frozen=True)
class ResultFilter:
    """Which results a view reads; every field narrows, None or empty means any."""

    scenarios: Collection[str] = ()
    since: datetime | None = None
    until: datetime | None = None
    tags: Collection[str] = ()
    statuses: Collection[str] = ()
    clients: Collection[str] = ()
    triggers: Collection[str] = ()

    def apply(self, query: Query) -> Query:
        selected: Any = query
        conditions: list[Any] = []
        if self.scenarios:
            conditions.append(Result.scenario.in_(sorted(self.scenarios)))
        if self.since:
            conditions.append(Result.started_at >= _naive(self.since))
        if self.until:
            conditions.append(Result.started_at < _naive(self.until))
        if self.tags:
            conditions.append(or_(*(_has_tag(tag) for tag in self.tags)))
        if self.statuses:
            conditions.append(Result.status.in_(sorted(self.statuses)))
        if self.clients:
            conditions.append(Result.client.in_(sorted(self.clients)))
        if self.triggers:
            selected = selected.join(Result.drill).where(Drill.trigger.in_(sorted(self.triggers)))
        return selected.where(and_(*conditions)) if conditions else selected


def _has_tag(tag: str) -> Any:
    """The stored ",a,b," holds ",tag," exactly. Not LIKE: "_" and "%" in a tag would be
    wildcards (pci_dss finding pci-dss), and SQLite's LIKE ignores case where PostgreSQL's does
    not; replace() compares bytes on SQLite, PostgreSQL and MySQL alike."""
    return func.replace(Result.tags, tags_column([tag]), "") != Result.tags


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None else None


def results(store: HistoryStore, where: ResultFilter, limit: int | None = 50) -> list[Result]:
    """Full rows (drill, phases, checks loaded), newest first."""
    query = where.apply(select(Result)).options(
        selectinload(Result.phases), selectinload(Result.checks), selectinload(Result.drill)
    )
    query = query.order_by(Result.started_at.desc(), Result.id.desc())
    if limit:
        query = query.limit(limit)
    with store.reading() as session:
        return list(session.scalars(query))


def scenario_names(store: HistoryStore, where: ResultFilter = ResultFilter()) -> list[str]:
    with store.reading() as session:
        return sorted(session.scalars(where.apply(select(Result.scenario).distinct())))


def client_names(store: HistoryStore) -> list[str]:
    with store.reading() as session:
        return sorted(c for c in session.scalars(select(Result.client).distinct()) if c)


@dataclass
class Latest:
    """A scenario's newest verdict and its newest pass, as the status view needs them."""

    scenario: str
    last: Result | None = None
    last_pass: Result | None = None


@dataclass(frozen=True)
class RtoPoint:
    """One measured RTO, for trends and charts."""

    started_at: datetime
    status: str
    rto_seconds: float | None
    rto_target_seconds: float | None
    projected_rto_seconds: float | None


def latest(store: HistoryStore, where: ResultFilter = ResultFilter()) -> dict[str, Latest]:
    """Per scenario: the newest finished result and the newest pass (two grouped queries)."""
    found: dict[str, Latest] = {}
    with store.reading() as session:
        for status_filter, attribute in ((FINISHED, "last"), ((PASS,), "last_pass")):
            newest = (
                where.apply(select(Result.scenario, func.max(Result.started_at).label("at")))
                .where(Result.status.in_(status_filter))
                .group_by(Result.scenario)
                .subquery()
            )
            query = (
                select(Result)
                .join(
                    newest,
                    and_(Result.scenario == newest.c.scenario, Result.started_at == newest.c.at),
                )
                .where(Result.status.in_(status_filter))
                .options(selectinload(Result.drill))
                .order_by(Result.id)
            )
            for row in session.scalars(query):  # a tie at the same second: the later row wins
                setattr(found.setdefault(row.scenario, Latest(row.scenario)), attribute, row)
    return found


def rto_points(
    store: HistoryStore, where: ResultFilter, scenarios: Iterable[str] | None = None
) -> dict[str, list[RtoPoint]]:
    """The measured RTOs of finished results, oldest first, per scenario."""
    query = where.apply(
        select(
            Result.scenario,
            Result.started_at,
            Result.status,
            Result.rto_seconds,
            Result.rto_target_seconds,
            Result.projected_rto_seconds,
        )
    ).where(Result.status.in_(FINISHED))
    if scenarios is not None:
        query = query.where(Result.scenario.in_(sorted(scenarios)))
    points: dict[str, list[RtoPoint]] = {}
    with store.reading() as session:
        for name, started, status, rto, target, projected in session.execute(
            query.order_by(Result.started_at)
        ):
            point = RtoPoint(_aware(started) or started, status, rto, target, projected)
            points.setdefault(name, []).append(point)
    return points


def phase_totals(store: HistoryStore, where: ResultFilter) -> dict[str, dict[str, float]]:
    """Per scenario, the mean seconds of each phase over the passes in the filter."""
    query = where.apply(
        select(Result.scenario, Phase.name, func.avg(Phase.seconds)).join(
            Phase, Phase.result_id == Result.id
        )
    ).where(Result.status == PASS)
    query = query.group_by(Result.scenario, Phase.name)
    means: dict[str, dict[str, float]] = {}
    with store.reading() as session:
        for name, phase, seconds in session.execute(query):
            means.setdefault(name, {})[phase] = float(seconds)
    return means


@dataclass(frozen=True)
class RpoFigures:
    """A scenario's RPO over the finished results in the filter."""

    results: int
    missed: int  # results whose RPO verdict was failed
    worst_seconds: float | None
    target_seconds: float | None  # the largest target in the filter (if it changed)


def rpo_figures(store: HistoryStore, where: ResultFilter) -> dict[str, RpoFigures]:
    """Per scenario: how many results, how many missed the RPO, the worst (oldest) restore point."""
    missed = func.sum(case((Result.rpo_status == FAILED, 1), else_=0))
    query = where.apply(
        select(
            Result.scenario,
            func.count(Result.id),
            missed,
            func.max(Result.rpo_seconds),
            func.max(Result.rpo_target_seconds),
        )
    ).where(Result.status.in_(FINISHED))
    with store.reading() as session:
        rows = session.execute(query.group_by(Result.scenario))
        return {
            name: RpoFigures(count, int(failed or 0), worst, target)
            for name, count, failed, worst, target in rows
        }


def newest_passes(store: HistoryStore, scenarios: Collection[str]) -> dict[str, Result]:
    """Each scenario's newest pass with its checks, phases and drill (a full record's worth)."""
    newest = (
        select(Result.scenario, func.max(Result.started_at).label("at"))
        .where(Result.status == PASS, Result.scenario.in_(sorted(scenarios)))
        .group_by(Result.scenario)
        .subquery()
    )
    query = (
        select(Result)
        .join(newest, and_(Result.scenario == newest.c.scenario, Result.started_at == newest.c.at))
        .where(Result.status == PASS)
        .options(
            selectinload(Result.checks), selectinload(Result.phases), selectinload(Result.drill)
        )
        .order_by(Result.id)  # a tie at the same second: the later row wins
    )
    with store.reading() as session:
        return {row.scenario: row for row in session.scalars(query)}

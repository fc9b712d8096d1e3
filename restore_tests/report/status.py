"""The manager's status: one row per scenario, what is proven, what is failing, overdue or never
tested, and the RTO against its target with its trend against the previous quarter.

The scenario folder says what must be proven (a scenario in it with no history is NEVER TESTED);
the history says what was. Without a folder, the history's own scenarios are shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from statistics import fmean
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from restore_tests.errors import EXIT_FAILED, EXIT_OK, UsageError
from restore_tests.history.store import HistoryStore, tags_of
from restore_tests.history.views import (
    Latest,
    ResultFilter,
    RtoPoint,
    client_names,
    latest,
    rto_points,
    scenario_names,
)
from restore_tests.report.records import SCHEMA_VERSION
from restore_tests.report.table import zone_name
from restore_tests.results import PASS, name_list, one_line
from restore_tests.timing import DEFAULT_EVERY_SECONDS, format_duration

if TYPE_CHECKING:  # the scenario models import every runner: not needed to read the history
    from restore_tests.scenario import ScenarioBase

OK, FAILING, OVERDUE, NEVER_TESTED = "ok", "failing", "overdue", "never tested"
TREND_WINDOW = timedelta(days=400)  # enough history for this quarter and the one before


@dataclass(frozen=True)
class Trend:
    """The latest measured RTO against the mean of the previous calendar quarter's passes."""

    previous_quarter: str  # "2026-Q2"
    previous_mean_seconds: float
    change: float  # +0.12: 12% slower than the previous quarter

    def describe(self) -> str:
        return f"{self.change:+.0%} vs {self.previous_quarter}"


@dataclass
class ScenarioStatus:
    scenario: str
    kind: str = ""
    client: str = ""
    owner: str = ""
    tags: list[str] = field(default_factory=list)
    description: str = ""
    every_seconds: float = DEFAULT_EVERY_SECONDS
    in_folder: bool = True
    last_status: str | None = None
    last_at: datetime | None = None
    last_reason: str = ""
    last_pass_at: datetime | None = None
    rto_seconds: float | None = None
    rto_target_seconds: float | None = None
    projected_rto_seconds: float | None = None
    rpo_seconds: float | None = None
    rpo_target_seconds: float | None = None
    rpo_basis: str = ""
    trend: Trend | None = None
    changed_since_pass: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.problems[0] if self.problems else OK

    def proof_age_seconds(self, now: datetime) -> float | None:
        return (now - self.last_pass_at).total_seconds() if self.last_pass_at else None

    @property
    def due_at(self) -> datetime | None:
        if self.last_pass_at is None:
            return None
        return self.last_pass_at + timedelta(seconds=self.every_seconds)


@dataclass
class StatusReport:
    rows: list[ScenarioStatus]
    generated_at: datetime
    history: str
    folder: str | None = None
    retired: list[str] = field(default_factory=list)  # in the history, not in the folder

    def count(self, state: str) -> int:
        return sum(1 for row in self.rows if state in row.problems or row.state == state)

    @property
    def exit_code(self) -> int:
        """Non-zero when anything is failing, overdue or never tested (for monitoring)."""
        return EXIT_FAILED if any(row.problems for row in self.rows) else EXIT_OK

    def summary(self) -> str:
        parts = [f"{len(self.rows)} scenarios: {self.count(OK)} ok"]
        parts += [f"{self.count(state)} {state}" for state in (FAILING, OVERDUE, NEVER_TESTED)]
        return ", ".join(parts)


def build_status(
    store: HistoryStore,
    scenarios: Sequence[ScenarioBase] | None,
    clients: Sequence[str] = (),
    tags: Sequence[str] = (),
    now: datetime | None = None,
) -> StatusReport:
    """Status rows for the folder's scenarios (or, without one, the history's), filtered."""
    now = now or datetime.now(UTC)
    if scenarios is not None:
        chosen = [s for s in scenarios if _wanted(s.client, s.tags, clients, tags)]
        where = ResultFilter(scenarios=[s.name for s in chosen])
    else:
        chosen, where = [], ResultFilter(clients=clients, tags=tags)
    found = latest(store, where) if scenarios is None or chosen else {}
    if scenarios is None:
        rows = [_from_history(entry) for entry in found.values()]
    else:
        rows = [_from_scenario(scenario, found.get(scenario.name)) for scenario in chosen]
    if not rows and (clients or tags):
        raise UsageError(_nothing_matches(store, scenarios, clients, tags))
    points = rto_points(
        store, ResultFilter(scenarios=[r.scenario for r in rows], since=now - TREND_WINDOW)
    )
    for row in rows:
        row.trend = trend(points.get(row.scenario, []))
        row.problems = _problems(row, now)
    rows.sort(key=lambda row: (row.client, row.scenario))
    return StatusReport(
        rows, now, store.display_url, retired=_retired(store, scenarios, clients, tags)
    )


def _wanted(
    client: str, scenario_tags: Sequence[str], clients: Sequence[str], tags: Sequence[str]
) -> bool:
    return (not clients or client in clients) and (not tags or bool(set(tags) & set(scenario_tags)))


def _nothing_matches(
    store: HistoryStore,
    scenarios: Sequence[ScenarioBase] | None,
    clients: Sequence[str],
    tags: Sequence[str],
) -> str:
    known = sorted({s.client for s in scenarios if s.client}) if scenarios else client_names(store)
    asked = ", ".join([f"client {c!r}" for c in clients] + [f"tag {t!r}" for t in tags])
    where = "in the scenario folder" if scenarios is not None else "in the history"
    return f"no scenario {where} has {asked} (clients: {', '.join(known) or 'none set'})"


def _from_scenario(scenario: ScenarioBase, entry: Latest | None) -> ScenarioStatus:
    row = ScenarioStatus(
        scenario.name,
        kind=scenario.kind,
        client=scenario.client,
        owner=scenario.owner,
        tags=list(scenario.tags),
        description=scenario.description,
        every_seconds=scenario.every,
    )
    if entry is not None:
        _fill(row, entry, scenario.origin.content_sha256)
    return row


def _from_history(entry: Latest) -> ScenarioStatus:
    newest = entry.last or entry.last_pass
    assert newest is not None
    row = ScenarioStatus(
        entry.scenario,
        kind=newest.kind,
        client=newest.client,
        owner=newest.owner,
        tags=tags_of(newest.tags),
        every_seconds=newest.every_seconds or DEFAULT_EVERY_SECONDS,
        in_folder=False,
    )
    _fill(row, entry, newest.scenario_sha256)
    return row


def _fill(row: ScenarioStatus, entry: Latest, current_sha256: str) -> None:
    last, last_pass = entry.last, entry.last_pass
    if last is not None:
        row.last_status, row.last_at, row.last_reason = (
            last.status,
            _aware(last.started_at),
            last.reason,
        )
        row.rpo_seconds, row.rpo_target_seconds = last.rpo_seconds, last.rpo_target_seconds
        row.rpo_basis = last.rpo_basis
    measured = last if last is not None and last.rto_seconds is not None else last_pass
    if measured is not None:
        row.rto_seconds, row.rto_target_seconds = measured.rto_seconds, measured.rto_target_seconds
        row.projected_rto_seconds = measured.projected_rto_seconds
    if last_pass is not None:
        row.last_pass_at = _aware(last_pass.started_at)
        row.changed_since_pass = last_pass.scenario_sha256 != current_sha256


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _problems(row: ScenarioStatus, now: datetime) -> list[str]:
    if row.last_status is None:
        return [NEVER_TESTED]
    problems = [FAILING] if row.last_status != PASS else []
    due = row.due_at
    if due is None or due < now:
        problems.append(OVERDUE)
    return problems


def quarter_of(moment: datetime) -> tuple[int, int]:
    return moment.year, (moment.month - 1) // 3 + 1


def trend(points: Sequence[RtoPoint]) -> Trend | None:
    """The newest measured RTO against the mean of the passes of the quarter before its own."""
    measured = [p for p in points if p.rto_seconds is not None]
    if not measured:
        return None
    newest = measured[-1]
    year, quarter = quarter_of(newest.started_at)
    previous = (year, quarter - 1) if quarter > 1 else (year - 1, 4)
    before = [
        p.rto_seconds
        for p in measured
        if p.status == PASS and p.rto_seconds is not None and quarter_of(p.started_at) == previous
    ]
    if not before:
        return None
    mean = fmean(before)
    assert newest.rto_seconds is not None
    change = newest.rto_seconds / mean - 1 if mean > 0 else 0.0
    return Trend(f"{previous[0]}-Q{previous[1]}", mean, change)


def _retired(
    store: HistoryStore,
    scenarios: Sequence[ScenarioBase] | None,
    clients: Sequence[str],
    tags: Sequence[str],
) -> list[str]:
    """Scenarios the history has (with the filters) that the folder no longer has: renamed or
    removed. Their history stays under their old name."""
    if scenarios is None:
        return []
    names = {s.name for s in scenarios}
    recorded = scenario_names(store, ResultFilter(clients=clients, tags=tags))
    return [name for name in recorded if name not in names]


def local_text(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment else "-"


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    days = seconds / 86400
    if days >= 2:
        return f"{days:.0f}d ago"
    return f"{format_duration(seconds)} ago"


def status_table(report: StatusReport) -> str:
    """The status as a terminal table, with a summary and the scenarios no longer in the folder."""
    if not report.rows:
        return "no scenarios: none in the folder and none in the history"
    rows = [_table_row(row, report.generated_at) for row in report.rows]
    headers = (
        "scenario",
        "client",
        "state",
        f"last verdict ({zone_name()})",
        "last pass",
        "RTO / target (trend)",
        "RPO / target",
        "note",
    )
    lines = [tabulate(rows, headers=headers, tablefmt="simple"), "", report.summary()]
    if report.retired:
        retired = name_list(report.retired, limit=10)
        lines.append(f"in the history but not in the folder (renamed or removed): {retired}")
    return "\n".join(lines)


def _table_row(row: ScenarioStatus, now: datetime) -> tuple[str, ...]:
    verdict = f"{row.last_status.upper()} {local_text(row.last_at)}" if row.last_status else "-"
    rto = _versus(row.rto_seconds, row.rto_target_seconds)
    if row.trend:
        rto += f" ({row.trend.describe()})"
    return (
        row.scenario,
        row.client or "-",
        ", ".join(problem.upper() for problem in row.problems) or "OK",
        verdict,
        age_text(row.proof_age_seconds(now)),
        rto,
        _versus(row.rpo_seconds, row.rpo_target_seconds),
        note(row, now),
    )


def _versus(measured: float | None, target: float | None) -> str:
    text = format_duration(measured)
    return f"{text} / {format_duration(target)}" if target is not None else text


def note(row: ScenarioStatus, now: datetime) -> str:
    """What a manager should know about the row, in a few words."""
    notes = []
    if row.changed_since_pass:
        notes.append("scenario changed since its last pass")
    if row.last_status not in (None, PASS):
        notes.append(one_line(row.last_reason, 70))
    due = row.due_at
    if due is not None:
        left = (due - now).total_seconds()
        word = (
            f"overdue by {format_duration(-left)}"
            if left < 0
            else f"due in {format_duration(left)}"
        )
        notes.append(f"{word} (every {format_duration(row.every_seconds)})")
    elif row.last_status is None:
        notes.append(f"no run in the history (every {format_duration(row.every_seconds)})")
    return "; ".join(notes)


def status_document(report: StatusReport) -> dict[str, Any]:
    """The status as JSON (schema_version 1): one object per scenario, times in ISO UTC."""
    now = report.generated_at
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": now.isoformat(),
        "history": report.history,
        "summary": report.summary(),
        "exit_code": report.exit_code,
        "scenarios": [_row_document(row, now) for row in report.rows],
        "retired": report.retired,
    }


def _row_document(row: ScenarioStatus, now: datetime) -> dict[str, Any]:
    return {
        "scenario": row.scenario,
        "kind": row.kind,
        "client": row.client,
        "owner": row.owner,
        "tags": row.tags,
        "state": row.state,
        "problems": row.problems,
        "in_folder": row.in_folder,
        "last_status": row.last_status,
        "last_at": _iso(row.last_at),
        "last_reason": row.last_reason,
        "last_pass_at": _iso(row.last_pass_at),
        "proof_age_seconds": row.proof_age_seconds(now),
        "every_seconds": row.every_seconds,
        "due_at": _iso(row.due_at),
        "rto_seconds": row.rto_seconds,
        "rto_target_seconds": row.rto_target_seconds,
        "projected_rto_seconds": row.projected_rto_seconds,
        "rto_trend": None
        if row.trend is None
        else {
            "previous_quarter": row.trend.previous_quarter,
            "previous_mean_seconds": row.trend.previous_mean_seconds,
            "change": row.trend.change,
        },
        "rpo_seconds": row.rpo_seconds,
        "rpo_target_seconds": row.rpo_target_seconds,
        "rpo_basis": row.rpo_basis,
        "changed_since_pass": row.changed_since_pass,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None

"""The report a manager hands to a client or an auditor: everything it shows, collected once.

The renderers (html, markdown, json_report, junit) only format a ReportDocument. The coverage
rows come from the status (build_status), so the report and `status` never disagree; the
period (--since/--until) bounds the charts, the phase times, the failures and the RPO figures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import import_module
from pathlib import Path
from statistics import median

from restore_tests import __version__
from restore_tests.errors import UsageError
from restore_tests.history import views
from restore_tests.history.models import ABANDONED, CheckRow
from restore_tests.history.store import HistoryStore
from restore_tests.report import records
from restore_tests.report.proof import proven
from restore_tests.report.status import (
    NEVER_TESTED,
    OVERDUE,
    ScenarioStatus,
    StatusReport,
    build_status,
)
from restore_tests.results import CHECK_PASSED, ERROR, FAIL, PASS
from restore_tests.scenario import ScenarioBase
from restore_tests.timing import format_duration

# The formats and their renderers, each imported only when used (the HTML one loads pygal).
RENDERERS = {
    "html": ("restore_tests.report.html", "render_html"),
    "md": ("restore_tests.report.markdown", "render_markdown"),
    "json": ("restore_tests.report.json_report", "render_json"),
    "junit": ("restore_tests.report.junit", "render_junit"),
}
SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".json": "json", ".xml": "junit"}
PROBLEM_STATUSES = (FAIL, ERROR, ABANDONED)
FAILURE_LIMIT = 200  # the newest failures listed; more are counted, not listed
# The pipeline's phases in the order they run; an unknown name is shown after them.
PHASE_ORDER = (
    "preflight",
    "select",
    "space",
    "sandbox",
    "fetch",
    "load",
    "verify",
    "boot",
    "teardown",
)


@dataclass(frozen=True)
class Failure:
    """A result of the period that did not pass, with why."""

    scenario: str
    started_at: datetime
    status: str
    reason: str
    run_id: str
    failed_checks: list[str]  # "name: reason" of each check that failed or erred


@dataclass(frozen=True)
class RtoSummary:
    """A scenario's measured RTOs in the period."""

    results: int  # finished results with a measured RTO
    passes: int
    best_seconds: float
    median_seconds: float
    worst_seconds: float
    target_seconds: float | None  # the newest result's target
    projected_seconds: float | None  # the newest projection of a full restore, if any
    over_target: int  # results whose measured RTO exceeded their target


def rto_summary(points: Sequence[views.RtoPoint]) -> RtoSummary | None:
    """Best, median and worst measured RTO of the points; None when none was measured."""
    measured = [p for p in points if p.rto_seconds is not None]
    if not measured:
        return None
    seconds = [p.rto_seconds or 0.0 for p in measured]
    projections = [p.projected_rto_seconds for p in measured if p.projected_rto_seconds]
    over = [
        p for p in measured if p.rto_target_seconds and (p.rto_seconds or 0) > p.rto_target_seconds
    ]
    return RtoSummary(
        results=len(measured),
        passes=sum(1 for p in measured if p.status == PASS),
        best_seconds=min(seconds),
        median_seconds=median(seconds),
        worst_seconds=max(seconds),
        target_seconds=measured[-1].rto_target_seconds,
        projected_seconds=projections[-1] if projections else None,
        over_target=len(over),
    )


@dataclass
class ReportDocument:
    """What the report shows; every renderer formats this and nothing else."""

    status: StatusReport
    since: datetime
    until: datetime | None
    clients: Sequence[str] = ()
    tags: Sequence[str] = ()
    folder: str | None = None
    rto_points: dict[str, list[views.RtoPoint]] = field(default_factory=dict)
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    more_failures: bool = False  # more than FAILURE_LIMIT in the period
    rpo: dict[str, views.RpoFigures] = field(default_factory=dict)
    proofs: dict[str, str] = field(default_factory=dict)  # what each newest pass proved
    tool_version: str = __version__

    @property
    def generated_at(self) -> datetime:
        return self.status.generated_at

    @property
    def rows(self) -> list[ScenarioStatus]:
        return self.status.rows

    @property
    def period_end(self) -> datetime:
        return self.until or self.generated_at

    def rto(self, scenario: str) -> RtoSummary | None:
        return rto_summary(self.rto_points.get(scenario, []))

    def attention(self) -> list[ScenarioStatus]:
        """Never tested or overdue: where the proof is missing or too old."""
        return [row for row in self.rows if {NEVER_TESTED, OVERDUE} & set(row.problems)]

    def phase_names(self) -> list[str]:
        """The phases recorded in the period, in the pipeline's order."""
        seen = {name for means in self.phases.values() for name in means}
        known = [name for name in PHASE_ORDER if name in seen]
        return known + sorted(seen - set(PHASE_ORDER))


def build_document(
    store: HistoryStore,
    scenarios: Sequence[ScenarioBase] | None,
    since: datetime,
    until: datetime | None = None,
    clients: Sequence[str] = (),
    tags: Sequence[str] = (),
    now: datetime | None = None,
) -> ReportDocument:
    """The report over [since, until) for the folder's scenarios (or the history's)."""
    if until is not None and until <= since:
        raise UsageError(
            f"--until must come after --since ({until:%Y-%m-%d %H:%M} UTC is not after "
            f"{since:%Y-%m-%d %H:%M} UTC)"
        )
    status = build_status(store, scenarios, clients, tags, now or datetime.now(UTC))
    document = ReportDocument(status, since, until, tuple(clients), tuple(tags))
    names = [row.scenario for row in status.rows]
    if names:  # an empty scenario list in a filter means "any": nothing to read instead
        where = views.ResultFilter(scenarios=names, since=since, until=until)
        document.rto_points = views.rto_points(store, where)
        document.phases = views.phase_totals(store, where)
        document.rpo = views.rpo_figures(store, where)
        document.failures, document.more_failures = _failures(store, where)
        passes = views.newest_passes(store, names)
        document.proofs = {name: proven(records.from_row(row)) for name, row in passes.items()}
    if scenarios:
        document.folder = _common_folder(scenarios)
    return document


def render(document: ReportDocument, output_format: str) -> str:
    """The document in one of RENDERERS' formats."""
    module, function = RENDERERS[output_format]
    renderer: Callable[[ReportDocument], str] = getattr(import_module(module), function)
    return renderer(document)


def format_for(output: Path | None) -> str:
    """The format a file name asks for (report.md: md), html when it says nothing."""
    return SUFFIXES.get(output.suffix.lower(), "html") if output else "html"


def _failures(store: HistoryStore, where: views.ResultFilter) -> tuple[list[Failure], bool]:
    problems = views.ResultFilter(
        scenarios=where.scenarios, since=where.since, until=where.until, statuses=PROBLEM_STATUSES
    )
    rows = views.results(store, problems, limit=FAILURE_LIMIT + 1)
    failures = [
        Failure(
            row.scenario,
            row.started_at.replace(tzinfo=UTC),
            row.status,
            row.reason,
            row.drill.run_id,
            [
                _check_line(check, row.reason)
                for check in row.checks
                if check.status != CHECK_PASSED
            ],
        )
        for row in rows[:FAILURE_LIMIT]
    ]
    return failures, len(rows) > FAILURE_LIMIT


def _check_line(check: CheckRow, reason: str) -> str:
    """'name: reason', or the name alone when the result's reason already says it."""
    return check.name if check.reason in reason else f"{check.name}: {check.reason}"


def _common_folder(scenarios: Sequence[ScenarioBase]) -> str:
    folders = sorted({str(scenario.origin.folder) for scenario in scenarios})
    return folders[0] if len(folders) == 1 else ", ".join(folders)


# -- shared wording of the renderers ------------------------------------------------------------


def versus(measured: float | None, target: float | None) -> str:
    """'41s / 15m', '41s' without a target, '-' when nothing was measured."""
    text = format_duration(measured)
    return f"{text} / {format_duration(target)}" if target is not None else text


def rto_text(row: ScenarioStatus) -> str:
    """The RTO against its target, the projection and the trend: '41s / 15m, +5% vs 2026-Q2'."""
    parts = [versus(row.rto_seconds, row.rto_target_seconds)]
    if row.projected_rto_seconds is not None:
        parts.append(f"projected full {format_duration(row.projected_rto_seconds)}")
    if row.trend is not None:
        parts.append(row.trend.describe())
    return ", ".join(parts)


def local_time(moment: datetime | None, zone: bool = False) -> str:
    """A moment on this machine's clock: '2026-07-01 09:26', with zone '... CEST (UTC+02:00)'."""
    if moment is None:
        return "-"
    local = moment.astimezone()
    if not zone:
        return f"{local:%Y-%m-%d %H:%M}"
    offset = local.strftime("%z")
    named = f"{local:%Y-%m-%d %H:%M} {local:%Z}"
    return named if local.utcoffset() == timedelta(0) else f"{named} (UTC{offset[:3]}:{offset[3:]})"


def age(row: ScenarioStatus, now: datetime) -> str:
    """How old the last proof is: '12d ago', 'never'."""
    seconds = row.proof_age_seconds(now)
    return "never" if seconds is None else f"{format_duration(seconds)} ago"


def verdict(row: ScenarioStatus) -> str:
    """The last verdict in words: 'PASS', 'FAIL: 3 files differ ...', 'never run'."""
    if row.last_status is None:
        return "never run"
    head = row.last_status.upper()
    return f"{head}: {row.last_reason}" if row.last_reason else head

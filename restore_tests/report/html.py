"""The report as one self-contained HTML page: inline CSS, charts as inline SVG, no script,
nothing fetched at view time, a print stylesheet for PDF. The template is autoescaped: reasons
come from restored data and are shown as text, never as markup."""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from restore_tests.report import document as wording
from restore_tests.report.document import ReportDocument
from restore_tests.report.status import FAILING, NEVER_TESTED, OK, OVERDUE
from restore_tests.timing import RTO_PHASES, format_duration

TEMPLATE = "report.html.j2"
PARALLEL_FROM = 24  # charts: below this, starting processes costs more than it saves
MAX_CHART_WORKERS = 4


def environment() -> Environment:
    """The template environment: package templates, autoescape on, undefined names fail."""
    env = Environment(
        loader=PackageLoader("restore_tests.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        duration=format_duration,
        when=wording.local_time,
        when_zone=lambda moment: wording.local_time(moment, zone=True),
        day=lambda moment: f"{moment.astimezone():%Y-%m-%d}",
        versus=wording.versus,
        verdict=wording.verdict,
        age=wording.age,
    )
    return env


def render_html(document: ReportDocument) -> str:
    """The page, as one string."""
    return environment().get_template(TEMPLATE).render(**_context(document))


def _context(document: ReportDocument) -> dict[str, Any]:
    rto_charts = _rto_charts(document)
    phase_rows = [(row.scenario, document.phases.get(row.scenario, {})) for row in document.rows]
    phase_rows = [(name, means) for name, means in phase_rows if means]
    points = [point for points in document.rto_points.values() for point in points]
    return {
        "doc": document,
        "states": (OK, FAILING, OVERDUE, NEVER_TESTED),
        "rto_charts": rto_charts,
        "unmeasured": [row.scenario for row in document.rows if row.scenario not in rto_charts],
        "any_projection": any(point.projected_rto_seconds for point in points),
        "phase_rows": phase_rows,
        "phase_svg": _phase_svg(document, phase_rows),
        "rto_phases": list(RTO_PHASES),
        "zone": document.generated_at.astimezone().strftime("%Z"),
    }


def _rto_charts(document: ReportDocument) -> dict[str, tuple[Markup, str]]:
    """One chart per scenario with a measured RTO in the period (ids unique on the page), and
    the note saying how its points were thinned, if they were."""
    jobs = []
    for index, row in enumerate(document.rows):
        points = document.rto_points.get(row.scenario, [])
        if any(point.rto_seconds is not None for point in points):
            chart_id = f"rto{index}"
            jobs.append((row.scenario, (points, document.since, document.period_end, chart_id)))
    drawn = _draw_all([arguments for _name, arguments in jobs])
    return {
        name: (Markup(chart.svg), chart.note)
        for (name, _arguments), chart in zip(jobs, drawn, strict=True)
    }


def _draw_all(jobs: list[tuple[Any, ...]]) -> list[Any]:
    """rto_chart for each job, in order; many charts are drawn by a pool of processes (one per
    core, at most 4): pygal takes ~10 ms a chart, a second for 100 scenarios on one core."""
    from restore_tests.report import charts  # pygal: only when a page is drawn

    workers = min(len(os.sched_getaffinity(0)), MAX_CHART_WORKERS)
    if len(jobs) < PARALLEL_FROM or workers < 2:
        return [charts.rto_chart(*job) for job in jobs]
    # fork: the workers start with pygal and the report's modules already imported.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        return list(pool.map(_draw_rto, jobs, chunksize=math.ceil(len(jobs) / workers)))


def _draw_rto(job: tuple[Any, ...]) -> Any:
    from restore_tests.report import charts

    return charts.rto_chart(*job)


def _phase_svg(document: ReportDocument, phase_rows: list[tuple[str, dict[str, float]]]) -> Markup:
    if not phase_rows:
        return Markup("")
    from restore_tests.report import charts

    names = [name for name, _means in phase_rows]
    return Markup(charts.phase_chart(names, document.phase_names(), dict(phase_rows), "phases"))

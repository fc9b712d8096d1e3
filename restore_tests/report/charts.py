"""The report's charts as inline SVG (pygal): RTO trends and where the time goes.

pygal writes SVG elements directly (text stays text), about ten times faster per chart than
matplotlib, which the report drew with before (100 charts: 1-2 s instead of 15-30 s).
Each chart's <style> is scoped by its own id (pygal prefixes every selector with it) and ids are
unique on the page; pygal's script (the configuration of its JavaScript, unused: js=[]), its
comments and its tooltip descriptions are removed, so a chart is markup and a scoped style only.
Text goes through ElementTree: a name in a chart is escaped, never markup. Imported only by the
HTML renderer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pygal
from pygal.style import Style

from restore_tests.history.views import RtoPoint
from restore_tests.results import PASS

MAX_POINTS = 120  # per RTO chart: above it, passes are drawn as means of consecutive results
DOTTED_POINTS = 40  # a line with more points is drawn without a dot on each
MEASURED, PROJECTED, TARGET, MISSED = "#2563eb", "#9333ea", "#dc2626", "#b91c1c"
# preflight, select, space (not in the RTO) in greys; sandbox, fetch, load, verify, boot in
# colours; teardown grey again (PHASE_ORDER in document.py)
PHASE_COLOURS = {
    "preflight": "#cbd5e1",
    "select": "#94a3b8",
    "space": "#e2e8f0",
    "sandbox": "#f59e0b",
    "fetch": "#2563eb",
    "load": "#10b981",
    "verify": "#8b5cf6",
    "boot": "#ec4899",
    "teardown": "#64748b",
}
OTHER_COLOUR = "#0ea5e9"
UNITS = ((3600.0, "hours"), (60.0, "minutes"), (1.0, "seconds"))
FONT = "inherit"  # the page's font: charts read like the text around them
FONT_SIZES = {
    f"{part}_font_size": size
    for part, size in (("label", 10), ("major_label", 10), ("legend", 10.5), ("title", 11))
}
# The chart's own CSS instead of pygal's (5 KB a chart of hover effects, tooltips and maps):
# base.css (fonts) is always added by pygal; {id} is the chart's id selector, colours follow.
CSS = (
    "{id}.background{{fill:none}}{id}.graph{{fill:#374151}}{id}text{{stroke:none}}"
    "{id}.nofill{{fill:none}}{id}.line{{stroke-width:1.4}}{id}.dot{{stroke-width:1}}"
    "{id}.axis .line{{stroke:#9ca3af;stroke-width:1}}"
    "{id}.axis .guide.line{{stroke:#e5e7eb;stroke-width:1}}"
    "{id}.axis.x .guide.line{{stroke:#f3f4f6}}"
    "{id}.legend rect{{stroke:none}}{id}.axis.y text{{text-anchor:end}}"
    "{id}.axis.x text,{id}.title{{text-anchor:middle}}"
)
COLOUR_CSS = "{id}.color-{index}{{stroke:{colour};fill:{colour}}}"
# Removed from pygal's SVG: comments (one with the date), the <title> "Pygal" and the ids its
# JavaScript reads (the same in every chart).
STRIPPED = re.compile(r'<!--.*?-->|<title>Pygal</title>| id="activate-serie-\d+"', re.S)
PRECISION = re.compile(r"(\.\d\d)\d{2,}")  # coordinates to 1/100 px: a third of the size


class Quiet:
    """A pygal chart that writes nothing for its JavaScript: neither the <desc> tooltips of each
    point nor the <script> of its configuration (a third of the time of a small chart)."""

    svg: Any

    def __getattribute__(self, name: str) -> Any:
        """pygal's own lookup (BaseGraph.__getattribute__: the render state's value, else the
        chart's), without its nested lookups: a third of the time of a small chart went there.
        """
        if name != "state" and not name.startswith("__"):
            try:
                values = object.__getattribute__(self, "state").__dict__
            except AttributeError:  # no state yet (during __init__), or None outside render
                values = None
            if values is not None and name in values:
                return values[name]
        return object.__getattribute__(self, name)

    def _tooltip_data(self, *args: Any, **kwargs: Any) -> None:
        pass

    def _draw(self) -> None:
        self.svg.add_scripts = lambda: None  # called by pre_render, after drawing
        super()._draw()  # type: ignore[misc]


class Line(Quiet, pygal.XY):
    pass


class Bars(Quiet, pygal.HorizontalStackedBar):
    pass


@dataclass(frozen=True)
class Serie:
    """A line or a set of dots of a chart: pygal's options, its colour and its dashes."""

    name: str
    colour: str
    values: Sequence[Any]
    options: dict[str, Any] = field(default_factory=dict)
    dashes: str = ""


@dataclass(frozen=True)
class RtoChart:
    """A scenario's RTO chart and, when its points were thinned, a note saying how."""

    svg: str
    note: str


def unit_for(seconds: float) -> tuple[float, str]:
    """The unit the largest value reads best in."""
    return next((size, name) for size, name in UNITS if seconds >= 2 * size or size == 1.0)


def rto_chart(
    points: Sequence[RtoPoint], start: datetime, end: datetime, chart_id: str
) -> RtoChart:
    """The measured RTO of each result against its target (and the projection, where made)."""
    measured = [p for p in points if p.rto_seconds is not None]
    values = [p.rto_seconds or 0.0 for p in measured] + [
        value for p in points for value in (p.rto_target_seconds, p.projected_rto_seconds) if value
    ]
    size, unit = unit_for(max(values, default=1.0))
    misses = _pairs([p for p in measured if p.status != PASS], "rto_seconds", size)
    passes = _pairs([p for p in measured if p.status == PASS], "rto_seconds", size)
    line, every = bucket_means(passes, max(MAX_POINTS - len(misses), MAX_POINTS // 2))
    projected, _ = bucket_means(_pairs(measured, "projected_rto_seconds", size), MAX_POINTS)
    targets = _pairs(measured, "rto_target_seconds", size)
    # A dot per point while they can be told apart; above, the line alone (a dot is what takes
    # pygal the most time: a 120-point chart draws in half the time without them).
    dots = {"dots_size": 2.2} if len(line) <= DOTTED_POINTS else {"show_dots": False}
    series = [  # the longest name last: pygal's legend gives each name the same width
        Serie("measured", MEASURED, line, dots),
        Serie("target", TARGET, steps(targets), {"show_dots": False}, "6,3"),
        Serie("not a pass", MISSED, misses, {"stroke": False, "dots_size": 3.4}),
        Serie("projected full restore", PROJECTED, projected, dots, "2,2"),
    ]
    series = [serie for serie in series if serie.values]
    ticks, label = date_ticks(start, end)
    chart = Line(
        **_config(chart_id, series),
        width=540,
        height=215,
        xrange=(start.timestamp(), end.timestamp()),
        x_labels=ticks,
        x_value_formatter=label,
        include_x_axis=True,
        y_title=f"RTO ({unit})",
        legend_at_bottom_columns=len(series),
    )
    for serie in series:
        chart.add(serie.name, serie.values, **serie.options)
    chart.uuid = chart_id
    note = "" if every == 1 else _thinning_note(len(passes), every)
    return RtoChart(PRECISION.sub(r"\1", _svg(chart)), note)


def _thinning_note(passes: int, every: int) -> str:
    return (
        f"{passes} passes drawn as the means of {every} consecutive ones (at most {MAX_POINTS} "
        "points a chart); every result that was not a pass is drawn on its own."
    )


def _pairs(points: Sequence[RtoPoint], attribute: str, size: float) -> list[tuple[float, float]]:
    """(POSIX time, value in the chart's unit) for the points that have the value."""
    pairs = [(p.started_at.timestamp(), getattr(p, attribute)) for p in points]
    return [(moment, value / size) for moment, value in pairs if value is not None]


def bucket_means(
    pairs: Sequence[tuple[float, float]], limit: int
) -> tuple[list[tuple[float, float]], int]:
    """At most limit points: the means of runs of consecutive pairs, and the run's length."""
    every = max(1, math.ceil(len(pairs) / limit))
    if every == 1:
        return list(pairs), 1
    runs = [pairs[index : index + every] for index in range(0, len(pairs), every)]
    means = [
        (sum(moment for moment, _ in run) / len(run), sum(value for _, value in run) / len(run))
        for run in runs
    ]
    return means, every


def steps(pairs: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """A step line through the pairs (a target holds until the next one): only its corners."""
    corners: list[tuple[float, float]] = []
    for moment, value in pairs:
        if corners and corners[-1][1] != value:
            corners.append((moment, corners[-1][1]))
        if not corners or corners[-1][1] != value:
            corners.append((moment, value))
    if pairs and len(pairs) > 1:
        corners.append((pairs[-1][0], corners[-1][1]))
    return corners


def date_ticks(start: datetime, end: datetime) -> tuple[list[float], Any]:
    """At most about 7 dates on this machine's clock, on days, months or years as the span asks."""
    first, last = start.astimezone(), end.astimezone()
    days = (last - first).days
    if days <= 120:
        step = next(step for step in (1, 2, 7, 14, 28) if days / step <= 7)
        day = first.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        moments = [day + timedelta(days=step * n) for n in range(days // step + 1)]
        text = "%Y-%m-%d"
    else:
        months = next(m for m in (1, 2, 3, 6, 12, 24, 60) if days / 30.4 / m <= 7)
        index = first.year * 12 + first.month  # the month after start's, 0-based
        index += -index % months
        moments = []
        while len(moments) < 100:
            moment = first.replace(year=index // 12, month=index % 12 + 1, day=1, hour=0, minute=0)
            if moment > last:
                break
            moments.append(moment.replace(second=0, microsecond=0))
            index += months
        text = "%Y" if months >= 12 else "%Y-%m"
    ticks = [moment.timestamp() for moment in moments if first <= moment <= last]
    return ticks, lambda stamp: f"{datetime.fromtimestamp(stamp):{text}}"


def phase_chart(
    names: Sequence[str], phases: Sequence[str], means: dict[str, dict[str, float]], chart_id: str
) -> str:
    """One horizontal bar per scenario, split into the mean seconds of its phases."""
    size, unit = unit_for(max((sum(means.get(n, {}).values()) for n in names), default=1.0))
    bottom_up = list(reversed(names))  # pygal draws the first label at the bottom
    series = [
        Serie(
            phase,
            PHASE_COLOURS.get(phase, OTHER_COLOUR),
            [means.get(name, {}).get(phase, 0.0) / size for name in bottom_up],
        )
        for phase in phases
    ]
    chart = Bars(
        **_config(chart_id, series),
        width=960,
        height=80 + 22 * len(names),
        x_labels=bottom_up,
        x_title=f"mean {unit} per pass",
        legend_at_bottom_columns=min(len(phases), 9),
    )
    for serie in series:
        chart.add(serie.name, serie.values)
    chart.uuid = chart_id
    return _svg(chart)


def _config(chart_id: str, series: Sequence[Serie]) -> dict[str, Any]:
    """What every chart shares: no JavaScript, our CSS, no truncated label, the page's font."""
    selector = f"#chart-{chart_id} "
    css = [CSS.format(id=selector)]
    for index, serie in enumerate(series):
        css.append(COLOUR_CSS.format(id=selector, index=index, colour=serie.colour))
        if serie.dashes:
            css.append(f"{selector}.serie-{index} .line{{stroke-dasharray:{serie.dashes}}}")
    return {
        "style": Style(
            font_family=FONT,
            background="transparent",
            plot_background="transparent",
            colors=tuple(serie.colour for serie in series),
            **FONT_SIZES,
        ),
        "js": [],
        "css": ["inline:" + "".join(css)],
        "disable_xml_declaration": True,
        "truncate_label": -1,
        "truncate_legend": -1,
        "show_x_guides": True,
        "legend_at_bottom": True,
        "legend_box_size": 10,
        "value_formatter": lambda value: f"{round(value, 3):g}",
        "margin_top": 8,
        "margin_bottom": 6,
        "spacing": 8,
        "max_scale": 7,  # y labels: about 6, not every unit up to 30
    }


def _svg(chart: Any) -> str:
    return STRIPPED.sub("", chart.render()).strip()

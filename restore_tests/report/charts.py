"""The report's charts as inline SVG (matplotlib): RTO trends and where the time goes.

Text is drawn as paths (DejaVu Sans, shipped with matplotlib), so a chart looks the same on any
machine, offline, and a name drawn in a chart cannot become markup; mathtext is off, so a `$` in
a name stays a `$`. Figures are made without pyplot, so no GUI backend and no global figure
state is involved: the SVG canvas renders them. Imported only by the HTML renderer: matplotlib
takes a while to load.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ParamSpec

import matplotlib
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

from restore_tests.history.views import RtoPoint
from restore_tests.results import PASS

SERIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("rto_seconds", {"color": "#2563eb", "marker": "o", "markersize": 3, "label": "measured"}),
    (
        "projected_rto_seconds",
        {
            "color": "#9333ea",
            "marker": "s",
            "markersize": 3,
            "linestyle": ":",
            "label": "projected full restore",
        },
    ),
)
TARGET_STYLE: dict[str, Any] = {
    "color": "#dc2626",
    "linestyle": "--",
    "linewidth": 1,
    "label": "target",
}
MISS_STYLE: dict[str, Any] = {
    "color": "#dc2626",
    "marker": "x",
    "s": 22,
    "zorder": 3,
    "label": "not a pass",
}
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
STYLE: dict[Any, Any] = {  # rcParams
    "svg.fonttype": "path",
    "svg.hashsalt": "restore-tests",  # the same ids for the same chart: reproducible output
    "text.parse_math": False,
    "font.size": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
}
UNITS = ((3600.0, "hours"), (60.0, "minutes"), (1.0, "seconds"))
# Stripped so the SVG can sit inside HTML: the XML header, the doctype, comments (matplotlib
# writes each text there), metadata and its global style (the page's stylesheet has the rule).
STRIPPED = re.compile(
    r"<\?xml.*?\?>|<!DOCTYPE.*?>|<!--.*?-->|<metadata>.*?</metadata>|<style.*?</style>", re.S
)
REFERENCES = re.compile(r'(id="|href="#|url\(#)')
Arguments = ParamSpec("Arguments")


def styled(draw: Callable[Arguments, str]) -> Callable[Arguments, str]:
    """Draw with the report's style (rcParams are read as artists are made and saved)."""

    @functools.wraps(draw)
    def drawn(*args: Arguments.args, **kwargs: Arguments.kwargs) -> str:
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return drawn


def unit_for(seconds: float) -> tuple[float, str]:
    """The unit the largest value reads best in."""
    return next((size, name) for size, name in UNITS if seconds >= 2 * size or size == 1.0)


@styled
def rto_chart(points: Sequence[RtoPoint], start: datetime, end: datetime, chart_id: str) -> str:
    """The measured RTO of each result against its target (and the projection, where made)."""
    measured = [p for p in points if p.rto_seconds is not None]
    values = [p.rto_seconds or 0.0 for p in measured] + [
        value for p in points for value in (p.rto_target_seconds, p.projected_rto_seconds) if value
    ]
    size, unit = unit_for(max(values, default=1.0))
    figure = Figure(figsize=(5.4, 2.1))
    # Fixed margins: a laid-out figure (tight, constrained) costs a second drawing per chart.
    figure.subplots_adjust(left=0.1, right=0.98, bottom=0.2, top=0.84)
    axes = figure.subplots()
    _plot_rto(axes, measured, size)
    axes.set_xlim(date2num(start), date2num(end))
    axes.set_ylim(bottom=0)
    axes.set_ylabel(f"RTO ({unit})")
    _date_axis(axes)
    figure.legend(loc="upper left", bbox_to_anchor=(0.09, 1.0), ncols=4, fontsize=8)
    return to_svg(figure, chart_id)


def _plot_rto(axes: Axes, measured: Sequence[RtoPoint], size: float) -> None:
    for attribute, style in SERIES:
        pairs = _pairs(measured, attribute, size)
        if pairs:
            axes.plot(*zip(*pairs, strict=True), **style)
    targets = _pairs(measured, "rto_target_seconds", size)
    if targets:
        axes.step(*zip(*targets, strict=True), where="post", **TARGET_STYLE)
    misses = _pairs([p for p in measured if p.status != PASS], "rto_seconds", size)
    if misses:
        axes.scatter(*zip(*misses, strict=True), **MISS_STYLE)


def _pairs(points: Sequence[RtoPoint], attribute: str, size: float) -> list[tuple[datetime, float]]:
    """(time, value in the chart's unit) for the points that have the value."""
    pairs = [(p.started_at, getattr(p, attribute)) for p in points]
    return [(moment, value / size) for moment, value in pairs if value is not None]


@styled
def phase_chart(
    names: Sequence[str], phases: Sequence[str], means: dict[str, dict[str, float]], chart_id: str
) -> str:
    """One horizontal bar per scenario, split into the mean seconds of its phases."""
    size, unit = unit_for(max((sum(means.get(n, {}).values()) for n in names), default=1.0))
    # Laid out (the names' width is not known in advance): one chart, the cost is paid once.
    figure = Figure(figsize=(9.6, 0.9 + 0.26 * len(names)), layout="constrained")
    axes = figure.subplots()
    left = [0.0] * len(names)
    for phase in phases:
        widths = [means.get(name, {}).get(phase, 0.0) / size for name in names]
        colour = PHASE_COLOURS.get(phase, OTHER_COLOUR)
        axes.barh(range(len(names)), widths, left=left, color=colour, height=0.6, label=phase)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    axes.set_yticks(range(len(names)), list(names))
    axes.invert_yaxis()
    axes.set_xlabel(f"mean {unit} per pass")
    axes.grid(axis="y", visible=False)
    figure.legend(loc="outside upper left", ncols=len(phases), fontsize=8)
    return to_svg(figure, chart_id)


def _date_axis(axes: Axes) -> None:
    """Dates on this machine's clock, as the rest of the report shows them."""
    zone = datetime.now().astimezone().tzinfo
    locator = AutoDateLocator(minticks=3, maxticks=8, tz=zone)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=zone))


def to_svg(figure: Figure, chart_id: str) -> str:
    """The figure as an <svg> element whose ids are prefixed with chart_id (unique on a page)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = STRIPPED.sub("", buffer.getvalue()).strip()
    return REFERENCES.sub(rf"\1{chart_id}-", svg)

"""The report's renderers on documents built by hand: the JUnit mapping of every state, text that
XML cannot carry, Markdown cells that stay text, the JSON's version, and the SVG charts' ids."""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from restore_tests.history.views import RtoPoint
from restore_tests.report.document import ReportDocument, format_for
from restore_tests.report.json_report import render_json
from restore_tests.report.junit import render_junit
from restore_tests.report.markdown import cell
from restore_tests.report.status import (
    FAILING,
    NEVER_TESTED,
    OVERDUE,
    ScenarioStatus,
    StatusReport,
)

NOW = datetime(2026, 9, 30, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def clock_in_utc(monkeypatch: pytest.MonkeyPatch):
    """The renderers show local time: these tests read it as UTC."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def row(name: str, last_status: str | None, *problems: str, reason: str = "") -> ScenarioStatus:
    passed = NOW - timedelta(days=100 if OVERDUE in problems else 3)
    return ScenarioStatus(
        name,
        kind="files",
        client="Acme",
        last_status=last_status,
        last_at=NOW - timedelta(days=1) if last_status else None,
        last_reason=reason,
        last_pass_at=passed if last_status else None,
        rto_seconds=41.0 if last_status else None,
        rto_target_seconds=900.0,
        problems=list(problems),
    )


def document(*rows: ScenarioStatus) -> ReportDocument:
    status = StatusReport(list(rows), NOW, "sqlite:///results.db")
    return ReportDocument(status, NOW - timedelta(days=92), None)


def outcome(case: ElementTree.Element) -> list[tuple[str, str | None, str | None]]:
    return [(e.tag, e.get("type"), e.get("message")) for e in case if e.tag != "system-out"]


def test_junit_maps_each_state_to_a_pass_a_failure_or_an_error_and_never_skips():
    rendered = render_junit(
        document(
            row("ok", "pass"),
            row("broken", "fail", FAILING, reason="3 files differ"),
            row("password", "error", FAILING, reason="restic: wrong password"),
            row("killed", "abandoned", FAILING, OVERDUE, reason="abandoned: process 7 ended"),
            row("stale", "pass", OVERDUE),
            row("new", None, NEVER_TESTED),
        )
    )

    suite = ElementTree.fromstring(rendered)
    cases = {case.get("name"): outcome(case) for case in suite.iter("testcase")}
    assert cases["ok"] == []
    assert cases["broken"] == [("failure", "fail", "FAIL: 3 files differ")]
    assert cases["password"] == [("error", "error", "ERROR: restic: wrong password")]
    assert cases["killed"][0][:2] == ("error", "abandoned")
    assert cases["killed"][0][2].startswith("ABANDONED: abandoned: process 7 ended; overdue: ")
    assert cases["stale"] == [
        (
            "failure",
            "overdue",
            "overdue: last pass 2026-06-22 12:00 (100d ago), must be proven every 92d",
        )
    ]
    assert cases["new"] == [
        ("error", "never tested", "never tested: new has no result in the history")
    ]
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("6", "2", "3")
    assert suite.get("skipped") == "0"


def test_junit_replaces_what_xml_cannot_carry_and_escapes_the_rest():
    reason = "bad \x00 byte \x1b[31m <b>&amp;</b> \ud800"
    rendered = render_junit(document(row("odd", "fail", FAILING, reason=reason)))

    failure = ElementTree.fromstring(rendered).find("testcase/failure")
    assert failure is not None
    assert failure.get("message") == "FAIL: bad ? byte ?[31m <b>&amp;</b> ?"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a | b", r"a \| b"),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        (
            "[click](http://x) `code` *bold* _it_ ~~gone~~ $x$",
            r"\[click\](http://x) \`code\` \*bold\* \_it\_ \~\~gone\~\~ \$x\$",
        ),
        ("two\nlines\tand \\ slash", r"two lines and \\ slash"),
        ("a &amp; b", "a &amp;amp; b"),
    ],
)
def test_a_markdown_cell_stays_text(text, expected):
    assert cell(text) == expected


def test_the_json_report_says_its_schema_version_and_counts_the_states():
    rendered = json.loads(render_json(document(row("ok", "pass"), row("new", None, NEVER_TESTED))))

    assert rendered["schema_version"] == 1
    assert rendered["summary"] == {
        "scenarios": 2,
        "ok": 1,
        "failing": 0,
        "overdue": 0,
        "never_tested": 1,
    }
    assert rendered["period"] == {"since": "2026-06-30T12:00:00+00:00", "until": None}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.html", "html"),
        ("R.MD", "md"),
        ("out.json", "json"),
        ("junit.xml", "junit"),
        ("report", "html"),
        ("report.txt", "html"),
    ],
)
def test_the_format_follows_the_output_file_name(name, expected):
    assert format_for(Path(name)) == expected


def test_two_charts_on_one_page_share_no_id_and_carry_no_script_or_reference():
    from restore_tests.report.charts import rto_chart

    points = [
        RtoPoint(NOW - timedelta(days=days), "pass", 40.0 + days, 900.0, None)
        for days in (60, 30, 1)
    ]
    first = rto_chart(points, NOW - timedelta(days=92), NOW, "rto0").svg
    second = rto_chart(points, NOW - timedelta(days=92), NOW, "rto1").svg

    assert first.startswith("<svg") and second.startswith("<svg")
    ids = [re.findall(r'id="([^"]*)"', svg) for svg in (first, second)]
    assert ids == [["chart-rto0"], ["chart-rto1"]]
    for forbidden in ("<script", "<desc", "<?xml", "<!--", "href=", "url(", "@import"):
        assert forbidden not in first


def test_a_charts_style_applies_to_that_chart_alone():
    from restore_tests.report.charts import rto_chart

    points = [RtoPoint(NOW - timedelta(days=3), "fail", 95.0, 60.0, 400.0)]
    svg = rto_chart(points, NOW - timedelta(days=92), NOW, "rto7").svg

    styles = re.findall(r"<style[^>]*>(.*?)</style>", svg, re.S)
    assert len(styles) == 1
    selectors = [
        selector.strip()
        for rule in re.findall(r"([^{}]+)\{[^{}]*\}", styles[0])
        for selector in rule.split(",")
    ]
    assert selectors and all(selector.startswith("#chart-rto7") for selector in selectors)


def test_a_name_in_a_chart_is_text_never_markup():
    from restore_tests.report.charts import phase_chart

    hostile = "<script>alert(1)</script>"
    svg = phase_chart([hostile, "crm"], ["fetch", "verify"], {hostile: {"fetch": 3.0}}, "phases")

    assert "<script" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg


def test_a_long_history_is_drawn_as_bucket_means_keeping_every_result_that_did_not_pass():
    from restore_tests.report.charts import MAX_POINTS, rto_chart

    failed = {10, 11, 200}
    points = [
        RtoPoint(
            NOW - timedelta(weeks=260 - week),
            "fail" if week in failed else "pass",
            60.0,
            900.0,
            None,
        )
        for week in range(260)
    ]
    chart = rto_chart(points, NOW - timedelta(weeks=261), NOW, "rto0")

    assert "257 passes drawn as the means of 3 consecutive ones" in chart.note
    assert "every result that was not a pass is drawn on its own" in chart.note
    measured = re.findall(r'<g class="series serie-0 color-0">(.*?)</g>', chart.svg)[0]
    assert len(re.findall(r" [\d.]+ [\d.]+", measured)) + 1 <= MAX_POINTS
    overlay = chart.svg[chart.svg.index('class="plot overlay"') :]
    assert overlay.count("<circle") == len(failed)


def test_a_short_history_is_drawn_point_by_point_without_a_note():
    from restore_tests.report.charts import rto_chart

    points = [RtoPoint(NOW - timedelta(weeks=week), "pass", 60.0, 90.0, None) for week in (3, 2, 1)]
    chart = rto_chart(points, NOW - timedelta(days=92), NOW, "rto0")

    assert chart.note == ""
    assert chart.svg.count("<circle") == 3
    assert "RTO (minutes)" not in chart.svg and "RTO (seconds)" in chart.svg


def test_the_json_points_carry_every_field_of_a_point():
    from dataclasses import asdict

    from restore_tests.report.json_report import _point

    point = RtoPoint(NOW, "pass", 41.0, 900.0, 3600.0)

    assert _point(point) == {**asdict(point), "started_at": "2026-09-30T12:00:00+00:00"}


def test_many_charts_are_drawn_by_a_process_pool_exactly_as_one_process_draws_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from restore_tests.report import charts, html

    jobs = [
        (
            [
                RtoPoint(NOW - timedelta(days=day), "pass", 40.0 + number + day, 900.0, None)
                for day in (30, 20, 10)
            ],
            NOW - timedelta(days=92),
            NOW,
            f"rto{number}",
        )
        for number in range(html.PARALLEL_FROM + 2)
    ]
    drawn_once = [charts.rto_chart(*job) for job in jobs]
    pools = []
    real_pool = html.ProcessPoolExecutor

    def counted_pool(*args: object, **kwargs: object) -> object:
        pools.append(args)
        return real_pool(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(html, "ProcessPoolExecutor", counted_pool)
    monkeypatch.setattr(html.os, "sched_getaffinity", lambda pid: {0, 1})

    assert html._draw_all(jobs) == drawn_once
    assert len(pools) == 1

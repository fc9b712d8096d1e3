"""The report as GitHub-flavoured Markdown: the same sections as the HTML page, tables only.

Every cell is escaped: a reason from restored data can hold `|`, `<script>` or `[links](...)`,
and must stay text wherever the Markdown is rendered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from restore_tests.report import document as wording
from restore_tests.report.document import ReportDocument
from restore_tests.report.status import FAILING, NEVER_TESTED, OK, OVERDUE
from restore_tests.timing import format_duration

# What can start markup inside a cell is backslash-escaped (emphasis, code, links, tables,
# strikethrough, GitHub's math); < > & become entities, so no raw HTML survives. A cell never
# starts a line, so the line-start markers (#, -, 1.) need nothing.
MARKUP = re.compile(r"([\\`*_\[\]|~$])")
ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def cell(text: object) -> str:
    """Text as one safe table cell: one line, entities for HTML, escapes for Markdown."""
    flat = " ".join(str(text).split())
    flat = "".join(ENTITIES.get(character, character) for character in flat)
    return MARKUP.sub(r"\\\1", flat)


def table(headers: list[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return lines


def render_markdown(document: ReportDocument) -> str:
    sections = (_header, _coverage, _attention, _rto, _phases, _failures, _rpo)
    lines: list[str] = []
    for section in sections:
        lines += [*section(document), ""]
    return "\n".join(lines)


def _header(document: ReportDocument) -> list[str]:
    counts = ", ".join(
        f"{document.status.count(state)} {state}" for state in (OK, FAILING, OVERDUE, NEVER_TESTED)
    )
    zone = document.generated_at.astimezone().strftime("%Z")
    lines = [
        "# Restore test report",
        "",
        f"- **Period:** {cell(wording.local_time(document.since))} to "
        f"{cell(wording.local_time(document.period_end))} ({zone}, as every time below)",
        f"- **Generated:** {cell(wording.local_time(document.generated_at, zone=True))}",
        f"- **History:** {cell(document.status.history)}",
        f"- **Scenarios:** {cell(document.folder or 'those recorded in the history')}",
        f"- **Tool:** restore-tests {cell(document.tool_version)}",
        f"- **Summary:** {len(document.rows)} scenarios: {counts}",
    ]
    if document.clients or document.tags:
        lines.append(f"- **Filters:** {cell(', '.join([*document.clients, *document.tags]))}")
    return lines


def _coverage(document: ReportDocument) -> list[str]:
    now = document.generated_at
    rows = [
        [
            row.scenario + (" (changed since last pass)" if row.changed_since_pass else ""),
            ", ".join(row.problems) or OK,
            wording.verdict(row),
            f"{wording.local_time(row.last_pass_at)} ({wording.age(row, now)})",
            wording.rto_text(row),
            wording.versus(row.rpo_seconds, row.rpo_target_seconds),
            row.client or "-",
            row.owner or "-",
            document.proofs.get(row.scenario, "-"),
        ]
        for row in document.rows
    ]
    headers = ["Scenario", "State", "Last verdict", "Last pass", "RTO / target", "RPO / target"]
    headers += ["Client", "Owner", "Last pass proved"]
    lines = ["## Coverage", "", *table(headers, rows)]
    if document.status.retired:
        retired = ", ".join(document.status.retired)
        lines += ["", f"In the history, no longer in the scenario folder: {cell(retired)}"]
    return lines


def _attention(document: ReportDocument) -> list[str]:
    rows = [
        [
            row.scenario,
            ", ".join(row.problems),
            wording.local_time(row.last_pass_at),
            format_duration(row.every_seconds),
            wording.local_time(row.due_at),
        ]
        for row in document.attention()
    ]
    if not rows:
        return ["## Never tested or overdue", "", "Every scenario has a pass within its interval."]
    headers = ["Scenario", "State", "Last pass", "Must be proven every", "Was due"]
    return ["## Never tested or overdue", "", *table(headers, rows)]


def _rto(document: ReportDocument) -> list[str]:
    rows = []
    for row in document.rows:
        summary = document.rto(row.scenario)
        if summary is not None:
            rows.append(
                [row.scenario, summary.results, summary.passes]
                + [format_duration(s) for s in (summary.best_seconds, summary.median_seconds)]
                + [format_duration(s) for s in (summary.worst_seconds, summary.target_seconds)]
                + [summary.over_target, format_duration(summary.projected_seconds)]
            )
    headers = ["Scenario", "Measured", "Passed", "Best", "Median", "Worst", "Target"]
    headers += ["Over target", "Projected full"]
    return ["## RTO over the period", "", *table(headers, rows)] if rows else []


def _phases(document: ReportDocument) -> list[str]:
    names = document.phase_names()
    rows = [
        [row.scenario] + [format_duration(means.get(phase)) for phase in names]
        for row in document.rows
        if (means := document.phases.get(row.scenario))
    ]
    if not rows:
        return []
    return ["## Where the time goes (mean per pass)", "", *table(["Scenario", *names], rows)]


def _failures(document: ReportDocument) -> list[str]:
    if not document.failures:
        return ["## Failures in the period", "", "No failure, error or abandoned run."]
    rows = [
        [
            wording.local_time(failure.started_at),
            failure.scenario,
            failure.status,
            failure.reason,
            "; ".join(failure.failed_checks),
            failure.run_id,
        ]
        for failure in document.failures
    ]
    headers = ["When", "Scenario", "Verdict", "Reason", "Checks that did not pass", "Run"]
    lines = ["## Failures in the period", "", *table(headers, rows)]
    if document.more_failures:
        lines += ["", f"Only the newest {len(document.failures)} are listed."]
    return lines


def _rpo(document: ReportDocument) -> list[str]:
    rows = [
        [
            row.scenario,
            figures.results,
            format_duration(row.rpo_seconds),
            format_duration(figures.worst_seconds),
            format_duration(figures.target_seconds),
            figures.missed,
            row.rpo_basis.replace("_", " ") or "-",
        ]
        for row in document.rows
        if (figures := document.rpo.get(row.scenario))
    ]
    headers = ["Scenario", "Results", "Newest RPO", "Worst RPO", "Target", "Missed", "Based on"]
    return ["## RPO over the period", "", *table(headers, rows)] if rows else []

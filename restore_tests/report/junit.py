"""The report as JUnit XML for CI dashboards: one testsuite, one testcase per scenario.

The mapping (docs/report.md): a scenario that is ok passes; a last verdict of fail, or no pass
within its interval (overdue), is a <failure>; a last verdict of error or abandoned (the
restore could not be judged), or no result at all (never tested), is an <error>. Nothing is
<skipped>: dashboards show skipped tests as neutral, and a scenario nobody restored is a gap in
the proof, not a neutral outcome. The testcase's time is the newest measured RTO.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree

from restore_tests.report import document as wording
from restore_tests.report.document import ReportDocument
from restore_tests.report.status import NEVER_TESTED, OVERDUE, ScenarioStatus
from restore_tests.results import FAIL, PASS
from restore_tests.timing import format_duration

SUITE = "restore-tests"
# Characters XML 1.0 cannot carry at all, even escaped.
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def text(value: object) -> str:
    return NOT_XML.sub("?", str(value))


def render_junit(document: ReportDocument) -> str:
    suite = ElementTree.Element("testsuite", name=SUITE)
    properties = ElementTree.SubElement(suite, "properties")
    for name, value in _properties(document):
        ElementTree.SubElement(properties, "property", name=name, value=text(value))
    for row in document.rows:
        _testcase(suite, row, document)
    counts = {tag: len(suite.findall(f"testcase/{tag}")) for tag in ("failure", "error")}
    suite.set("tests", str(len(document.rows)))
    suite.set("failures", str(counts["failure"]))
    suite.set("errors", str(counts["error"]))
    suite.set("skipped", "0")
    suite.set("timestamp", f"{document.generated_at:%Y-%m-%dT%H:%M:%S}")
    suite.set("time", f"{sum(row.rto_seconds or 0.0 for row in document.rows):.3f}")
    ElementTree.indent(suite)
    body = ElementTree.tostring(suite, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def _properties(document: ReportDocument) -> list[tuple[str, str]]:
    return [
        ("since", document.since.isoformat()),
        ("until", document.until.isoformat() if document.until else ""),
        ("generated_at", document.generated_at.isoformat()),
        ("history", document.status.history),
        ("scenario_folder", document.folder or ""),
        ("clients", ",".join(document.clients)),
        ("tags", ",".join(document.tags)),
        ("tool_version", document.tool_version),
    ]


def _testcase(suite: ElementTree.Element, row: ScenarioStatus, document: ReportDocument) -> None:
    case = ElementTree.SubElement(
        suite,
        "testcase",
        name=text(row.scenario),
        classname=text(f"{SUITE}.{row.client}" if row.client else SUITE),
        time=f"{row.rto_seconds or 0.0:.3f}",
    )
    outcome = _outcome(row, document)
    if outcome is not None:
        tag, kind, message = outcome
        element = ElementTree.SubElement(case, tag, type=kind, message=text(message))
        element.text = text(message)
    ElementTree.SubElement(case, "system-out").text = text(_details(row, document))


def _outcome(row: ScenarioStatus, document: ReportDocument) -> tuple[str, str, str] | None:
    """(element, type, message) of a scenario that is not ok; None when it is."""
    if not row.problems:
        return None
    if NEVER_TESTED in row.problems:
        return "error", NEVER_TESTED, f"never tested: {row.scenario} has no result in the history"
    overdue = _overdue(row, document) if OVERDUE in row.problems else ""
    if row.last_status == PASS:
        return "failure", OVERDUE, overdue
    message = "; ".join(filter(None, [wording.verdict(row), overdue]))
    tag = "failure" if row.last_status == FAIL else "error"
    return tag, row.last_status or "", message


def _overdue(row: ScenarioStatus, document: ReportDocument) -> str:
    return (
        f"overdue: last pass {wording.local_time(row.last_pass_at)} "
        f"({wording.age(row, document.generated_at)}), must be proven every "
        f"{format_duration(row.every_seconds)}"
    )


def _details(row: ScenarioStatus, document: ReportDocument) -> str:
    """What a dashboard shows beside the verdict: the figures and what was proven."""
    proof_age = wording.age(row, document.generated_at)
    lines = [
        f"state: {', '.join(row.problems) or 'ok'}",
        f"last verdict: {wording.verdict(row)} ({wording.local_time(row.last_at)})",
        f"last pass: {wording.local_time(row.last_pass_at)} ({proof_age})",
        f"RTO / target: {wording.rto_text(row)}",
        f"RPO / target: {wording.versus(row.rpo_seconds, row.rpo_target_seconds)}",
    ]
    if row.scenario in document.proofs:
        lines.append(f"last pass proved: {document.proofs[row.scenario]}")
    if row.changed_since_pass:
        lines.append("the scenario changed since its last pass")
    return "\n".join(lines)

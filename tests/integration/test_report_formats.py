"""`restore-tests report` through the real command line on a real SQLite history: the Markdown,
JSON and JUnit renderings parsed back and checked, the period and client filters, the atomic
write, an empty history, and the bad inputs with their exact one-line messages."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from restore_tests.history.store import HistoryStore
from tests.conftest import ROOT, CliResult, run_cli
from tests.report_helpers import DAMAGED_DISK, WRONG_PASSWORD, fill_history, write_scenarios

pytestmark = pytest.mark.integration

HOSTILE = "<script>alert(1)</script> | `rm -rf` [x](http://evil.example)"
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ./scenarios and history.db: the sample history, a hostile reason in it."""
    folder = tmp_path_factory.mktemp("formats")
    scenarios = write_scenarios(folder / "scenarios")
    fill_history(f"sqlite:///{folder / 'history.db'}", scenarios, NOW, hostile=HOSTILE)
    return folder


def report(folder: Path, *args: str) -> CliResult:
    """The report command run in folder (./scenarios is its default), on the clock of UTC."""
    environment = {"RESTORE_TESTS_DB": f"sqlite:///{folder / 'history.db'}", "TZ": "UTC"}
    return run_cli("report", *args, cwd=folder, env=environment)


def json_report(folder: Path, *args: str) -> dict:
    done = report(folder, "--format", "json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def by_name(document: dict) -> dict[str, dict]:
    return {row["scenario"]: row for row in document["scenarios"]}


def test_the_json_report_has_the_coverage_the_period_figures_and_the_failures(folder):
    document = json_report(folder, "--since", "200d")

    assert document["schema_version"] == 1
    assert document["summary"] == {
        "scenarios": 6,
        "ok": 3,
        "failing": 1,
        "overdue": 2,
        "never_tested": 1,
    }
    assert document["scenario_folder"] == str(folder / "scenarios")
    assert document["history"] == f"sqlite:///{folder / 'history.db'}"
    rows = by_name(document)
    assert rows["erp-vm"]["problems"] == ["failing", "overdue"]
    assert rows["erp-vm"]["last_reason"] == f"{DAMAGED_DISK} {HOSTILE}"
    assert rows["billing-mysql"]["state"] == "never tested"
    assert rows["billing-mysql"]["period"]["rto"] is None
    assert rows["crm-sqlite"]["changed_since_pass"] is True
    assert rows["accounting-db"]["last_pass_proved"] == "12,000 files hashed (8.0 GiB)"
    accounting = rows["accounting-db"]["period"]
    assert accounting["rto"]["over_target"] == 1
    assert accounting["rto"]["worst_seconds"] == 965.0
    assert accounting["rto"]["target_seconds"] == 900.0
    assert accounting["rpo"]["missed"] == 0
    assert set(accounting["phase_means_seconds"]) >= {"fetch", "load", "verify"}
    assert rows["file-share"]["period"]["rto"]["projected_seconds"] > 600
    assert {(f["scenario"], f["status"]) for f in document["failures"]} == {
        ("crm-sqlite", "error"),
        ("erp-vm", "fail"),
        ("accounting-db", "fail"),
    }


def test_a_period_bounds_the_charts_and_failures_but_not_the_coverage(folder):
    since, until = NOW - timedelta(days=30), NOW - timedelta(days=10)
    document = json_report(
        folder, "--since", since.isoformat(), "--until", until.isoformat(), "--client", "Globex"
    )

    assert sorted(by_name(document)) == ["crm-sqlite", "erp-vm"]
    assert document["period"] == {"since": since.isoformat(), "until": until.isoformat()}
    points = by_name(document)["crm-sqlite"]["period"]["rto_points"]
    assert points and all(
        since <= datetime.fromisoformat(point["started_at"]) < until for point in points
    )
    assert [(f["scenario"], f["reason"]) for f in document["failures"]] == [
        ("crm-sqlite", WRONG_PASSWORD),
        ("erp-vm", f"{DAMAGED_DISK} {HOSTILE}"),
    ]
    assert by_name(document)["crm-sqlite"]["last_status"] == "pass"  # newer than --until


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the table under a heading (split on unescaped pipes)."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]
    return [
        [
            cell.strip().replace("\0", "\\|")
            for cell in line.strip("|").replace("\\|", "\0").split("|")
        ]
        for line in lines
    ]


def test_the_markdown_report_has_a_coverage_row_per_scenario_and_escapes_the_reasons(folder):
    done = report(folder, "--since", "200d", "-o", "report.md")

    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "wrote report.md (md, 6 scenarios: 3 ok, 1 failing, 2 overdue, 1 never tested)\n"
    )
    markdown = (folder / "report.md").read_text()
    assert markdown.startswith("# Restore test report\n")
    coverage = table_rows(markdown, "Coverage")
    assert sorted(row[0] for row in coverage) == [
        "accounting-db",
        "billing-mysql",
        "crm-sqlite (changed since last pass)",
        "erp-vm",
        "file-share",
        "mail-archive",
    ]
    assert all(len(row) == 9 for row in coverage)
    assert "<script>" not in markdown
    escaped = r"&lt;script&gt;alert(1)&lt;/script&gt; \| \`rm -rf\` \[x\](http://evil.example)"
    failures = table_rows(markdown, "Failures in the period")
    assert [row[3] for row in failures if row[1] == "erp-vm"] == [f"{DAMAGED_DISK} {escaped}"]


def test_the_junit_report_has_a_testcase_per_scenario_with_failures_and_errors(folder):
    done = report(folder, "--format", "junit")

    assert done.returncode == 0, done.stderr
    suite = ElementTree.fromstring(done.stdout)
    assert suite.tag == "testsuite"
    assert {key: suite.get(key) for key in ("tests", "failures", "errors", "skipped")} == {
        "tests": "6",
        "failures": "2",
        "errors": "1",
        "skipped": "0",
    }
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    outcomes = {
        name: [(child.tag, child.get("type")) for child in case if child.tag != "system-out"]
        for name, case in cases.items()
    }
    assert outcomes == {
        "accounting-db": [],
        "file-share": [],
        "crm-sqlite": [],
        "erp-vm": [("failure", "fail")],
        "billing-mysql": [("error", "never tested")],
        "mail-archive": [("failure", "overdue")],
    }
    message = cases["erp-vm"].find("failure").get("message")
    assert message.startswith(f"FAIL: {DAMAGED_DISK} {HOSTILE}; overdue: last pass ")
    assert cases["accounting-db"].get("classname") == "restore-tests.Acme"
    assert float(cases["accounting-db"].get("time")) > 300
    assert "last pass proved: 12,000 files hashed" in cases["accounting-db"].find("system-out").text


def test_the_html_report_goes_to_stdout_when_it_is_not_a_terminal(folder):
    done = report(folder, "--client", "Initech")

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("<!DOCTYPE html>")
    assert done.stdout.count('<tr data-scenario="') == 2


def test_the_html_report_is_not_poured_into_a_terminal(folder):
    leader, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), "report"],
            cwd=folder,
            env={**os.environ, "RESTORE_TESTS_DB": f"sqlite:///{folder / 'history.db'}"},
            stdout=terminal,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(terminal)
        os.close(leader)

    assert done.returncode == 2
    assert done.stderr == (
        "restore-tests: the HTML report is a page for a browser: write it with -o report.html\n"
    )


def test_the_output_file_is_replaced_whole_and_no_temporary_file_is_left(folder, tmp_path):
    target = tmp_path / "report.json"
    target.write_text("the previous report")

    done = report(folder, "-o", str(target))

    assert done.returncode == 0, done.stderr
    assert json.loads(target.read_text())["schema_version"] == 1
    assert os.listdir(tmp_path) == ["report.json"]


def test_an_unwritable_output_is_one_line_and_exit_3(folder):
    done = report(folder, "--format", "md", "-o", "/nonexistent-folder/report.md")

    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr == (
        "restore-tests: could not write /nonexistent-folder/report.md: No such file or directory\n"
    )


def test_an_empty_history_without_a_folder_gives_an_empty_report(tmp_path):
    HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")

    document = json_report(tmp_path)
    markdown = report(tmp_path, "--format", "md")
    page = report(tmp_path, "--format", "html")

    assert document["scenarios"] == [] and document["failures"] == []
    assert document["summary"]["scenarios"] == 0
    assert document["scenario_folder"] is None
    assert "No failure, error or abandoned run." in markdown.stdout
    assert "No scenario: the history is empty and no scenario folder was given." in page.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--since", "last tuesday"],
            "--since 'last tuesday' is not a date: write 2026-07-01, 2026-07-01T12:00 or a "
            "duration ago such as 90d",
        ),
        (["--since", "2999-01-01"], "--since 2999-01-01 is in the future (2999-01-01 00:00 UTC)"),
        (
            ["--since", "2020-07-01", "--until", "2020-06-01"],
            "--until must come after --since (2020-06-01 00:00 UTC is not after 2020-07-01 "
            "00:00 UTC)",
        ),
        (
            ["--client", "Nobody"],
            "no scenario in the scenario folder has client 'Nobody' (clients: Acme, Globex, "
            "Initech)",
        ),
    ],
    ids=["since-unparsable", "since-in-the-future", "until-before-since", "unknown-client"],
)
def test_bad_input_is_one_line_and_exit_2(folder, args, message):
    done = report(folder, *args, "-o", "never-written.html")

    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"restore-tests: {message}\n"
    assert not (folder / "never-written.html").exists()


def test_an_unknown_format_is_a_usage_error(folder):
    done = report(folder, "--format", "csv")

    assert done.returncode == 2
    assert "Invalid value for '--format': 'csv' is not one of 'html', 'md', 'json', 'junit'" in (
        done.stderr
    )

"""The unattended drill's output: conflicting options, the JSON objects and the summary line."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from cli import main
from restore_tests.drill import DrillOutcome
from restore_tests.history.models import ABANDONED, RUNNING
from restore_tests.report import records
from restore_tests.results import ERROR, FAIL, PASS, Check, ScenarioResult

STARTED = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
RUN_ID = "20261201T030000Z-abc123"


def result(name: str, status: str, reason: str = "") -> ScenarioResult:
    finished = ScenarioResult(name, "files", f"/etc/scenarios/{name}.yaml", "ab" * 32, STARTED)
    finished.status, finished.reason, finished.finished_at = status, reason, STARTED
    finished.checks = [Check.passed("restic restore", observed="no errors")]
    return finished


def outcome(*results: ScenarioResult, **fields: object) -> DrillOutcome:
    return DrillOutcome(RUN_ID, "drill", list(results), **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--json", "--json-lines"], ["--json and --json-lines"]),
        (["-qq", "--json"], ["--quiet --quiet", "--json (JSON on stdout)"]),
        (["--json-lines", "--quiet", "--quiet"], ["--quiet --quiet", "--json-lines"]),
    ],
)
@pytest.mark.parametrize("command", ["check", "drill"])
def test_contradictory_output_options_are_a_usage_error_naming_both(
    command, options, named, tmp_path
) -> None:
    arguments = [command, str(tmp_path / "nothing-runs.yaml"), *options]

    ran = CliRunner().invoke(main, arguments)

    assert ran.exit_code == 2, ran.output
    assert "Usage: " in ran.stderr
    for name in named:
        assert name in ran.stderr
    assert ran.stdout == ""


def test_a_json_line_is_one_versioned_result_object() -> None:
    line = json.dumps(records.result_line(result("share", PASS), RUN_ID))
    parsed = json.loads(line)

    assert "\n" not in line
    assert list(parsed)[:3] == ["schema_version", "type", "scenario"]
    assert (parsed["schema_version"], parsed["type"], parsed["status"]) == (1, "result", "pass")
    assert parsed["run_id"] == RUN_ID and parsed["checks"][0]["name"] == "restic restore"


def test_the_summary_object_counts_each_status_and_names_the_history() -> None:
    finished = outcome(result("a", PASS), result("b", FAIL, "1 file differs"), result("c", PASS))

    summary = records.summary_line(finished, 42.1234, "sqlite:///results.db")

    assert summary == {
        "schema_version": 1,
        "type": "summary",
        "run_id": RUN_ID,
        "trigger": "drill",
        "status": "fail",
        "exit_code": 1,
        "scenarios": 3,
        "counts": {"pass": 2, "fail": 1, "error": 0},
        "interrupted": False,
        "unrecorded": [],
        "seconds": 42.123,
        "history": "sqlite:///results.db",
    }
    assert json.loads(json.dumps(summary)) == summary


def test_the_json_document_and_every_record_carry_the_schema_version() -> None:
    document = records.drill_document(outcome(result("a", PASS)))

    assert document["schema_version"] == 1
    assert [record["schema_version"] for record in document["results"]] == [1]


def test_the_drill_summary_line_says_counts_time_and_history() -> None:
    finished = outcome(result("a", PASS), result("b", FAIL), result("c", ERROR))

    assert finished.summary_line(42.0, "sqlite:///results.db") == (
        f"drill {RUN_ID}: 3 scenarios, 1 passed, 1 failed, 1 error in 42s; "
        "history in sqlite:///results.db"
    )


def test_an_interrupted_drill_with_an_unrecorded_result_says_both() -> None:
    finished = outcome(result("a", PASS), interrupted=True, unrecorded=["a"])

    assert finished.summary_line(3.04, "sqlite:///h.db") == (
        f"drill {RUN_ID}: 1 scenario, 1 passed, 0 failed, 0 errors; 1 result could not be "
        "recorded (interrupted) in 3.0s; history in sqlite:///h.db"
    )


def test_check_drill_and_history_share_one_status_vocabulary() -> None:
    """A result is pass, fail or error wherever it is shown; the history adds running and
    abandoned (a result under way, or of a killed drill), a drill run adds interrupted."""
    history = next(command for name, command in main.commands.items() if name == "history")
    [status_option] = [option for option in history.params if option.name == "statuses"]

    assert (PASS, FAIL, ERROR, RUNNING, ABANDONED) == (
        "pass",
        "fail",
        "error",
        "running",
        "abandoned",
    )
    assert list(status_option.type.choices) == [PASS, FAIL, ERROR, RUNNING, ABANDONED]  # type: ignore[attr-defined]
    assert {outcome(result("a", status)).status for status in (PASS, FAIL, ERROR)} == {
        PASS,
        FAIL,
        ERROR,
    }
    assert outcome(result("a", PASS), interrupted=True).status == "interrupted"

"""The pipeline through its two interfaces, in-process: a fake source and a fake runner, no
restic, no Docker. Each new kind or source can be tested at this level and end to end."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from restore_tests.errors import SandboxError
from restore_tests.pipeline import RunOptions, ScenarioRun, run_scenario
from restore_tests.scenario import json_schema, load_file
from restore_tests.sources import SOURCES
from runners import RUNNERS
from tests.conftest import remaining
from tests.fakes import FakeRunner, FakeSandboxes, FakeSource

pytestmark = pytest.mark.integration
STEPS = ["preflight", "select", "space", "sandbox", "fetch", "load", "verify", "teardown"]


@pytest.fixture
def fake_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SOURCES, FakeSource.name, FakeSource)
    monkeypatch.setitem(RUNNERS, FakeRunner.kind, FakeRunner)


def fake_scenario(folder: Path, **source: Any) -> Any:
    document = {
        "name": "fake-one",
        "kind": "fake-kind",
        "source": {"type": "fake", "files": {"a.txt": "hello", "sub/b.txt": "world"}, **source},
        "objectives": {"rto": "15m", "rpo": "26h"},
        "verify": {"expect_files": 2},
    }
    path = folder / "fake.yaml"
    path.write_text(yaml.safe_dump(document))
    [scenario] = load_file(path)
    return scenario


def run(scenario: Any, work: Path) -> tuple[ScenarioRun, FakeSandboxes]:
    """One run through ScenarioRun's steps, as run_scenario does, keeping the run to inspect."""
    sandboxes = FakeSandboxes()
    scenario_run = ScenarioRun(scenario, RunOptions("20261201T000000Z-abcdef", work), sandboxes)
    try:
        scenario_run.steps()
    finally:
        with scenario_run.clock.phase("teardown"):
            scenario_run.stack.close()
    return scenario_run, sandboxes


def run_whole(scenario: Any, work: Path) -> tuple[Any, FakeSandboxes]:
    """run_scenario itself: every outcome becomes a result."""
    sandboxes = FakeSandboxes()
    return run_scenario(scenario, RunOptions("20261201T000000Z-abcdef", work), sandboxes), sandboxes


def test_the_steps_run_in_order_each_recorded_once_with_the_sandbox_started_during_selection(
    fake_registries, tmp_path
):
    scenario_run, _ = run(fake_scenario(tmp_path, select_seconds=0.3), tmp_path / "work")

    spans = scenario_run.clock.spans
    assert sorted(spans) == sorted(STEPS)
    in_line = [step for step in STEPS if step != "sandbox"]
    for earlier, later in itertools.pairwise(in_line):
        assert spans[earlier][1] <= spans[later][0], f"{earlier} overlaps {later}"
    # The sandbox starts once preflight is done, while the source selects, and is awaited
    # once the data is fetched, before the kind loads it.
    assert spans["preflight"][1] <= spans["sandbox"][0] < spans["select"][1]
    assert spans["sandbox"][1] <= spans["load"][0]
    result = scenario_run.result
    assert (result.status, result.reason) == ("pass", "")
    assert (result.snapshot_id, result.rpo.basis, result.rpo.status) == (
        "fake-1",
        "file_mtime",
        "passed",
    )
    assert [check.name for check in result.checks] == [
        "fake digest",
        "restored files",
        "server ready",
        "fake load",
        "fake count",
    ]


def test_the_runner_declares_its_sandbox_its_server_starts_before_the_fetch_and_is_awaited_after(
    fake_registries, tmp_path
):
    _, sandboxes = run(fake_scenario(tmp_path), tmp_path / "work")

    [box] = sandboxes.opened
    assert (box.spec.user, box.spec.environment) == ("999:999", {"FAKE": "1"})
    assert box.started == [["start"]]
    assert box.readiness == [(["ready"], 60.0)]
    assert list(box.spec.read_only_mounts.values()) == ["/restore"]


def test_waiting_for_disk_space_is_not_counted_in_the_measured_rto(fake_registries, tmp_path):
    scenario_run, _ = run(fake_scenario(tmp_path, space_seconds=0.5), tmp_path / "work")

    spans = scenario_run.clock.spans
    assert spans["space"][1] - spans["space"][0] >= 0.5
    assert scenario_run.result.rto.measured_seconds is not None
    assert scenario_run.result.rto.measured_seconds < 0.5
    # The sandbox (started during selection) counts, and from the fetch to the end of verify.
    sandbox = spans["sandbox"][1] - spans["sandbox"][0]
    assert scenario_run.result.rto.measured_seconds == pytest.approx(
        sandbox + spans["verify"][1] - spans["fetch"][0], abs=0.01
    )


def test_a_sources_proof_over_an_empty_fetch_proves_nothing_and_the_run_fails(
    fake_registries, tmp_path
):
    scenario = fake_scenario(tmp_path, files={})

    result = run_scenario(
        scenario, RunOptions("20261201T000000Z-abcdef", tmp_path / "work"), FakeSandboxes()
    )

    assert result.status == "fail"
    assert result.reason.startswith("the restore produced no files (fake point fake-1)")
    [digest] = [check for check in result.checks if check.name == "fake digest"]
    assert digest.proves_data is False
    assert digest.observed.endswith("(nothing restored: it proves nothing)")


def test_a_source_that_cannot_be_reached_is_an_error_and_leaves_nothing(fake_registries, tmp_path):
    work = tmp_path / "work"
    scenario = fake_scenario(tmp_path, unreachable=True)

    result = run_scenario(scenario, RunOptions("20261201T000000Z-abcdef", work), FakeSandboxes())

    assert (result.status, result.reason) == (
        "error",
        "fake: cannot reach fake:here (the test said so)",
    )
    assert list(result.phases) == ["preflight", "teardown"]
    assert remaining(work) == []


def test_a_sources_own_failure_fails_the_scenario(fake_registries, tmp_path):
    result = run_scenario(
        fake_scenario(tmp_path, damaged=True),
        RunOptions("20261201T000000Z-abcdef", tmp_path / "work"),
        FakeSandboxes(),
    )

    assert (result.status, result.reason) == ("fail", "fake digest differs")


def test_the_schema_holds_every_registered_source_and_kind(fake_registries):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json_schema())
    fake = {"name": "a", "kind": "fake-kind", "source": {"type": "fake"}, "verify": {}}
    files = {
        "name": "b",
        "kind": "files",
        "source": {"type": "restic", "repository": "r", "password_env": "P"},
        "verify": {"manifest": "/data/SHA256SUMS"},
    }
    mixed = {**files, "source": {"type": "fake"}}  # any source feeds any kind
    wrong = {**fake, "source": {"type": "fake", "repository": "r"}}

    assert [list(validator.iter_errors(document)) for document in (fake, files, mixed)] == [
        [],
        [],
        [],
    ]
    assert list(validator.iter_errors(wrong)) != []


def test_a_kind_whose_sandbox_is_sized_by_the_restore_point_starts_it_after_selection(
    fake_registries, tmp_path, monkeypatch
):
    monkeypatch.setattr(FakeRunner, "sandbox_sized_by_point", True)
    scenario_run, _ = run(fake_scenario(tmp_path), tmp_path / "work")

    spans = scenario_run.clock.spans
    assert list(spans) == STEPS
    for earlier, later in itertools.pairwise(STEPS):
        assert spans[earlier][1] <= spans[later][0], f"{earlier} overlaps {later}"
    assert scenario_run.result.status == "pass"


def test_a_selection_that_fails_while_the_sandbox_starts_still_removes_the_sandbox(
    fake_registries, tmp_path
):
    scenario = fake_scenario(tmp_path, select_error="fake: no such snapshot")
    result, sandboxes = run_whole(scenario, tmp_path / "work")

    assert (result.status, result.reason) == ("error", "fake: no such snapshot")
    assert sandboxes.opened and all(box.closed for box in sandboxes.opened)
    assert remaining(tmp_path / "work") == []


class SandboxesThatCannotStart(FakeSandboxes):
    def open(self, spec: Any, keep: bool, hand_off: Any) -> Any:
        raise SandboxError("docker: cannot start the sandbox: no space left for its tmpfs")


def test_a_sandbox_that_fails_while_the_source_selects_is_the_runs_error_and_leaves_nothing(
    fake_registries, tmp_path
):
    work = tmp_path / "work"
    scenario = fake_scenario(tmp_path, select_seconds=0.2)

    result = run_scenario(
        scenario, RunOptions("20261201T000000Z-abcdef", work), SandboxesThatCannotStart()
    )

    assert (result.status, result.reason) == (
        "error",
        "docker: cannot start the sandbox: no space left for its tmpfs",
    )
    assert "verify" not in result.phases  # nothing was checked without a sandbox
    assert remaining(work) == []

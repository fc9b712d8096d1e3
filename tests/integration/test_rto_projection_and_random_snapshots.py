"""The RTO projection of a subset restore and `snapshot: {random_within: ...}`, through the
pipeline in-process: real restic repositories of both versions (or the fake source, where the
verdict must not depend on how fast this machine is), fake sandboxes, the fake kind."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from restore_tests.pipeline import RunOptions, run_scenario
from restore_tests.results import ScenarioResult
from restore_tests.scenario import load_file
from restore_tests.sources import SOURCES
from restore_tests.sources.restic import SEED_VARIABLE, ResticSource
from restore_tests.sources.restic_cli import Snapshot
from restore_tests.timing import DATA_PHASES, format_duration
from runners import RUNNERS
from tests.conftest import PASSWORD, PASSWORD_VARIABLE, Repository
from tests.fakes import FakeRunner, FakeSandboxes, FakeSource

pytestmark = pytest.mark.integration
RUN_ID = "20261201T000000Z-abcdef"
FAKE_FILES = {"a.txt": "hello", "sub/b.txt": "world"}  # 10 bytes restored


@pytest.fixture
def fake_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SOURCES, FakeSource.name, FakeSource)
    monkeypatch.setitem(RUNNERS, FakeRunner.kind, FakeRunner)


@pytest.fixture
def restic_environment(repository: Repository, monkeypatch: pytest.MonkeyPatch) -> Repository:
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    monkeypatch.setenv("RESTIC_BINARY", repository.binary)
    return repository


def run(folder: Path, source: dict[str, Any], objectives: dict[str, str], files: int) -> Any:
    """One run of a fake-kind scenario that expects `files` restored files."""
    document = {
        "name": "projected",
        "kind": "fake-kind",
        "source": source,
        "objectives": objectives,
        "verify": {"expect_files": files},
    }
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(document))
    [scenario] = load_file(path)
    return run_scenario(scenario, RunOptions(RUN_ID, folder / "work"), FakeSandboxes())


def data_seconds(result: ScenarioResult) -> float:
    return sum(result.phases[name] for name in DATA_PHASES)


# -- the projection, judged in-process (deterministic whatever the machine's speed) ----------


def fake_subset(**changes: Any) -> dict[str, Any]:
    """10 bytes restored of a 10,000-byte restore point, in at least 0.1 s: the projection is
    at least 100 s, while the measured RTO stays far below a minute."""
    return {
        "type": "fake",
        "files": FAKE_FILES,
        "partial": True,
        "full_bytes": 10_000,
        "fetch_seconds": 0.1,
        **changes,
    }


def test_an_rto_that_applies_to_the_full_restore_fails_on_a_projection_over_the_target(
    fake_registries, tmp_path
):
    result = run(tmp_path, fake_subset(), {"rto": "1m", "rto_applies_to": "full"}, 2)

    measured, projected = result.rto.measured_seconds, result.projected_rto_seconds
    assert measured < 60 <= 100 <= projected
    assert (result.status, result.rto.status, result.rto.basis) == ("fail", "failed", "projected")
    assert result.reason == (
        f"projected full-restore RTO {format_duration(projected)} exceeds target 1m "
        f"(measured {format_duration(measured)} restoring 0.1% of 9.8 KiB)"
    )


def test_an_rto_that_applies_to_the_restore_as_run_passes_and_still_keeps_the_projection(
    fake_registries, tmp_path
):
    result = run(tmp_path, fake_subset(), {"rto": "1m"}, 2)

    assert (result.status, result.rto.status, result.rto.basis) == ("pass", "passed", "measured")
    assert (result.rto_applies_to, result.full_bytes) == ("restored", 10_000)
    assert result.throughput_bytes_per_second == pytest.approx(10 / data_seconds(result))
    fixed = result.rto.measured_seconds - data_seconds(result)
    assert result.projected_rto_seconds == pytest.approx(fixed + 1000 * data_seconds(result))


def test_an_rto_that_applies_to_the_full_restore_of_a_whole_restore_point_is_the_measured_one(
    fake_registries, tmp_path
):
    source = {"type": "fake", "files": FAKE_FILES}
    result = run(tmp_path, source, {"rto": "1m", "rto_applies_to": "full"}, 2)

    assert (result.status, result.rto.status, result.rto.basis) == ("pass", "passed", "measured")
    assert (result.full_bytes, result.projected_rto_seconds) == (None, None)
    assert result.throughput_bytes_per_second is None


def test_a_subset_whose_full_size_is_unknown_fails_an_rto_that_applies_to_the_full_restore(
    fake_registries, tmp_path
):
    source = fake_subset(full_bytes=None)
    result = run(tmp_path, source, {"rto": "1m", "rto_applies_to": "full"}, 2)

    assert (result.status, result.rto.status) == ("fail", "unknown")
    assert result.reason == (
        "full-restore RTO could not be projected (restored or full size unknown)"
    )


# -- the projection from real restic repositories -------------------------------------------


def test_a_subset_restore_from_restic_records_the_full_size_the_throughput_and_a_projection(
    fake_registries, restic_environment, tmp_path
):
    repository = restic_environment
    source = {
        "type": "restic",
        "repository": str(repository.path),
        "password_env": PASSWORD_VARIABLE,
        "include": ["/data/compta/sub"],
    }
    sub = repository.source_root / "data/compta/sub"
    result = run(tmp_path, source, {"rto": "15m"}, len(list(sub.iterdir())))

    everything = [path for path in (repository.source_root / "data").rglob("*") if path.is_file()]
    full = sum(path.stat().st_size for path in everything)
    restored = sum(path.stat().st_size for path in sub.iterdir())
    assert (result.status, result.bytes, result.full_bytes) == ("pass", restored, full)
    assert result.throughput_bytes_per_second == pytest.approx(restored / data_seconds(result))
    fixed = result.rto.measured_seconds - data_seconds(result)
    scaled = data_seconds(result) * full / restored
    assert result.projected_rto_seconds == pytest.approx(fixed + scaled)
    assert result.projected_rto_seconds > result.rto.measured_seconds


# -- random_within with real restic repositories ---------------------------------------------


def backup_at(repository: Repository, folder: Path, age: timedelta) -> None:
    """A snapshot of folder tagged drill, dated `age` ago (restic backup --time, UTC)."""
    when = (datetime.now(UTC) - age).strftime("%Y-%m-%d %H:%M:%S")
    subprocess.run(
        [repository.binary, "--no-cache", "backup", "--tag", "drill", "--time", when, "."],
        cwd=folder,
        check=True,
        capture_output=True,
        env={
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "TZ": "UTC",
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_REPOSITORY": str(repository.path),
        },
    )


@pytest.fixture
def drill_series(restic_environment: Repository, tmp_path: Path) -> list[Snapshot]:
    """Snapshots tagged drill taken 40 days, 20 days, 10 days and 2 hours ago, oldest first."""
    folder = tmp_path / "note"
    folder.mkdir()
    for days in (40, 20, 10, 2 / 24):
        (folder / "note.txt").write_text(f"{days} days ago\n")
        backup_at(restic_environment, folder, timedelta(days=days))
    series = source_for(restic_environment, "30d", tmp_path).restic.matching(
        draw_filter("30d").snapshot
    )
    assert len(series) == 4
    return series


def draw_filter(window: str) -> Any:
    return ResticSource.settings_model.model_validate(
        {
            "type": "restic",
            "repository": "unused",
            "password_env": PASSWORD_VARIABLE,
            "snapshot": {"tags": ["drill"], "random_within": window},
        }
    )


def source_for(repository: Repository, window: str, tmp_path: Path) -> ResticSource:
    settings = draw_filter(window).model_copy(update={"repository": str(repository.path)})
    return ResticSource(settings, tmp_path, no_cache=True)


def test_random_within_draws_each_recent_snapshot_of_the_filter_and_a_seed_repeats_a_draw(
    restic_environment, drill_series, tmp_path, monkeypatch
):
    drawn: dict[str, str] = {}
    for seed in ("1", "2", "3", "4", "5", "6", "1"):
        monkeypatch.setenv(SEED_VARIABLE, seed)
        point = source_for(restic_environment, "30d", tmp_path).select()
        assert drawn.setdefault(seed, point.id) == point.id, f"seed {seed} drew another"
        assert point.description.endswith(", drawn at random within 30d)")
        newest = drill_series[-1]
        assert point.newest_time == (None if point.id == newest.id else newest.time)

    assert set(drawn.values()) == {snapshot.id for snapshot in drill_series[1:]}


def test_a_drill_of_an_older_random_snapshot_judges_the_rpo_on_the_newest_and_says_so(
    fake_registries, restic_environment, drill_series, tmp_path, monkeypatch
):
    older, newest = drill_series[1], drill_series[-1]

    def draws_older(seed: str) -> bool:
        monkeypatch.setenv(SEED_VARIABLE, seed)
        return source_for(restic_environment, "30d", tmp_path).select().id == older.id

    seed = next(seed for seed in map(str, range(50)) if draws_older(seed))
    monkeypatch.setenv(SEED_VARIABLE, seed)
    source = {
        "type": "restic",
        "repository": str(restic_environment.path),
        "password_env": PASSWORD_VARIABLE,
        "snapshot": {"tags": ["drill"], "random_within": "30d"},
    }

    result = run(tmp_path, source, {"rto": "15m", "rpo": "26h"}, 1)

    assert (result.status, result.reason) == ("pass", "")
    assert (result.snapshot_id, result.snapshot_time) == (older.id, older.time)
    assert (result.rpo.status, result.rpo.basis) == ("passed", "snapshot_time")
    assert 2 * 3600 <= result.rpo.measured_seconds < 3 * 3600  # the newest's age, not 20 days
    [check] = [check for check in result.checks if check.name == "random snapshot"]
    assert check.observed == (
        f"snapshot {older.short_id} ({older.time:%Y-%m-%d %H:%M} UTC) drawn at random among 3 "
        f"snapshots taken within 30d; the RPO is judged on the newest, snapshot "
        f"{newest.short_id} ({newest.time:%Y-%m-%d %H:%M} UTC)"
    )


def test_no_snapshot_within_the_window_is_an_error_naming_the_window_and_the_newest_age(
    fake_registries, restic_environment, drill_series, tmp_path
):
    source = {
        "type": "restic",
        "repository": str(restic_environment.path),
        "password_env": PASSWORD_VARIABLE,
        "snapshot": {"tags": ["drill"], "random_within": "1h"},
    }

    result = run(tmp_path, source, {"rto": "15m", "rpo": "26h"}, 1)

    assert (result.status, result.reason) == (
        "error",
        f"no snapshot in {restic_environment.path} matching tags drill was taken within 1h: "
        f"the newest, {drill_series[-1].short_id}, is 2h old",
    )
    # the sandbox was starting meanwhile
    assert set(result.phases) == {"preflight", "select", "sandbox", "teardown"}

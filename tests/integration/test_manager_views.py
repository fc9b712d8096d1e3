"""The manager's views on real SQLite histories: status, history filters, metrics, the
configuration file, and the history's own safety (upgrades, newer releases, mistyped paths)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from restore_tests.history.store import SCHEMA_REVISION, HistoryStore
from tests.conftest import run_cli
from tests.history_helpers import bulk_history, record, scenario_file

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent.parent / "data"
NOW = datetime.now(UTC)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    return scenarios


@pytest.fixture
def store(history_url: str) -> HistoryStore:
    return HistoryStore(history_url)


def status_rows(shown: str) -> dict[str, str]:
    """scenario -> its whole line in the status table."""
    return {line.split()[0]: line for line in shown.splitlines()[2:] if line and line[0] != " "}


def status_json(history_url: str, *arguments: str) -> dict[str, dict[str, object]]:
    """The status as JSON, run where no ./scenarios folder is (or with the one given)."""
    shown = run_cli(
        "status", "--db", history_url, "--json", *arguments, cwd=Path(history_url[10:]).parent
    )
    return {row["scenario"]: row for row in json.loads(shown.stdout)["scenarios"]}


def test_status_shows_ok_failing_overdue_and_never_tested_and_exits_1(
    folder: Path, store: HistoryStore, history_url: str
) -> None:
    for name in ("proven", "broken", "stale", "untested"):
        scenario_file(folder, name, client="acme", every="30d")
    shas = {p.stem: _content_sha(folder, p.stem) for p in folder.glob("*.yaml")}
    record(store, "proven", NOW - timedelta(days=2), sha256=shas["proven"])
    record(store, "broken", NOW - timedelta(days=20), sha256=shas["broken"])
    record(store, "broken", NOW - timedelta(days=1), status="fail", sha256=shas["broken"])
    record(store, "stale", NOW - timedelta(days=45), sha256=shas["stale"])

    shown = run_cli("status", str(folder), "--db", history_url)

    assert shown.returncode == 1, shown.stderr
    rows = status_rows(shown.stdout)
    assert rows["proven"].split()[2] == "OK" and "2d ago" in rows["proven"]
    assert "FAILING" in rows["broken"] and "1 file differs from SHA256SUMS: a.bin" in rows["broken"]
    assert "OVERDUE" in rows["stale"] and "overdue by 15d" in rows["stale"]
    assert (
        "NEVER TESTED" in rows["untested"]
        and "no run in the history (every 30d)" in rows["untested"]
    )
    assert "4 scenarios: 1 ok, 1 failing, 1 overdue, 1 never tested" in shown.stdout


def _content_sha(folder: Path, name: str) -> str:
    from restore_tests.scenario import load_paths

    return load_paths([folder / f"{name}.yaml"])[0].origin.content_sha256


def test_status_exits_0_when_everything_is_proven_in_time(
    folder: Path, store: HistoryStore, history_url: str
) -> None:
    scenario_file(folder, "share")
    record(store, "share", NOW - timedelta(days=3), sha256=_content_sha(folder, "share"))

    shown = run_cli("status", str(folder), "--db", history_url)

    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "1 scenarios: 1 ok, 0 failing, 0 overdue, 0 never tested" in shown.stdout
    assert re.search(r"due in 8[89]d\w* \(every 92d\)", shown.stdout)  # the default: 92 days


def test_a_scenario_changed_since_its_last_pass_says_so(
    folder: Path, store: HistoryStore, history_url: str
) -> None:
    scenario_file(folder, "share")
    record(store, "share", NOW - timedelta(days=3), sha256=_content_sha(folder, "share"))
    scenario_file(folder, "share", extra="description: the check was weakened")

    rows = status_json(history_url, str(folder))

    assert rows["share"]["changed_since_pass"] is True
    shown = run_cli("status", str(folder), "--db", history_url)
    assert "scenario changed since its last pass" in status_rows(shown.stdout)["share"]


def test_a_renamed_scenario_starts_never_tested_and_its_old_history_stays_under_the_old_name(
    folder: Path, store: HistoryStore, history_url: str
) -> None:
    record(store, "old-share", NOW - timedelta(days=3))
    scenario_file(folder, "new-share")

    shown = run_cli("status", str(folder), "--db", history_url)

    assert "NEVER TESTED" in status_rows(shown.stdout)["new-share"]
    assert "old-share" not in status_rows(shown.stdout)
    assert "in the history but not in the folder (renamed or removed): old-share" in shown.stdout
    history = run_cli("history", "--db", history_url, "--scenario", "old-share")
    assert history.returncode == 0 and "old-share" in history.stdout


def test_the_rto_trend_compares_with_the_previous_quarters_passes(
    store: HistoryStore, history_url: str
) -> None:
    record(store, "db", datetime(2026, 8, 1, tzinfo=UTC), rto=100.0)
    record(store, "db", datetime(2026, 9, 1, tzinfo=UTC), rto=140.0)
    record(store, "db", datetime(2026, 9, 15, tzinfo=UTC), status="fail", rto=900.0)
    record(store, "db", datetime(2026, 11, 1, tzinfo=UTC), rto=150.0)

    rows = status_json(history_url)

    trend = rows["db"]["rto_trend"]
    assert trend == {"previous_quarter": "2026-Q3", "previous_mean_seconds": 120.0, "change": 0.25}
    shown = run_cli("status", "--db", history_url, cwd=Path(history_url[10:]).parent)
    assert "2m30s / 15m (+25% vs 2026-Q3)" in shown.stdout


def test_an_empty_history_shows_every_scenario_never_tested(
    folder: Path, store: HistoryStore, history_url: str
) -> None:
    scenario_file(folder, "share")

    shown = run_cli("status", str(folder), "--db", history_url)

    assert shown.returncode == 1
    assert "1 scenarios: 0 ok, 0 failing, 0 overdue, 1 never tested" in shown.stdout
    assert run_cli("history", "--db", history_url).stdout.strip() == "no results in the history yet"


def test_a_client_with_no_scenarios_is_a_usage_error_naming_the_clients(
    folder: Path, store: HistoryStore, history_url: str
) -> None:
    scenario_file(folder, "share", client="acme")

    shown = run_cli("status", str(folder), "--db", history_url, "--client", "globex")

    assert shown.returncode == 2
    assert shown.stderr.strip() == (
        "restore-tests: no scenario in the scenario folder has client 'globex' (clients: acme)"
    )


def test_history_filters_by_period_status_client_tag_and_trigger(
    store: HistoryStore, history_url: str
) -> None:
    record(store, "a", NOW - timedelta(days=40), client="acme")
    record(store, "b", NOW - timedelta(days=10), client="globex", status="fail")
    record(store, "c", NOW - timedelta(days=5), client="acme")

    def shown(*arguments: str) -> list[str]:
        result = run_cli("history", "--db", history_url, "--format", "json", *arguments)
        assert result.returncode == 0, result.stderr
        return [row["scenario"] for row in json.loads(result.stdout)]

    assert shown() == ["c", "b", "a"]
    assert shown("--since", "30d") == ["c", "b"]
    assert shown("--until", (NOW - timedelta(days=7)).date().isoformat()) == ["b", "a"]
    assert shown("--status", "fail") == ["b"]
    assert shown("--client", "acme") == ["c", "a"]
    assert shown("--trigger", "drill") == ["c", "b", "a"]
    assert shown("--trigger", "check") == []


def test_history_refuses_a_future_or_unparsable_since_and_two_formats(history_url: str) -> None:
    HistoryStore(history_url)
    future = run_cli("history", "--db", history_url, "--since", "2999-01-01")
    garbled = run_cli("history", "--db", history_url, "--since", "last tuesday")
    both = run_cli("history", "--db", history_url, "--format", "csv", "--json")
    backwards = run_cli("history", "--db", history_url, "--since", "30d", "--until", "60d")

    assert (future.returncode, future.stderr.strip()) == (
        2,
        "restore-tests: --since 2999-01-01 is in the future (2999-01-01 00:00 UTC)",
    )
    assert garbled.returncode == 2 and "--since 'last tuesday' is not a date" in garbled.stderr
    assert both.returncode == 2 and "--json and --format csv ask for two formats" in both.stderr
    assert backwards.returncode == 2 and "--until must come after --since" in backwards.stderr


def test_history_of_a_scenario_with_no_runs_says_so(store: HistoryStore, history_url: str) -> None:
    record(store, "share", NOW - timedelta(days=1))

    shown = run_cli("history", "--db", history_url, "--scenario", "nope")

    assert shown.returncode == 2
    assert f"scenario 'nope' has no runs in {history_url}" in shown.stderr


def test_read_only_commands_never_create_a_history_at_a_mistyped_path(tmp_path: Path) -> None:
    for command in (["history"], ["status"], ["metrics", "-o", "-"]):
        shown = run_cli(*command, "--db", str(tmp_path / "reslts.db"), cwd=tmp_path)

        assert shown.returncode == 2, command
        assert "no history database at sqlite:///" in shown.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_plain_file_path_is_accepted_for_the_history(
    store: HistoryStore, history_url: str
) -> None:
    record(store, "share", NOW - timedelta(days=1))
    path = history_url.removeprefix("sqlite:///")

    shown = run_cli("history", "--db", path)

    assert shown.returncode == 0 and "share" in shown.stdout


def test_a_history_made_by_the_previous_release_is_upgraded_in_place(tmp_path: Path) -> None:
    copy = tmp_path / "history.db"
    shutil.copy(DATA / "history-0002.db", copy)

    shown = run_cli("history", "--db", str(copy), "--format", "json")

    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert [(row["scenario"], row["status"]) for row in rows] == [
        ("share", "pass"),
        ("billing-db", "fail"),
        ("share", "pass"),
    ]
    assert rows[1]["reason"] == "RTO 4m12s exceeds target 2m"
    assert rows[0]["client"] == "" and rows[0]["rto_applies_to"] == "restored"
    with sqlite3.connect(copy) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (SCHEMA_REVISION,)
        ]


def test_a_history_made_by_a_newer_release_is_refused_with_exit_3(
    store: HistoryStore, history_url: str
) -> None:
    path = history_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0099'")

    shown = run_cli("history", "--db", history_url)

    assert shown.returncode == 3
    assert "was made by a newer version of restore-tests (schema 0099; this version" in shown.stderr
    assert "upgrade restore-tests to read or write it" in shown.stderr
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("0099",)
        ]


def test_metrics_writes_a_prometheus_file_atomically_with_one_sample_per_scenario(
    folder: Path, store: HistoryStore, history_url: str, tmp_path: Path
) -> None:
    scenario_file(folder, "share", client="acme")
    scenario_file(folder, "crm", client="acme")
    record(store, "share", NOW - timedelta(days=1), sha256=_content_sha(folder, "share"), rto=41.0)
    target = tmp_path / "restore_tests.prom"

    shown = run_cli("metrics", str(folder), "--db", history_url, "-o", str(target))

    assert shown.returncode == 0 and shown.stdout.strip() == f"wrote {target} (2 scenarios)"
    text = target.read_text()
    assert 'restore_tests_last_pass{client="acme",kind="files",scenario="share"} 1.0' in text
    assert 'restore_tests_never_tested{client="acme",kind="files",scenario="crm"} 1.0' in text
    assert 'restore_tests_rto_seconds{client="acme",kind="files",scenario="share"} 41.0' in text
    assert (
        'restore_tests_rto_target_seconds{client="acme",kind="files",scenario="share"} 900.0'
        in text
    )
    assert "# TYPE restore_tests_last_success_age_seconds gauge" in text
    assert (
        'restore_tests_last_success_timestamp_seconds{client="acme",kind="files",scenario="crm"}'
        not in text
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "history.db",
        "restore_tests.prom",
        "scenarios",
    ]


def test_the_configuration_file_gives_the_history_location_to_every_command(
    store: HistoryStore, history_url: str, tmp_path: Path
) -> None:
    record(store, "share", NOW - timedelta(days=1))
    (tmp_path / "restore-tests.toml").write_text(
        f'[tool.restore-tests]\ndb = "{history_url}"\n\n[tool.restore-tests.history]\nlimit = 1\n'
    )

    no_variable = {"RESTORE_TESTS_DB": ""}  # the file's value, not the tests' default
    shown = run_cli("history", "--format", "json", cwd=tmp_path, env=no_variable)

    assert shown.returncode == 0, shown.stderr
    assert [row["scenario"] for row in json.loads(shown.stdout)] == ["share"]
    (tmp_path / "restore-tests.toml").write_text("[tool.restore-tests]\ndatabase = 'x'\n")
    typo = run_cli("history", cwd=tmp_path, env=no_variable)
    assert typo.returncode == 2
    assert typo.stderr.strip() == "restore-tests: configuration: unknown option 'database'"


def test_status_and_history_read_a_26000_result_history(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    bulk_history(url)

    status = run_cli("status", "--db", url, "--json", cwd=tmp_path)
    history = run_cli("history", "--db", url, "--client", "client-3", "--limit", "3", cwd=tmp_path)

    document = json.loads(status.stdout)
    assert len(document["scenarios"]) == 100
    assert all(row["rto_trend"] is not None for row in document["scenarios"])
    assert len(history.stdout.splitlines()) == 5 and "client-3" not in history.stdout


class ClosedPipe(io.TextIOBase):
    """stdout after its reader left (`restore-tests history | head -1`)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self) -> int:
        return os.open(os.devnull, os.O_WRONLY)


def test_a_reader_that_leaves_early_is_no_internal_error(
    store: HistoryStore,
    history_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import cli

    record(store, "share", NOW - timedelta(days=1))
    monkeypatch.setattr(os, "dup2", lambda source, target: None)  # not the test's own stdout
    monkeypatch.setattr(sys, "stdout", ClosedPipe())

    with pytest.raises(SystemExit) as exited:
        cli.main(["history", "--db", history_url], prog_name="restore-tests")

    assert exited.value.code == 1
    assert capsys.readouterr().err == ""


def test_metrics_to_a_folder_that_cannot_be_written_is_exit_3_and_leaves_nothing(
    store: HistoryStore, history_url: str, tmp_path: Path
) -> None:
    record(store, "share", NOW - timedelta(days=1))
    target = tmp_path / "missing" / "restore_tests.prom"

    shown = run_cli("metrics", "--db", history_url, "-o", str(target), cwd=tmp_path)

    assert shown.returncode == 3
    assert shown.stderr == f"restore-tests: could not write {target}: No such file or directory\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["history.db"]

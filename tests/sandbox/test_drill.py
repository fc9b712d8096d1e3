"""`restore-tests drill`, lookups by name, `history` and `prune`, through the real command line."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from restore_tests.history.store import HistoryStore
from tests.conftest import (
    PASSWORD,
    PASSWORD_VARIABLE,
    ROOT,
    Repository,
    assert_no_leftovers,
    managed_containers,
    run_cli,
    write_scenario,
)

pytestmark = pytest.mark.sandbox

MISSING_MANIFEST = "  manifest: /data/compta/MISSING.sums\n"
SUMMARY = re.compile(
    r"^drill (\S+): 3 scenarios, 2 passed, 1 failed, 0 errors in \S+; history in (.+)$"
)
SANDBOX_IMAGE = "restore-tests/sandbox:bookworm"


def environment(repository: Repository) -> dict[str, str]:
    return {PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": repository.binary}


def cells(line: str) -> list[str]:
    """The cells of one row of a tabulate "simple" table (columns are 2+ spaces apart)."""
    return re.split(r"\s{2,}", line.strip())


@pytest.fixture
def scenarios(repository: Repository, tmp_path: Path) -> Path:
    """alpha and bravo pass; charlie fails (its manifest is not in the snapshot)."""
    folder = tmp_path / "scenarios"
    folder.mkdir()
    location = str(repository.path)
    write_scenario(folder, "alpha", location, extra="tags: [weekly, acme]\n")
    write_scenario(folder, "bravo", location, extra="tags: [nightly]\n")
    write_scenario(folder, "charlie", location, verify=MISSING_MANIFEST, extra="tags: [weekly]\n")
    return folder


def missing_manifest_reason(repository: Repository) -> str:
    return (
        "manifest /data/compta/MISSING.sums is not in the restored data (snapshot "
        f"{repository.snapshot_id[:8]} holds /data)"
    )


def test_a_drill_prints_verdicts_a_table_and_a_summary_and_records_one_drill(
    repository, scenarios, history_url
):
    result = run_cli(
        "drill", str(scenarios), "--jobs", "2", "--db", history_url, env=environment(repository)
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 11, result.stdout
    verdicts = {line.split()[1]: line for line in lines[:3]}  # in the order they finished
    assert sorted(verdicts) == ["alpha", "bravo", "charlie"]
    for name in ("alpha", "bravo"):
        assert verdicts[name].startswith(f"PASS  {name}  RTO "), verdicts[name]
        assert " / 15m  RPO " in verdicts[name] and " / 26h  " in verdicts[name]
    assert verdicts["charlie"] == f"FAIL  charlie  {missing_manifest_reason(repository)}"
    assert lines[3] == ""
    header, rule, *rows = lines[4:9]
    assert cells(header) == [
        "scenario",
        "status",
        "RTO / target",
        "RPO / target",
        "files",
        "reason",
    ]
    assert set(rule) <= {"-", " "}
    assert [cells(row)[:2] for row in rows] == [
        ["alpha", "PASS"],
        ["bravo", "PASS"],
        ["charlie", "FAIL"],
    ]
    for row in rows:
        assert cells(row)[2].endswith(" / 15m") and cells(row)[3].endswith(" / 26h")
    assert "manifest /data/compta/MISSING.sums is not in the restored" in rows[2]
    assert lines[9] == ""
    summary = SUMMARY.match(lines[10])
    assert summary, lines[10]
    run_id = summary[1]
    assert summary[2] == history_url
    store = HistoryStore(history_url)
    [drill] = store.drills()
    assert (drill.run_id, drill.trigger, drill.status) == (run_id, "drill", "fail")
    assert drill.reason == "2 passed, 1 failed, 0 errors" and drill.finished_at is not None
    results = {row.scenario: row for row in store.results(limit=None)}
    assert {name: row.status for name, row in results.items()} == {
        "alpha": "pass",
        "bravo": "pass",
        "charlie": "fail",
    }
    assert {row.drill.run_id for row in results.values()} == {run_id}
    # --jobs 2: the first two scenarios ran side by side.
    alpha, bravo = results["alpha"], results["bravo"]
    assert alpha.started_at < bravo.finished_at and bravo.started_at < alpha.finished_at
    assert_no_leftovers()


def test_a_tag_selects_its_scenarios_and_an_unknown_tag_is_a_usage_error(
    repository, scenarios, history_url
):
    result = run_cli(
        "drill",
        str(scenarios),
        "--tag",
        "nightly",
        "--json",
        "--db",
        history_url,
        env=environment(repository),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert [record["scenario"] for record in json.loads(result.stdout)["results"]] == ["bravo"]
    assert [row.scenario for row in HistoryStore(history_url).results()] == ["bravo"]
    unknown = run_cli(
        "drill",
        str(scenarios),
        "--tag",
        "quarterly",
        "--db",
        history_url,
        env=environment(repository),
    )
    assert unknown.returncode == 2
    assert "no scenario has the tag(s) quarterly" in unknown.stderr
    assert unknown.stdout == ""
    assert len(HistoryStore(history_url).drills()) == 1  # the usage error ran and recorded nothing
    assert_no_leftovers()


def test_drill_json_has_the_documented_fields_for_pass_fail_and_error(
    repository, scenarios, tmp_path, history_url
):
    (scenarios / "bravo.yaml").unlink()
    nowhere = tmp_path / "no-repository-here"
    write_scenario(scenarios, "delta", str(nowhere))
    result = run_cli(
        "drill",
        str(scenarios),
        "--jobs",
        "3",
        "--json",
        "--db",
        history_url,
        env=environment(repository),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    document = json.loads(result.stdout)  # nothing but the JSON document on stdout
    assert set(document) == {"schema_version", "run_id", "status", "exit_code", "results"}
    assert document["status"] == "error" and document["exit_code"] == 1
    [drill] = HistoryStore(history_url).drills()
    assert drill.run_id == document["run_id"]
    records = {record["scenario"]: record for record in document["results"]}
    assert list(records) == ["alpha", "charlie", "delta"]
    for record in records.values():
        assert {"scenario", "status", "reason", "rto_seconds", "rpo_seconds"} <= set(record)
        assert record["status"] in ("pass", "fail", "error")
    alpha, charlie, delta = records["alpha"], records["charlie"], records["delta"]
    assert (alpha["status"], alpha["reason"]) == ("pass", "")
    assert alpha["rto_seconds"] > 0 and alpha["rpo_seconds"] >= 0
    assert (charlie["status"], charlie["reason"]) == ("fail", missing_manifest_reason(repository))
    assert charlie["rto_seconds"] > 0 and charlie["rpo_seconds"] >= 0
    assert (delta["status"], delta["reason"]) == ("error", f"restic: no repository at {nowhere}")
    assert delta["rto_seconds"] is None and delta["rpo_seconds"] is None
    assert_no_leftovers()


def test_check_finds_a_scenario_by_its_name_and_an_unknown_name_lists_the_known_ones(
    repository, scenarios, tmp_path, history_url
):
    # The name inside the file counts, not the file name.
    (scenarios / "alpha.yaml").rename(scenarios / "10-first.yaml")
    result = run_cli(
        "check",
        "alpha",
        "--scenarios-dir",
        str(scenarios),
        "--db",
        history_url,
        env=environment(repository),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PASS  alpha  RTO ")
    [row] = HistoryStore(history_url).results()
    assert row.scenario_path == str(scenarios / "10-first.yaml")
    assert row.drill.trigger == "check"
    unknown = run_cli(
        "check",
        "zulu",
        "--scenarios-dir",
        str(scenarios),
        "--db",
        history_url,
        env=environment(repository),
        cwd=tmp_path,
    )
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        f"invalid scenario: zulu: no such file, and no scenario of that name in {scenarios} "
        "(known: alpha, bravo, charlie)"
    )
    assert len(HistoryStore(history_url).results()) == 1
    assert_no_leftovers()


def test_history_shows_results_newest_first_as_table_csv_and_json(
    repository, scenarios, history_url
):
    HistoryStore(history_url)  # an empty history (history never creates one)
    assert run_cli("history", "--db", history_url).stdout == "no results in the history yet\n"
    for name in ("alpha", "charlie"):
        ran = run_cli(
            "check",
            str(scenarios / f"{name}.yaml"),
            "--db",
            history_url,
            env=environment(repository),
        )
        assert ran.returncode == (0 if name == "alpha" else 1), ran.stdout + ran.stderr

    table = run_cli("history", "--db", history_url, "--format", "table")
    assert table.returncode == 0, table.stderr
    header, rule, *rows = table.stdout.splitlines()
    assert cells(header)[0] == "scenario" and re.fullmatch(r"when \(\S+\)", cells(header)[1])
    assert cells(header)[2:] == ["status", "RTO / target", "RPO / target", "reason"]
    assert set(rule) <= {"-", " "} and len(rows) == 2
    newest, oldest = cells(rows[0]), cells(rows[1])
    assert (newest[0], newest[2], oldest[0], oldest[2]) == ("charlie", "FAIL", "alpha", "PASS")
    for row in (newest, oldest):
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", row[1])
        assert row[3].endswith(" / 15m") and row[4].endswith(" / 26h")
    assert newest[5].startswith("manifest /data/compta/MISSING.sums is not in the restored data")
    assert len(oldest) == 5  # no reason for a pass
    assert run_cli("history", "--db", history_url).stdout == table.stdout  # table is the default

    as_csv = run_cli("history", "--db", history_url, "--format", "csv")
    assert as_csv.stdout.splitlines()[0] == (
        "scenario,kind,status,reason,run_id,started_at,snapshot_id,snapshot_time,rto_seconds,"
        "rto_target_seconds,rto_status,rpo_seconds,rpo_target_seconds,rpo_status,files,bytes"
    )
    parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(row["scenario"], row["status"]) for row in parsed] == [
        ("charlie", "fail"),
        ("alpha", "pass"),
    ]
    assert parsed[1]["rto_target_seconds"] == "900.0" and float(parsed[1]["rto_seconds"]) > 0
    assert parsed[0]["reason"] == missing_manifest_reason(repository)

    as_json = run_cli("history", "--db", history_url, "--format", "json")
    assert run_cli("history", "--db", history_url, "--json").stdout == as_json.stdout
    records = json.loads(as_json.stdout)
    assert [(record["scenario"], record["status"]) for record in records] == [
        ("charlie", "fail"),
        ("alpha", "pass"),
    ]
    for record in records:
        assert {"scenario", "status", "reason", "rto_seconds", "rpo_seconds"} <= set(record)
        assert record["rto_seconds"] > 0 and record["rpo_seconds"] >= 0
    assert records[0]["reason"] == missing_manifest_reason(repository)

    only_alpha = json.loads(
        run_cli("history", "--db", history_url, "--scenario", "alpha", "--json").stdout
    )
    assert [record["scenario"] for record in only_alpha] == ["alpha"]
    newest_only = json.loads(
        run_cli("history", "--db", history_url, "--limit", "1", "--json").stdout
    )
    assert [record["scenario"] for record in newest_only] == ["charlie"]
    assert_no_leftovers()


def start_drill(folder: Path, history_url: str, repository: Repository) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "drill", str(folder), "--db", history_url, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **environment(repository)},
    )


def test_two_drills_writing_to_one_sqlite_file_at_once_are_both_recorded(
    repository, scenarios, history_url
):
    (scenarios / "charlie.yaml").unlink()
    processes = [start_drill(scenarios, history_url, repository) for _ in range(2)]
    try:
        outputs = [process.communicate(timeout=600) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stdout + stderr
    run_ids = {json.loads(stdout)["run_id"] for stdout, _ in outputs}
    assert len(run_ids) == 2
    store = HistoryStore(history_url)
    assert {(drill.run_id, drill.status) for drill in store.drills()} == {
        (run_id, "pass") for run_id in run_ids
    }
    recorded = sorted((row.drill.run_id, row.scenario) for row in store.results(limit=None))
    assert recorded == sorted((run_id, name) for run_id in run_ids for name in ("alpha", "bravo"))
    assert_no_leftovers()


def test_prune_all_removes_the_sandbox_and_staging_a_kept_run_left(
    repository, scenarios, history_url
):
    kept = run_cli(
        "check",
        str(scenarios / "alpha.yaml"),
        "--keep",
        "--json",
        "--db",
        history_url,
        env=environment(repository),
    )
    assert kept.returncode == 0, kept.stdout + kept.stderr
    run_id = json.loads(kept.stdout)["run_id"]
    run_label = f"restore-tests.run={run_id}"
    [container] = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}}", "--filter", f"label={run_label}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # Named by the run, never by the scenario (a name must not carry control meaning).
    [staging] = Path(os.environ["RESTORE_TESTS_WORK_DIR"]).glob(f"{run_id}-*")
    assert "alpha" not in staging.name
    assert container in managed_containers() and staging.is_dir()

    fresh_only = run_cli("prune", "--dry-run")
    assert fresh_only.returncode == 0, fresh_only.stderr
    assert run_id not in fresh_only.stdout  # not past its expiry (6 h): not listed
    everything = run_cli("prune", "--all", "--dry-run")
    assert everything.returncode == 0, everything.stderr
    listed = everything.stdout.splitlines()
    assert f"would remove container {container} (run {run_id})" in listed
    assert f"would remove staging {staging}" in listed
    assert container in managed_containers() and staging.is_dir()  # a dry run removes nothing

    others = [name for name in managed_containers() if name != container]
    if others:  # prune --all would remove another run's sandboxes on this engine
        run_cli("prune", "--run", run_id)
        pytest.skip(f"other restore-tests sandboxes are running here: {others}")
    removed = run_cli("prune", "--all")
    assert removed.returncode == 0, removed.stderr
    assert f"removed container {container} (run {run_id})" in removed.stdout.splitlines()
    assert f"removed staging {staging}" in removed.stdout.splitlines()
    assert run_cli("prune", "--all").stdout == "nothing to remove\n"
    assert_no_leftovers()


def create_leftover(run_id: str, expires_at: str) -> str:
    """A stopped container labelled like a sandbox of a run that was killed."""
    name = f"restore-tests-leftover-{run_id}"
    labels = {
        "restore-tests.managed": "true",
        "restore-tests.run": run_id,
        "restore-tests.scenario": "leftover",
        "restore-tests.expires-at": expires_at,
    }
    flags = [
        argument for key, value in labels.items() for argument in ("--label", f"{key}={value}")
    ]
    subprocess.run(
        ["docker", "create", "--name", name, "--network", "none", *flags, SANDBOX_IMAGE, "true"],
        check=True,
        capture_output=True,
    )
    return name


def test_prune_without_all_removes_only_leftovers_past_their_expiry():
    work_dir = Path(os.environ["RESTORE_TESTS_WORK_DIR"])
    token = uuid.uuid4().hex[:6]
    expired_run, live_run = f"20200101T000000Z-{token}", f"20991231T235959Z-{token}"
    created = [
        create_leftover(expired_run, "2020-01-01T06:00:00Z"),
        create_leftover(live_run, "2099-12-31T23:59:59Z"),
    ]
    expired_staging = work_dir / f"{expired_run}-leftover"
    expired_staging.mkdir(parents=True)
    try:
        dry = run_cli("prune", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"would remove container {created[0]} (run {expired_run})" in dry.stdout
        assert f"would remove staging {expired_staging}" in dry.stdout
        assert live_run not in dry.stdout
        pruned = run_cli("prune")
        assert f"removed container {created[0]} (run {expired_run})" in pruned.stdout
        assert f"removed staging {expired_staging}" in pruned.stdout
        assert live_run not in pruned.stdout
        remaining = managed_containers()
        assert created[0] not in remaining and created[1] in remaining
        assert not expired_staging.exists()
        assert f"removed container {created[1]}" in run_cli("prune", "--run", live_run).stdout
    finally:
        subprocess.run(["docker", "rm", "-f", *created], capture_output=True)
    assert_no_leftovers()

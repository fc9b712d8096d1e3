"""What check and drill print for a technician and for a drill nobody watches: restore progress
with both restic versions, --quiet, -qq, --json-lines, the drill's summary line and --keep on a
PASS (real restic, real Docker)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import (
    PASSWORD,
    PASSWORD_VARIABLE,
    Repository,
    assert_no_leftovers,
    history_rows,
    run_cli,
    write_scenario,
)

pytestmark = pytest.mark.sandbox

VERDICT = re.compile(r"^PASS  share  RTO \S+ / 15m  RPO \S+ / 26h  42 files hashed \(18\.0 MiB\)$")
MISSING_MANIFEST = "  manifest: /data/compta/MISSING.sums\n"


def run(repository: Repository, history_url: str, *args: str):
    environment = {PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": repository.binary}
    return run_cli(*args, "--db", history_url, env=environment)


def test_restore_progress_is_shown_in_bytes_percent_rate_and_eta_with_either_restic(
    repository, tmp_path, history_url
):
    """0.18 reports its own progress, 0.14 none: its bytes written are read while it runs.
    Either way the total is the snapshot's size. The download limit makes the restore of 18 MiB
    last about six seconds (how often the percent moves depends on restic's pack sizes)."""
    scenario = write_scenario(
        tmp_path, "share", str(repository.path), source_extra="  limit_download: 3m\n"
    )

    result = run(repository, history_url, "check", str(scenario))

    assert result.returncode == 0, result.stdout + result.stderr
    restored = [line for line in result.stderr.splitlines() if ": restored " in line]
    shown = r"^\[ *\d+\.\ds\] share: restored (\d+)% \([\d.]+ K?M?i?B of 18\.0 MiB(.*)\)$"
    matches = [re.match(shown, line) for line in restored]
    assert len(restored) >= 2 and all(matches), result.stderr
    percents = [int(match[1]) for match in matches if match]
    assert percents == sorted(percents) and len(set(percents)) == len(percents), restored
    rates = [match[2] for match in matches if match and match[2]]
    assert rates and all(re.fullmatch(r", [\d.]+ [KM]iB/s(, ETA \d+s)?", rate) for rate in rates)
    assert "share: fetching snapshot" in result.stderr
    assert VERDICT.match(result.stdout.splitlines()[0]), result.stdout
    assert_no_leftovers()


def test_quiet_prints_the_verdict_line_alone(repository, tmp_path, history_url):
    scenario = write_scenario(tmp_path, "share", str(repository.path))

    result = run(repository, history_url, "check", "-q", str(scenario))

    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert VERDICT.match(line), line
    assert result.stderr == ""
    assert [row["status"] for row in history_rows(history_url)] == ["pass"]
    assert_no_leftovers()


def test_quiet_quiet_prints_nothing_on_stdout_and_only_what_did_not_pass_on_stderr(
    repository, tmp_path, history_url
):
    passing = write_scenario(tmp_path, "share", str(repository.path))
    failing = write_scenario(tmp_path, "broken", str(repository.path), verify=MISSING_MANIFEST)

    quiet = run(repository, history_url, "check", "-qq", str(passing))
    failed = run(repository, history_url, "check", "-qq", str(passing), str(failing))

    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert (failed.returncode, failed.stdout) == (1, "")
    assert failed.stderr.splitlines() == [
        "FAIL  broken  manifest /data/compta/MISSING.sums is not in the restored data "
        f"(snapshot {repository.snapshot_id[:8]} holds /data)"
    ]
    assert sorted(row["status"] for row in history_rows(history_url)) == ["fail", "pass", "pass"]
    assert_no_leftovers()


def test_json_lines_give_one_object_per_scenario_then_a_summary(repository, tmp_path, history_url):
    passing = write_scenario(tmp_path, "share", str(repository.path))
    failing = write_scenario(tmp_path, "broken", str(repository.path), verify=MISSING_MANIFEST)

    result = run(
        repository, history_url, "check", "--json-lines", "-j", "2", str(passing), str(failing)
    )

    assert result.returncode == 1, result.stderr
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(objects) == 3, result.stdout
    *finished, summary = objects
    assert all(each["schema_version"] == 1 for each in objects)
    assert {(each["type"], each["scenario"], each["status"]) for each in finished} == {
        ("result", "share", "pass"),
        ("result", "broken", "fail"),
    }
    assert {each["run_id"] for each in finished} == {summary["run_id"]}
    assert summary["type"] == "summary" and summary["status"] == "fail"
    assert (summary["scenarios"], summary["counts"]) == (2, {"pass": 1, "fail": 1, "error": 0})
    assert (summary["exit_code"], summary["unrecorded"], summary["history"]) == (
        1,
        [],
        history_url,
    )
    assert "share: fetching snapshot" in result.stderr  # progress stays on stderr
    assert_no_leftovers()


def test_a_quiet_drill_prints_its_verdicts_and_its_summary_line_without_the_table(
    repository, tmp_path, history_url
):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    write_scenario(folder, "share", str(repository.path))
    write_scenario(folder, "broken", str(repository.path), verify=MISSING_MANIFEST)

    result = run(repository, history_url, "drill", "-q", str(folder))

    assert result.returncode == 1, result.stderr
    *verdicts, summary = result.stdout.splitlines()
    assert sorted(line.split()[:2] for line in verdicts) == [["FAIL", "broken"], ["PASS", "share"]]
    assert re.fullmatch(
        r"drill (\S+): 2 scenarios, 1 passed, 1 failed, 0 errors in \S+; history in (\S+)",
        summary,
    ), summary
    assert summary.endswith(f"; history in {history_url}")
    assert result.stderr == ""
    assert_no_leftovers()


def test_keep_says_where_the_sandbox_and_staging_are_on_a_pass(
    repository, tmp_path: Path, history_url
):
    scenario = write_scenario(tmp_path, "share", str(repository.path))

    result = run(repository, history_url, "check", "-q", "--keep", str(scenario))

    assert result.returncode == 0, result.stderr
    verdict, kept = result.stdout.splitlines()
    assert VERDICT.match(verdict), verdict
    found = re.fullmatch(
        r"      kept for inspection: sandbox: docker exec -it (restore-tests-(\S+)-share-\S+) sh"
        r" ; staging: (\S+) \(remove with: restore-tests prune --run (\S+)\)",
        kept,
    )
    assert found, kept
    container, run_id, staging = found[1], found[2], Path(found[3])
    assert found[4] == run_id and (staging / "restore" / "data" / "compta").is_dir()
    removed = run_cli("prune", "--run", run_id)
    assert f"removed container {container}" in removed.stdout, removed.stdout
    assert_no_leftovers()

"""`restore-tests drill --random K` on real restic scenarios, Docker and a SQLite history."""

from __future__ import annotations

import pytest

from tests.conftest import (
    PASSWORD,
    PASSWORD_VARIABLE,
    assert_no_leftovers,
    history_rows,
    run_cli,
    write_scenario,
)

pytestmark = pytest.mark.sandbox
ONE_RESTIC = pytest.mark.parametrize("restic_binary", ["0.18"], indirect=True)


@ONE_RESTIC
def test_a_random_drill_of_one_runs_the_scenario_never_proven_and_logs_every_weight(
    repository, tmp_path, history_url
):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    proven = write_scenario(folder, "proven", str(repository.path))
    write_scenario(folder, "unproven", str(repository.path))
    environment = {PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": repository.binary}
    checked = run_cli("check", str(proven), "--db", history_url, env=environment)
    assert checked.returncode == 0, checked.stderr

    drilled = run_cli(
        "-v", "drill", "--random", "1", "--seed", "1", str(folder), "--db", history_url,
        env=environment,
    )  # fmt: skip

    assert drilled.returncode == 0, drilled.stderr
    assert "random choice: 1 of 2: unproven\n" in drilled.stderr
    log = [line for line in drilled.stderr.splitlines() if "restore_tests.selection" in line]
    assert log[0].startswith(
        "INFO restore_tests.selection: proven: weight 0.01 (0.5% of the draw): last passed "
    )
    assert log[0].endswith(" ago, every 92d")
    assert log[1] == (
        "INFO restore_tests.selection: unproven: weight 2.00 (99.5% of the draw): never passed"
    )
    assert log[2] == "INFO restore_tests.selection: chose 1 of 2 at random: unproven"
    verdicts = [line for line in drilled.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert [line.split()[:2] for line in verdicts] == [["PASS", "unproven"]]
    rows = history_rows(history_url)
    assert sorted((row["scenario"], row["status"]) for row in rows) == [
        ("proven", "pass"),
        ("unproven", "pass"),
    ]
    assert_no_leftovers()


def test_seed_without_random_is_a_usage_error(tmp_path, history_url):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    write_scenario(folder, "share", str(tmp_path / "repo"))
    result = run_cli("drill", "--seed", "3", str(folder), "--db", history_url)
    assert result.returncode == 2
    assert "--seed goes with --random" in result.stderr
    assert result.stdout == ""

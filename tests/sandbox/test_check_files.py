"""`restore-tests check` on files scenarios, end to end: real restic, real Docker, real S3."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    PASSWORD,
    PASSWORD_VARIABLE,
    ROOT,
    Repository,
    assert_no_leftovers,
    damage_a_later_chunk_of_a_large_file,
    history_rows,
    run_cli,
    write_scenario,
)

pytestmark = pytest.mark.sandbox


def restic_version(binary: str) -> tuple[int, ...]:
    output = subprocess.run([binary, "version"], capture_output=True, text=True, check=True)
    match = re.search(r"restic (\d+)\.(\d+)", output.stdout)
    assert match, output.stdout
    return (int(match[1]), int(match[2]))


def check(
    scenario: Path,
    repository: Repository,
    history_url: str,
    *args: str,
    env: dict[str, str] | None = None,
):
    return run_cli(
        "check",
        str(scenario),
        "--db",
        history_url,
        *args,
        env={PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": repository.binary, **(env or {})},
    )


def test_a_healthy_backup_passes_with_rto_rpo_and_counts(repository, tmp_path, history_url):
    scenario = write_scenario(
        tmp_path,
        "share",
        str(repository.path),
        verify="  manifest: /data/compta/SHA256SUMS\n"
        "  expect: {min_files: 10, paths: [/data/outside.txt]}\n",
    )
    result = check(scenario, repository, history_url)
    assert result.returncode == 0, result.stderr
    line = result.stdout.splitlines()[0]
    assert line.startswith("PASS  share  RTO ")
    assert " / 15m  RPO " in line and " / 26h  " in line
    assert line.endswith(
        "  42 files hashed (18.0 MiB), 1 expected path present, at least 10 files"
    ), line
    assert "fetching snapshot" in result.stderr  # progress is shown
    [row] = history_rows(history_url)
    assert row["status"] == "pass" and row["snapshot_id"] == repository.snapshot_id
    checks = {check["name"]: check for check in row["checks"]}
    manifest = checks["manifest /data/compta/SHA256SUMS"]
    assert manifest["status"] == "passed"
    # restic 0.17+ names each file it has finished: those are hashed while the rest restores.
    early = re.search(r"([\d,]+) files? hashed while they were fetched", manifest["detail"])
    if restic_version(repository.binary) >= (0, 17):
        assert early and 0 < int(early[1].replace(",", "")) <= 42, manifest["detail"]
    else:
        assert early is None, manifest["detail"]
    assert checks["sandbox file count"]["status"] == "passed"
    assert set(row["phases"]) >= {"preflight", "select", "fetch", "sandbox", "verify", "teardown"}
    assert_no_leftovers()


def test_json_output_has_the_documented_fields(repository, tmp_path, history_url):
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    result = check(scenario, repository, history_url, "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    [record] = document["results"]
    assert record["scenario"] == "share" and record["status"] == "pass"
    assert record["reason"] == ""
    assert record["rto_seconds"] > 0 and record["rpo_seconds"] >= 0
    assert PASSWORD not in result.stdout + result.stderr


def test_a_bit_flip_in_a_data_pack_fails_naming_the_damaged_file(repository, tmp_path, history_url):
    damaged = damage_a_later_chunk_of_a_large_file(repository)
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    result = check(scenario, repository, history_url)
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith(
        f"FAIL  share  restic could not restore 1 file (damaged data): {damaged} (snapshot "
    ), result.stdout
    [row] = history_rows(history_url)
    assert row["status"] == "fail"
    manifest = next(c for c in row["checks"] if c["name"].startswith("manifest"))
    assert manifest["status"] == "failed"
    assert f"1 file differs from SHA256SUMS: {damaged.lstrip('/')} (snapshot" in manifest["reason"]
    assert_no_leftovers()


def backup_changed_copy(repository: Repository, tmp_path: Path, change) -> Path:
    """A new snapshot in the repository of a changed copy of the sample tree."""
    source = tmp_path / "changed"
    shutil.copytree(repository.source_root, source)
    change(source / "data" / "compta")
    subprocess.run(
        [repository.binary, "--no-cache", "backup", "data"],
        cwd=source,
        check=True,
        capture_output=True,
        env={
            "PATH": os.environ["PATH"],
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_REPOSITORY": str(repository.path),
        },
    )
    return source


def test_a_manifest_entry_that_does_not_match_fails_naming_the_file(
    repository, tmp_path, history_url
):
    # The backup is fine; the manifest inside it is wrong about one file.
    def corrupt_first_entry(folder: Path) -> None:
        manifest = folder / "SHA256SUMS"
        lines = manifest.read_text().splitlines()
        lines[0] = "0" * 64 + lines[0][64:]
        manifest.write_text("\n".join(lines) + "\n")

    source = backup_changed_copy(repository, tmp_path, corrupt_first_entry)
    name = (source / "data" / "compta" / "SHA256SUMS").read_text().splitlines()[0][66:]
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    result = check(scenario, repository, history_url)
    assert result.returncode == 1
    assert f"FAIL  share  1 file differs from SHA256SUMS: data/compta/{name} (snapshot " in (
        result.stdout
    )
    [row] = history_rows(history_url)
    assert row["status"] == "fail"
    assert_no_leftovers()


def test_a_manifest_path_missing_from_the_snapshot_fails_naming_it(
    repository, tmp_path, history_url
):
    source = backup_changed_copy(
        repository, tmp_path, lambda folder: (folder / "sub" / "doc-001.txt").unlink()
    )
    assert not (source / "data" / "compta" / "sub" / "doc-001.txt").exists()
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    result = check(scenario, repository, history_url)
    assert result.returncode == 1
    assert "FAIL  share  1 missing: data/compta/sub/doc-001.txt (snapshot " in result.stdout
    [row] = history_rows(history_url)
    assert row["status"] == "fail" and "1 missing: data/compta/sub/doc-001.txt" in row["reason"]
    assert_no_leftovers()


def test_a_manifest_that_is_not_in_the_snapshot_fails(repository, tmp_path, history_url):
    scenario = write_scenario(
        tmp_path, "share", str(repository.path), verify="  manifest: /data/compta/MISSING.sums\n"
    )
    result = check(scenario, repository, history_url)
    assert result.returncode == 1
    assert (
        "manifest /data/compta/MISSING.sums is not in the restored data (snapshot "
        f"{repository.snapshot_id[:8]} holds /data)" in result.stdout
    )
    assert_no_leftovers()


def test_a_wrong_password_is_an_error_naming_the_repository(repository, tmp_path, history_url):
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    result = check(scenario, repository, history_url, env={PASSWORD_VARIABLE: "wrong-password"})
    assert result.returncode == 1
    assert result.stdout.strip() == (
        f"ERROR share  restic: wrong password for repository {repository.path}"
    )
    assert "wrong-password" not in result.stdout + result.stderr
    [row] = history_rows(history_url)
    assert row["status"] == "error" and "wrong password" in row["reason"]
    assert_no_leftovers()


def test_a_missing_password_variable_is_an_error_naming_it(repository, tmp_path, history_url):
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    environment = {key: value for key, value in os.environ.items() if key != PASSWORD_VARIABLE}
    completed = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "check", str(scenario), "--db", history_url],
        capture_output=True,
        text=True,
        env={**environment, "RESTIC_BINARY": repository.binary},
    )
    assert completed.returncode == 1
    assert completed.stdout.strip() == (
        f"ERROR share  source.password_env: environment variable {PASSWORD_VARIABLE} is not set"
    )
    assert_no_leftovers()


def test_no_repository_at_the_path_is_an_error(repository, tmp_path, history_url):
    scenario = write_scenario(tmp_path, "share", str(tmp_path / "nothing-here"))
    result = check(scenario, repository, history_url)
    assert result.returncode == 1
    assert result.stdout.strip() == (
        f"ERROR share  restic: no repository at {tmp_path / 'nothing-here'}"
    )
    assert_no_leftovers()


def test_a_selector_matching_no_snapshot_is_an_error(repository, tmp_path, history_url):
    scenario = write_scenario(
        tmp_path,
        "share",
        str(repository.path),
        source_extra="  snapshot: {tags: [weekly], host: fs01}\n",
    )
    result = check(scenario, repository, history_url)
    assert result.returncode == 1
    assert result.stdout.strip() == (
        f"ERROR share  no snapshot in {repository.path} matches tags weekly, host fs01"
    )
    unknown = write_scenario(
        tmp_path, "by-id", str(repository.path), source_extra="  snapshot: deadbeef\n"
    )
    result = check(unknown, repository, history_url)
    assert result.stdout.strip() == f"ERROR by-id  no snapshot 'deadbeef' in {repository.path}"
    assert_no_leftovers()


def test_a_snapshot_selected_by_filter_and_id_prefix_passes(repository, tmp_path, history_url):
    by_filter = write_scenario(
        tmp_path,
        "by-filter",
        str(repository.path),
        source_extra="  snapshot: {tags: [nightly], host: fs01}\n",
    )
    by_id = write_scenario(
        tmp_path,
        "by-id",
        str(repository.path),
        # quoted: an id prefix of digits only (1% of snapshots) would be a YAML number
        source_extra=f"  snapshot: '{repository.snapshot_id[:10]}'\n",
    )
    result = run_cli(
        "check",
        str(by_filter),
        str(by_id),
        "--db",
        history_url,
        env={PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": repository.binary},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert [row["snapshot_id"] for row in history_rows(history_url)] == [repository.snapshot_id] * 2


def test_rto_and_rpo_targets_that_are_too_tight_fail_with_the_numbers(
    repository, tmp_path, history_url
):
    scenario = write_scenario(
        tmp_path, "tight", str(repository.path), objectives="  rto: 0.001s\n  rpo: 0.001s\n"
    )
    result = check(scenario, repository, history_url)
    assert result.returncode == 1
    line = result.stdout.splitlines()[0]
    assert line.startswith("FAIL  tight  RTO ") and "exceeds target 0.0s" in line
    assert "snapshot is " in line and "old, RPO is 0.0s" in line
    [row] = history_rows(history_url)
    assert row["rto_status"] == "failed" and row["rpo_status"] == "failed"


def test_a_zero_entry_manifest_proves_nothing_and_fails(repository, tmp_path, history_url):
    scenario = write_scenario(
        tmp_path, "weak", str(repository.path), verify="  expect: {min_files: 0}\n"
    )
    result = check(scenario, repository, history_url)
    assert result.returncode == 1
    assert "no check proved the data" in result.stdout


def test_sandbox_commands_run_isolated_and_their_failure_fails(repository, tmp_path, history_url):
    extra = (
        "sandbox:\n  commands:\n"
        "    - [sh, -c, 'test -r /restore/data/compta/SHA256SUMS']\n"
        "    - [sh, -c, 'touch /restore/x 2>/dev/null && echo writable || echo read-only']\n"
        "    - [sh, -c, 'cat /sys/class/net/*/address | wc -l; exit 3']\n"
    )
    scenario = write_scenario(tmp_path, "cmds", str(repository.path), extra=extra)
    result = check(scenario, repository, history_url)
    assert result.returncode == 1
    assert "sandbox command sh exited 3: 1" in result.stdout  # only the loopback interface
    [row] = history_rows(history_url)
    outputs = [c["detail"] for c in row["checks"] if c["name"].startswith("sandbox: ")]
    assert outputs[1] == "read-only"
    assert_no_leftovers()


def test_keep_leaves_the_sandbox_and_prune_removes_it(repository, tmp_path, history_url):
    scenario = write_scenario(tmp_path, "kept", str(repository.path))
    result = check(scenario, repository, history_url, "--keep", "--json")
    record = json.loads(result.stdout)["results"][0]
    run_id = json.loads(result.stdout)["run_id"]
    assert f"docker exec -it restore-tests-{run_id}-kept-" in record["kept"]
    dry = run_cli("prune", "--run", run_id, "--dry-run")
    assert dry.returncode == 0
    assert f"would remove container restore-tests-{run_id}-kept-" in dry.stdout
    removed = run_cli("prune", "--run", run_id)
    assert "removed container" in removed.stdout and "removed staging" in removed.stdout
    assert_no_leftovers()


def test_a_local_repositorys_listing_starts_before_docker_is_reached_and_runs_once(
    repository, tmp_path, history_url
):
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    result = run_cli(
        "-vv",
        "check",
        str(scenario),
        "--db",
        history_url,
        env={PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": repository.binary},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    listings = [i for i, line in enumerate(lines) if "run: " in line and " snapshots " in line]
    docker = [i for i, line in enumerate(lines) if "/_ping" in line or "/version" in line]
    assert len(listings) == 1, listings
    assert docker and listings[0] < docker[0]

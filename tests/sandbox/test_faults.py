"""Faults that must end in a clear verdict, the right exit code, a history row, and no leftovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import (
    PASSWORD,
    PASSWORD_VARIABLE,
    ROOT,
    assert_no_leftovers,
    history_rows,
    remaining,
    restic,
    run_cli,
    write_scenario,
)

pytestmark = pytest.mark.sandbox


def environment(repository, **extra: str) -> dict[str, str]:
    return {PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": repository.binary, **extra}


def test_a_damaged_index_fails_the_scenario_as_a_damaged_repository(
    repository, tmp_path, history_url
):
    index = repository.index_files()[0]
    content = bytearray(index.read_bytes())
    content[len(content) // 2] ^= 0xFF
    index.chmod(0o644)
    index.write_bytes(bytes(content))
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    result = run_cli("check", str(scenario), "--db", history_url, env=environment(repository))
    assert result.returncode == 1
    assert result.stdout.startswith(
        f"FAIL  share  restic: the repository {repository.path} is damaged: "
    ), result.stdout
    [row] = history_rows(history_url)
    assert row["status"] == "fail"
    assert_no_leftovers()


def test_a_deleted_pack_fails_naming_the_files_it_held(repository, tmp_path, history_url):
    largest = max(repository.data_packs(), key=lambda pack: pack.stat().st_size)
    largest.unlink()
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    result = run_cli("check", str(scenario), "--db", history_url, env=environment(repository))
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL  share  restic could not restore "), result.stdout
    assert "/data/compta/blob-" in result.stdout
    [row] = history_rows(history_url)
    assert row["status"] == "fail" and "restic could not restore" in row["reason"]
    assert_no_leftovers()


def test_no_docker_engine_exits_3_and_records_the_reason(repository, tmp_path, history_url):
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    result = run_cli(
        "check",
        str(scenario),
        "--db",
        history_url,
        env=environment(repository, DOCKER_HOST="unix:///nonexistent/docker.sock"),
    )
    assert result.returncode == 3
    assert result.stdout.startswith("ERROR share  Docker engine unreachable: "), result.stdout
    [row] = history_rows(history_url)
    assert row["status"] == "error" and row["reason"].startswith("Docker engine unreachable")
    assert_no_leftovers()


def test_a_missing_restic_binary_exits_3_and_records_the_reason(repository, tmp_path, history_url):
    scenario = write_scenario(tmp_path, "share", str(repository.path))
    result = run_cli(
        "check",
        str(scenario),
        "--db",
        history_url,
        env=environment(repository, RESTIC_BINARY="/nonexistent/restic"),
    )
    assert result.returncode == 3
    assert result.stdout.strip() == (
        "ERROR share  restic not found: '/nonexistent/restic' (install restic, or set "
        "RESTIC_BINARY or the scenario's source.restic_binary)"
    )
    [row] = history_rows(history_url)
    assert row["status"] == "error" and row["reason"].startswith("restic not found")
    assert_no_leftovers()


def test_an_invalid_scenario_exits_2_with_file_line_and_field_and_runs_nothing(
    tmp_path, history_url
):
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(
        "name: bad\nkind: files\nsource:\n  type: restic\n  repository: /r\n"
        "  password: hunter2\nverify:\n  manifset: /x\n"
    )
    result = run_cli("check", str(scenario), "--db", history_url)
    assert result.returncode == 2
    assert (
        f"invalid scenario: {scenario}:6: source.password: a literal secret is not allowed"
        in result.stderr
    )
    assert f"invalid scenario: {scenario}:8: verify.manifset: unknown field" in result.stderr
    assert "hunter2" not in result.stderr
    assert not (tmp_path / "history.db").exists()


def interrupt_during_restore(repository, tmp_path, history_url, command: str, signum: int):
    """Start a throttled restore (64 KiB/s: it takes minutes), signal it once it is under way."""
    scenario = write_scenario(
        tmp_path, "share", str(repository.path), source_extra="  limit_download: 64k\n"
    )
    arguments = [command, str(scenario), "--db", history_url, "--json"]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **environment(repository)},
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "fetching snapshot" in line:
            break
    time.sleep(1.0)
    process.send_signal(signum)
    stdout, _ = process.communicate(timeout=60)
    return process.returncode, json.loads(stdout)


def assert_interrupted_cleanly(returncode, document, repository, history_url) -> None:
    assert returncode == 130
    assert document["status"] == "interrupted"
    assert document["results"][0]["status"] == "error"
    assert document["results"][0]["reason"] == "interrupted during fetch"
    [row] = history_rows(history_url)
    assert row["status"] == "error" and row["reason"] == "interrupted during fetch"
    locks = restic(repository.binary, str(repository.path), "list", "locks").stdout
    assert locks.strip() == ""
    assert_no_leftovers()


def test_ctrl_c_during_a_restore_exits_130_leaves_nothing_and_no_lock(
    repository, tmp_path, history_url
):
    returncode, document = interrupt_during_restore(
        repository, tmp_path, history_url, "check", signal.SIGINT
    )
    assert_interrupted_cleanly(returncode, document, repository, history_url)


def test_sigterm_from_a_scheduler_is_handled_like_ctrl_c(repository, tmp_path, history_url):
    returncode, document = interrupt_during_restore(
        repository, tmp_path, history_url, "drill", signal.SIGTERM
    )
    assert_interrupted_cleanly(returncode, document, repository, history_url)


def test_a_restore_far_past_its_rto_is_stopped_and_fails(repository, tmp_path, history_url):
    # 64 KiB/s makes the restore take minutes; with an RTO of 1s it is stopped at the 30 s floor.
    scenario = write_scenario(
        tmp_path,
        "slow",
        str(repository.path),
        source_extra="  limit_download: 64k\n",
        objectives="  rto: 1s\n",
    )
    result = run_cli("check", str(scenario), "--db", history_url, env=environment(repository))
    assert result.returncode == 1
    assert result.stdout.strip() == (
        f"FAIL  slow  restore from {repository.path} did not finish within 30s: stopped"
    )
    [row] = history_rows(history_url)
    assert row["status"] == "fail"
    assert restic(repository.binary, str(repository.path), "list", "locks").stdout.strip() == ""
    assert_no_leftovers()


def test_a_restore_that_would_not_fit_on_the_disk_is_refused_before_it_starts(
    repository, tmp_path, history_url
):
    small = tmp_path / "small-disk"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        scenario = write_scenario(tmp_path, "share", str(repository.path))
        result = run_cli(
            "check",
            str(scenario),
            "--db",
            history_url,
            "--work-dir",
            str(small),
            env=environment(repository),
        )
        assert result.returncode == 1
        line = result.stdout.strip()
        assert line.startswith(
            f"ERROR share  not enough disk space in {small}: the restore needs "
        ), line
        assert line.endswith(" MiB, 2.0 MiB free"), line
        assert remaining(small) == []  # the staging directory was removed
    finally:
        subprocess.run(["umount", str(small)], check=True)
    [row] = history_rows(history_url)
    assert row["status"] == "error" and "not enough disk space" in row["reason"]
    assert_no_leftovers()

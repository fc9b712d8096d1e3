"""Repositories on S3-compatible storage: a real server (rclone serve s3) that enforces SigV4."""

from __future__ import annotations

import shutil
import socket
import time

import pytest

from tests.conftest import (
    PASSWORD,
    PASSWORD_VARIABLE,
    S3_KEY,
    assert_no_leftovers,
    free_port,
    history_rows,
    run_cli,
    write_scenario,
)

pytestmark = pytest.mark.sandbox
DIR_CACHE_SECONDS = 2.5  # the server's --dir-cache-time, plus a margin


@pytest.fixture
def s3_repository(repository, s3_server, request) -> str:
    """The test's repository copied into a bucket folder of the S3 server; returns its URL."""
    name = f"{request.node.name}".replace("[", "-").replace("]", "").replace(".", "")
    target = s3_server.root / "backups" / name
    shutil.copytree(repository.path, target)
    time.sleep(DIR_CACHE_SECONDS)
    return s3_server.repository_url("backups", name)


def run(scenario, repository, history_url, secret: str):
    return run_cli(
        "check",
        str(scenario),
        "--db",
        history_url,
        env={
            PASSWORD_VARIABLE: PASSWORD,
            "RESTIC_BINARY": repository.binary,
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": secret,
        },
    )


def test_a_repository_on_s3_restores_and_passes(
    s3_repository, repository, tmp_path, history_url, s3_credentials
):
    scenario = write_scenario(
        tmp_path,
        "s3-share",
        s3_repository,
        source_extra="  env_from: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]\n",
    )
    result = run(scenario, repository, history_url, s3_credentials["AWS_SECRET_ACCESS_KEY"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PASS  s3-share  RTO ")
    assert s3_credentials["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr
    assert_no_leftovers()


def test_a_wrong_s3_secret_is_an_error_saying_the_server_refused(
    s3_repository, repository, tmp_path, history_url
):
    scenario = write_scenario(tmp_path, "s3-share", s3_repository)
    result = run(scenario, repository, history_url, "not-the-secret")
    assert result.returncode == 1
    assert result.stdout.strip() == (
        f"ERROR s3-share  restic: the S3 server refused the credentials for {s3_repository}"
    )
    assert "not-the-secret" not in result.stdout + result.stderr
    [row] = history_rows(history_url)
    assert row["status"] == "error" and "refused the credentials" in row["reason"]
    assert_no_leftovers()


def test_an_unreachable_s3_endpoint_is_an_error_within_seconds(
    repository, tmp_path, history_url, s3_credentials
):
    port = free_port()  # nothing listens there
    url = f"s3:http://127.0.0.1:{port}/backups/share"
    scenario = write_scenario(tmp_path, "s3-share", url)
    started = time.monotonic()
    result = run(scenario, repository, history_url, s3_credentials["AWS_SECRET_ACCESS_KEY"])
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    assert result.stdout.strip() == (
        f"ERROR s3-share  restic: cannot reach the repository {url} "
        f"(127.0.0.1:{port}: Connection refused)"
    )
    [row] = history_rows(history_url)
    assert row["status"] == "error" and "cannot reach the repository" in row["reason"]
    assert_no_leftovers()


def test_an_endpoint_that_accepts_but_never_answers_is_an_error_not_a_hang(
    repository, tmp_path, history_url, s3_credentials
):
    # restic 0.14 would wait forever on such an endpoint; the preflight names it in seconds.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        url = f"s3:http://127.0.0.1:{port}/backups/share"
        scenario = write_scenario(tmp_path, "s3-share", url)
        started = time.monotonic()
        result = run(scenario, repository, history_url, s3_credentials["AWS_SECRET_ACCESS_KEY"])
    assert time.monotonic() - started < 60
    assert result.returncode == 1
    assert result.stdout.strip() == (
        f"ERROR s3-share  restic: cannot reach the repository {url} "
        f"(127.0.0.1:{port}: no answer within 10s)"
    )
    assert_no_leftovers()

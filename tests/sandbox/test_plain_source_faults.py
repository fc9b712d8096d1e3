"""Faults of the plain sources end to end, through `restore-tests check`: an object deleted
between its selection and its download, a truncated archive, a connection cut mid-download, a
decompression bomb and a silent endpoint. Real S3 server, real TCP relay, real sandboxes.

Objects are put through the S3 API (the server's directory cache sees them at once), each
test in a bucket of its own.
"""

from __future__ import annotations

import hashlib
import socket
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import assert_no_leftovers, history_rows
from tests.plain_helpers import check, local_scenario, make_archive, only, s3_scenario

pytestmark = pytest.mark.sandbox

MiB = 1024**2
ARCHIVE = "erp-2026-11-30.tar.zst"
KEY = f"nightly/{ARCHIVE}"


@pytest.fixture
def large_archive(tmp_path) -> tuple[Path, str]:
    """The nightly tar.zst with 3 MiB of random bytes in it: large enough to be cut."""
    return make_archive(tmp_path, ARCHIVE, blob_bytes=3 * MiB)


def put(uploader, bucket: str, data: bytes, sidecar_of: str | None = None) -> None:
    """The archive's bytes as the object; with sidecar_of, a sidecar holding that digest."""
    uploader.put_object(Bucket=bucket, Key=KEY, Body=data)
    if sidecar_of is not None:
        sidecar = f"{sidecar_of}  {ARCHIVE}\n".encode()
        uploader.put_object(Bucket=bucket, Key=f"{KEY}.sha256", Body=sidecar)


def reasons_of(record: dict[str, object]) -> dict[str, str]:
    """The reasons of the checks that did not pass, by check name."""
    return {each["name"]: each["reason"] for each in record["checks"] if each["status"] != "passed"}


def assert_recorded(history_url: str, record: dict[str, object]) -> None:
    [row] = history_rows(history_url)
    assert (row["status"], row["reason"]) == (record["status"], record["reason"])


def test_an_s3_object_deleted_between_its_selection_and_its_download_is_an_error_naming_it(
    s3_server, uploader, bucket, relay, large_archive, tmp_path, history_url
):
    archive, _ = large_archive
    put(uploader, bucket, archive.read_bytes())
    request_line = f"GET /{bucket}/{KEY} ".encode()
    deleted = threading.Event()

    def delete_at_the_first_get(data: bytes) -> None:
        """The download's first GET is held until the object is deleted on the server."""
        if request_line in data and not deleted.is_set():
            uploader.delete_object(Bucket=bucket, Key=KEY)
            deleted.set()

    deleting = relay(on_request=delete_at_the_first_get)
    scenario = s3_scenario(tmp_path, "erp-nightly", deleting.endpoint, bucket=bucket)

    result = check(scenario, history_url)

    assert result.returncode == 1, result.stdout + result.stderr
    assert deleted.is_set()
    record = only(result.stdout)
    assert (record["status"], record["snapshot_id"], record["reason"]) == (
        "error",
        f"s3://{bucket}/{KEY}",
        f"s3: object s3://{bucket}/{KEY} is gone: deleted after it was selected",
    )
    assert_recorded(history_url, record)
    assert_no_leftovers()


def test_a_truncated_s3_archive_without_a_digest_fails_where_its_data_ends(
    s3_server, uploader, bucket, s3_credentials, large_archive, tmp_path, history_url
):
    archive, _ = large_archive
    put(uploader, bucket, archive.read_bytes()[: 1 * MiB])
    scenario = s3_scenario(tmp_path, "erp-nightly", s3_server.endpoint, bucket=bucket)

    result = check(scenario, history_url)

    assert result.returncode == 1, result.stdout + result.stderr
    record = only(result.stdout)
    unpack = f"archive {ARCHIVE} is truncated or corrupt: unexpected end of data after 1 MiB"
    assert reasons_of(record)["unpack"] == unpack
    assert "digest" not in reasons_of(record)  # none declared: the unpacker alone tells
    # then the manifest's finding, which names the files the cut left out (tar's order)
    assert (record["status"], record["reason"][: len(unpack) + 2]) == ("fail", unpack + "; ")
    assert_recorded(history_url, record)
    assert_no_leftovers()


def test_a_truncated_s3_archive_with_a_sidecar_fails_on_its_digest(
    s3_server, uploader, bucket, s3_credentials, large_archive, tmp_path, history_url
):
    archive, digest = large_archive
    truncated = archive.read_bytes()[: 1 * MiB]
    put(uploader, bucket, truncated, sidecar_of=digest)
    scenario = s3_scenario(
        tmp_path, "erp-nightly", s3_server.endpoint, "  digest: sidecar\n", bucket=bucket
    )

    result = check(scenario, history_url)

    assert result.returncode == 1, result.stdout + result.stderr
    record = only(result.stdout)
    got = hashlib.sha256(truncated).hexdigest()
    differs = f"digest of {KEY} differs: expected {digest[:8]}..., got {got[:8]}..."
    unpack = f"archive {ARCHIVE} is truncated or corrupt: unexpected end of data after 1 MiB"
    assert (reasons_of(record)["digest"], reasons_of(record)["unpack"]) == (differs, unpack)
    prefix = f"{differs}; {unpack}; "
    assert (record["status"], record["reason"][: len(prefix)]) == ("fail", prefix)
    assert_recorded(history_url, record)
    assert_no_leftovers()


def test_a_connection_cut_twice_mid_download_is_resumed_and_the_archive_passes(
    uploader, bucket, relay, large_archive, tmp_path, history_url
):
    archive, digest = large_archive
    put(uploader, bucket, archive.read_bytes(), sidecar_of=digest)
    cutting = relay(cut_after=1 * MiB, cuts=2)
    scenario = s3_scenario(
        tmp_path, "erp-nightly", cutting.endpoint, "  digest: sidecar\n", bucket=bucket
    )

    result = check(scenario, history_url)

    assert result.returncode == 0, result.stdout + result.stderr
    assert cutting.cuts_left == 0
    record = only(result.stdout)
    assert (record["status"], record["reason"]) == ("pass", "")
    checks = {each["name"]: each for each in record["checks"]}
    assert (checks["digest"]["status"], checks["digest"]["proves_data"]) == ("passed", True)
    assert_recorded(history_url, record)
    assert_no_leftovers()


def test_a_connection_cut_at_every_attempt_is_an_error_after_three(
    uploader, bucket, relay, large_archive, tmp_path, history_url
):
    archive, _ = large_archive
    put(uploader, bucket, archive.read_bytes())
    cutting = relay(cut_after=256 * 1024, cuts=1000)  # 3 attempts reach 768 KiB at most
    scenario = s3_scenario(tmp_path, "erp-nightly", cutting.endpoint, bucket=bucket)

    result = check(scenario, history_url)

    assert result.returncode == 1, result.stdout + result.stderr
    record = only(result.stdout)
    assert (record["status"], record["reason"]) == (
        "error",
        f"s3: download of s3://{bucket}/{KEY} failed after 3 attempts: the connection was cut",
    )
    assert_recorded(history_url, record)
    assert_no_leftovers()


def test_a_decompression_bomb_stops_at_max_unpacked_and_fails(tmp_path, history_url):
    archive = tmp_path / "backups" / "bomb.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz", compresslevel=1) as writer:
        member = tarfile.TarInfo("data/compta/zeros.bin")
        member.size = 64 * MiB
        with open("/dev/zero", "rb") as zeros:
            writer.addfile(member, zeros)
    assert archive.stat().st_size < MiB
    scenario = local_scenario(tmp_path, "nas-export", archive, "  max_unpacked: 8m\n")

    result = check(scenario, history_url)

    assert result.returncode == 1, result.stdout + result.stderr
    record = only(result.stdout)
    assert (record["status"], record["reason"]) == (
        "fail",
        "archive bomb.tar.gz unpacks to more than 8 MiB (max_unpacked): stopped; "
        "manifest /data/compta/SHA256SUMS is not in the restored data (file bomb.tar.gz holds "
        "/data); 1 files restored, expected at least 12",
    )
    assert "digest" not in {each["name"] for each in record["checks"]}  # not read to its end
    assert record["bytes"] <= 8 * MiB
    assert_recorded(history_url, record)
    assert_no_leftovers()


def test_a_silent_s3_endpoint_is_an_error_within_the_preflight_time(
    s3_credentials, tmp_path, history_url
):
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:  # accepts, never answers
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        scenario = s3_scenario(tmp_path, "erp-nightly", endpoint)
        started = time.monotonic()
        result = check(scenario, history_url)
        elapsed = time.monotonic() - started

    assert result.returncode == 1, result.stdout + result.stderr
    record = only(result.stdout)
    assert (record["status"], record["reason"]) == (
        "error",
        f"s3: no answer from {endpoint} within 10s",
    )
    assert elapsed < 20  # the preflight's 10 s (a constant) and the CLI's start, not 3 x 60 s
    assert_recorded(history_url, record)
    assert_no_leftovers()

"""Plain backups end to end: archives and files from local disk and from S3-compatible storage,
through `restore-tests check`, real tar/zstd, a real S3 server, real sandboxes."""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import time
from pathlib import Path

import pytest

from tests.conftest import assert_no_leftovers, history_rows
from tests.plain_helpers import check, local_scenario, make_archive, only, s3_scenario

pytestmark = pytest.mark.sandbox


def test_a_local_archive_with_a_sidecar_digest_is_unpacked_verified_and_passes(
    tmp_path, history_url
):
    archive, digest = make_archive(tmp_path)
    archive.with_name(archive.name + ".sha256").write_text(f"{digest}  {archive.name}\n")
    scenario = local_scenario(
        tmp_path, "nas-export", archive.parent, "  pattern: 'erp-*.tar.gz'\n  digest: sidecar\n"
    )

    result = check(scenario, history_url)

    assert result.returncode == 0, result.stdout + result.stderr
    record = only(result.stdout)
    assert (record["status"], record["snapshot_id"], record["rpo_basis"]) == (
        "pass",
        str(archive),
        "file_mtime",
    )
    names = {check["name"]: check for check in record["checks"]}
    assert names["digest"]["status"] == "passed" and names["digest"]["proves_data"] is True
    assert re.fullmatch(
        r"12 match \([\d,]+ bytes hashed\)", names["manifest /data/compta/SHA256SUMS"]["observed"]
    )
    [row] = history_rows(history_url)
    assert (row["status"], row["snapshot_id"]) == ("pass", str(archive))
    assert_no_leftovers()


def test_a_local_archive_whose_digest_differs_fails_with_both_digests(tmp_path, history_url):
    archive, digest = make_archive(tmp_path)
    wrong = "0" * 64
    scenario = local_scenario(tmp_path, "nas-export", archive, f"  digest: 'sha256:{wrong}'\n")

    result = check(scenario, history_url)

    assert result.returncode == 1, result.stdout + result.stderr
    record = only(result.stdout)
    assert record["status"] == "fail"
    assert record["reason"] == (
        f"digest of {archive} differs: expected {wrong[:8]}..., got {digest[:8]}..."
    )
    assert history_rows(history_url)[0]["reason"] == record["reason"]
    assert_no_leftovers()


def test_a_local_path_that_does_not_exist_is_an_error(tmp_path, history_url):
    missing = tmp_path / "nowhere"
    scenario = local_scenario(tmp_path, "nas-export", missing)

    result = check(scenario, history_url)

    assert result.returncode == 1, result.stdout + result.stderr
    record = only(result.stdout)
    assert (record["status"], record["reason"]) == ("error", f"local path {missing} does not exist")
    assert history_rows(history_url)[0]["status"] == "error"
    assert_no_leftovers()


def test_a_local_archive_with_an_entry_leaving_the_folder_fails_and_writes_nothing_outside(
    tmp_path, history_url
):
    archive = tmp_path / "backups" / "evil.tar"
    archive.parent.mkdir()
    payload = tmp_path / "payload.txt"
    payload.write_text("escaped\n")
    with tarfile.open(archive, "w") as tar:
        tar.add(payload, arcname="data/ok.txt")
        tar.add(payload, arcname="../../escaped.txt")
    scenario = local_scenario(tmp_path, "evil", archive)
    work = Path(os.environ["RESTORE_TESTS_WORK_DIR"])

    result = check(scenario, history_url)

    assert result.returncode == 1, result.stdout + result.stderr
    record = only(result.stdout)
    assert record["status"] == "fail"
    assert record["reason"].startswith(
        "archive evil.tar holds 1 entry that would leave the restore folder or is not a plain "
        "file: ../../escaped.txt (leads outside); "
    )
    assert not (work / "escaped.txt").exists() and not (work.parent / "escaped.txt").exists()
    assert_no_leftovers()


def test_a_single_local_file_is_read_in_place_without_a_copy(tmp_path, history_url):
    dump = tmp_path / "dumps" / "crm.sqlite3"
    dump.parent.mkdir()
    dump.write_bytes(b"SQLite format 3\x00" + bytes(4096))
    digest = hashlib.sha256(dump.read_bytes()).hexdigest()
    scenario = tmp_path / "crm.yaml"
    scenario.write_text(
        f"name: crm\nkind: files\nsource:\n  type: local\n  path: {dump}\n  unpack: none\n"
        f"objectives: {{rpo: 26h}}\nverify:\n  checksums: {{/crm.sqlite3: {digest}}}\n"
    )
    before = time.time()

    result = check(scenario, history_url)

    assert result.returncode == 0, result.stdout + result.stderr
    record = only(result.stdout)
    [checksums] = [check for check in record["checks"] if check["name"] == "checksums"]
    assert (checksums["status"], checksums["proves_data"]) == ("passed", True)
    assert record["snapshot_id"] == str(dump)
    assert dump.stat().st_nlink == 1  # the hard link in staging is gone with staging
    assert dump.stat().st_mtime < before
    assert_no_leftovers()


@pytest.fixture
def s3_archive(s3_server, tmp_path) -> tuple[Path, str]:
    """A nightly tar.zst export with its sidecar, in a bucket of the real S3 server."""
    archive, digest = make_archive(tmp_path, "erp-2026-11-30.tar.zst")
    bucket = s3_server.root / "erp-backups" / "nightly"
    bucket.mkdir(parents=True, exist_ok=True)
    target = bucket / archive.name
    target.write_bytes(archive.read_bytes())
    (bucket / f"{archive.name}.sha256").write_text(f"{digest}  {archive.name}\n")
    time.sleep(2.5)  # past the server's directory cache (--dir-cache-time 2s)
    return target, digest


def test_an_s3_archive_is_streamed_unpacked_checked_against_its_sidecar_and_passes(
    s3_server, s3_archive, s3_credentials, tmp_path, history_url
):
    scenario = s3_scenario(tmp_path, "erp-nightly", s3_server.endpoint, "  digest: sidecar\n")

    result = check(scenario, history_url)

    assert result.returncode == 0, result.stdout + result.stderr
    record = only(result.stdout)
    assert (record["status"], record["snapshot_id"], record["rpo_basis"]) == (
        "pass",
        "s3://erp-backups/nightly/erp-2026-11-30.tar.zst",
        "object_last_modified",
    )
    assert history_rows(history_url)[0]["status"] == "pass"
    assert_no_leftovers()


def test_an_s3_archive_whose_digest_differs_fails_naming_the_object(
    s3_server, s3_archive, s3_credentials, tmp_path, history_url
):
    wrong = "f" * 64
    scenario = s3_scenario(
        tmp_path, "erp-nightly", s3_server.endpoint, f"  digest: 'sha256:{wrong}'\n"
    )

    result = check(scenario, history_url)

    assert result.returncode == 1, result.stdout + result.stderr
    record = only(result.stdout)
    assert record["status"] == "fail", record["reason"]
    assert record["reason"].startswith("digest of ")
    assert f"expected {wrong[:8]}..., got {s3_archive[1][:8]}..." in record["reason"]
    assert history_rows(history_url)[0]["reason"] == record["reason"]
    assert_no_leftovers()


def test_refused_s3_credentials_are_an_error_naming_the_bucket(
    s3_server, s3_archive, tmp_path, history_url, monkeypatch
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "restore-tests-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    scenario = s3_scenario(tmp_path, "erp-nightly", s3_server.endpoint)

    result = check(scenario, history_url)

    assert result.returncode == 1, result.stdout + result.stderr
    record = only(result.stdout)
    assert record["status"] == "error"
    assert record["reason"].startswith(
        "s3: the server refused the credentials for s3://erp-backups"
    )
    assert "not-the-secret" not in result.stdout + result.stderr
    assert history_rows(history_url)[0]["status"] == "error"
    assert_no_leftovers()


@pytest.mark.parametrize(
    ("source_extra", "bucket", "reason"),
    [
        ("", "no-such-bucket", "s3: no bucket no-such-bucket at {endpoint}"),
        (
            "  digest: sidecar\n",
            "erp-backups",
            "s3: sidecar s3://erp-backups/nightly/erp-2026-11-30.tar.zst.sha256 not found "
            "(digest: sidecar)",
        ),
    ],
    ids=["missing bucket", "missing sidecar"],
)
def test_an_s3_source_that_cannot_be_read_as_declared_is_an_error(
    s3_server, s3_archive, s3_credentials, tmp_path, history_url, source_extra, bucket, reason
):
    s3_archive[0].with_name(s3_archive[0].name + ".sha256").unlink()
    time.sleep(2.5)  # past the server's directory cache
    scenario = s3_scenario(tmp_path, "erp-nightly", s3_server.endpoint, source_extra)
    scenario.write_text(scenario.read_text().replace("bucket: erp-backups", f"bucket: {bucket}"))

    result = check(scenario, history_url)

    assert result.returncode == 1, result.stdout + result.stderr
    record = only(result.stdout)
    assert (record["status"], record["reason"]) == (
        "error",
        reason.format(endpoint=s3_server.endpoint),
    )
    assert history_rows(history_url)[0]["status"] == "error"
    assert_no_leftovers()


def test_no_s3_object_matching_the_pattern_is_an_error(
    s3_server, s3_archive, s3_credentials, tmp_path, history_url
):
    scenario = s3_scenario(tmp_path, "erp-nightly", s3_server.endpoint)
    scenario.write_text(scenario.read_text().replace("'erp-*.tar.zst'", "'crm-*.tar.zst'"))

    result = check(scenario, history_url)

    assert result.returncode == 1, result.stdout + result.stderr
    assert only(result.stdout)["reason"] == (
        "s3: no object under s3://erp-backups/nightly/ matches crm-*.tar.zst"
    )
    assert_no_leftovers()

"""The s3 source on its own, against a real S3 server (rclone serve s3), no Docker.

Objects are uploaded through boto3, or written straight into the server's folder when their
modification time matters (rclone reports a file's mtime as LastModified; its directory cache
hides such changes for 2 s, so those tests wait past it). Faults of the network come from a
real TCP relay in front of the real server that cuts or slows its answers (tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import tarfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from restore_tests.errors import Interrupted, ObjectiveMissed, SourceError
from restore_tests.results import CHECK_FAILED, CHECK_PASSED
from restore_tests.sources.base import (
    OBJECT_LAST_MODIFIED,
    Fetched,
    FetchProgress,
    FetchRequest,
    RestorePoint,
)
from restore_tests.sources.s3 import S3Settings, S3Source
from tests.conftest import S3_KEY, S3_SECRET, Relay, S3Server, free_port

pytestmark = pytest.mark.integration

DIR_CACHE_WAIT = 2.5  # past rclone's --dir-cache-time 2s
MiB = 1024**2


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    target, scratch = tmp_path / "target", tmp_path / "scratch"
    target.mkdir(mode=0o700)
    scratch.mkdir(mode=0o700)
    return target, scratch


MakeSource = Callable[..., S3Source]


@pytest.fixture
def make_source(s3_server: S3Server, bucket: str, folders: tuple[Path, Path]) -> MakeSource:
    def make(endpoint: str | None = None, **fields: Any) -> S3Source:
        fields.setdefault("bucket", bucket)
        settings = S3Settings(type="s3", endpoint=endpoint or s3_server.endpoint, **fields)
        return S3Source(settings, folders[1])

    return make


def fetch(
    source: S3Source, point: RestorePoint, folders: tuple[Path, Path], **more: Any
) -> Fetched:
    return source.fetch(point, FetchRequest(target=folders[0], scratch=folders[1], **more))


def put_file(server: S3Server, bucket: str, key: str, data: bytes, mtime: float) -> Path:
    """An object written behind the server's back, with its LastModified set by its mtime."""
    path = server.root / bucket / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def checks_by_name(fetched: Fetched) -> dict[str, Any]:
    return {check.name: check for check in fetched.checks}


# -- settings -----------------------------------------------------------------------------------


def settings_error(**fields: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        S3Settings(type="s3", **{"bucket": "erp-backups", **fields})
    return "; ".join(error["msg"] for error in raised.value.errors())


def test_settings_need_exactly_one_of_key_and_prefix() -> None:
    expected = (
        "Value error, give exactly one of key (one object) or prefix (the newest object under it)"
    )
    assert settings_error() == expected
    assert settings_error(key="a.tar", prefix="nightly/") == expected


def test_settings_refuse_a_pattern_or_a_folder_with_an_exact_key() -> None:
    assert settings_error(key="a.tar", pattern="*.tar") == (
        "Value error, pattern narrows a prefix: write prefix instead of key, or remove it"
    )
    assert settings_error(key="nightly/") == (
        "Value error, a key names one object; for the newest object under a folder write "
        "prefix: 'nightly/' instead"
    )
    assert settings_error(prefix="nightly/", version_id="abc") == (
        "Value error, version_id needs key (a version of one object), not prefix"
    )


def test_settings_refuse_credentials_in_the_endpoint_and_a_folder_in_the_bucket() -> None:
    assert settings_error(endpoint="https://key:secret@s3.example.net", key="a") == (
        "Value error, write the URL without credentials, like https://s3.example.net; they "
        "come from env_from, a profile or the standard AWS chain"
    )
    assert settings_error(bucket="erp-backups/nightly", key="a") == (
        "Value error, write the bucket's name only, like erp-backups; the folder goes in key "
        "or prefix"
    )


def test_settings_take_credentials_only_from_the_aws_variable_names() -> None:
    assert settings_error(key="a", env_from=["ERP_KEY"]) == (
        "Value error, list AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally "
        "AWS_SESSION_TOKEN (the s3 source reads its credentials from these names only)"
    )
    assert settings_error(key="a", env_from=["AWS_ACCESS_KEY_ID"]) == (
        "Value error, list both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )


def test_location_names_bucket_key_and_endpoint_without_credentials(
    make_source: MakeSource, s3_server: S3Server, bucket: str
) -> None:
    source = make_source(prefix="nightly/")
    assert source.location == f"s3://{bucket}/nightly/ at {s3_server.endpoint}"
    version = source.version()
    assert version is not None and version.startswith("boto3 1.")


# -- preflight ------------------------------------------------------------------------------------


def test_preflight_passes_with_the_right_credentials(make_source: MakeSource) -> None:
    make_source(prefix="nightly/").preflight()


def test_a_wrong_secret_is_refused_with_the_servers_code(
    make_source: MakeSource, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(SourceError) as raised:
        make_source(prefix="nightly/").preflight()
    assert str(raised.value) == (
        f"s3: the server refused the credentials for s3://{bucket} (SignatureDoesNotMatch)"
    )
    assert "not-the-secret" not in str(raised.value)


def test_a_missing_bucket_is_named_with_the_endpoint(
    make_source: MakeSource, s3_server: S3Server
) -> None:
    # A name no test creates: the server is shared by the session (erp-backups is made by the
    # sandbox tests of the plain sources).
    with pytest.raises(SourceError) as raised:
        make_source(bucket="erp-never-made", prefix="nightly/").preflight()
    assert str(raised.value) == f"s3: no bucket erp-never-made at {s3_server.endpoint}"


def test_a_closed_port_cannot_be_reached(make_source: MakeSource) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SourceError) as raised:
        make_source(endpoint=endpoint, prefix="nightly/").preflight()
    assert str(raised.value) == f"s3: cannot reach {endpoint} (connection refused)"


def test_a_silent_endpoint_is_an_error_within_the_preflight_time(make_source: MakeSource) -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:  # accepts, never answers
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(SourceError) as raised:
            make_source(endpoint=endpoint, prefix="nightly/").preflight()
        elapsed = time.monotonic() - started
    assert str(raised.value) == f"s3: no answer from {endpoint} within 10s"
    assert elapsed < 12


def test_no_credentials_at_all_is_an_error_saying_what_to_set(
    make_source: MakeSource, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(SourceError) as raised:
        make_source(prefix="nightly/").preflight()
    assert str(raised.value) == (
        "s3: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, "
        "or env_from)"
    )


def test_env_from_names_a_variable_that_is_not_set(
    make_source: MakeSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    source = make_source(prefix="n/", env_from=["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    with pytest.raises(SourceError) as raised:
        source.preflight()
    assert str(raised.value) == (
        "source.env_from: environment variable AWS_SECRET_ACCESS_KEY is not set"
    )


def test_a_named_profile_gives_the_credentials(
    make_source: MakeSource, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[backups]\naws_access_key_id = {S3_KEY}\naws_secret_access_key = {S3_SECRET}\n"
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    make_source(prefix="nightly/", profile="backups").preflight()
    with pytest.raises(SourceError) as raised:
        make_source(prefix="nightly/", profile="archive").preflight()
    assert str(raised.value) == "s3: no profile archive in the AWS config files"


# -- select ---------------------------------------------------------------------------------------


def test_an_exact_key_is_selected_with_its_size_and_time(
    make_source: MakeSource, uploader: Any, bucket: str
) -> None:
    uploader.put_object(Bucket=bucket, Key="nightly/erp-2026-11-23.tar.zst", Body=b"x" * 1000)
    point = make_source(key="nightly/erp-2026-11-23.tar.zst").select()
    assert point.id == f"s3://{bucket}/nightly/erp-2026-11-23.tar.zst"
    assert point.short_id == "erp-2026-11-23.tar.zst"
    assert point.time_basis == OBJECT_LAST_MODIFIED
    assert point.time is not None and point.time.tzinfo == UTC
    assert abs((datetime.now(UTC) - point.time).total_seconds()) < 60
    assert point.size_bytes == 1000
    assert point.description == (
        f"object nightly/erp-2026-11-23.tar.zst ({point.time:%Y-%m-%d %H:%M} UTC, 1000 B)"
    )


def test_the_newest_match_under_a_prefix_is_chosen_across_listing_pages(
    make_source: MakeSource, s3_server: S3Server, bucket: str
) -> None:
    """1,500 keys: rclone lists 1,000 per page, and the newest match is on the second page."""
    base = datetime(2026, 11, 1, 3, 0, tzinfo=UTC).timestamp()
    for number in range(1500):
        put_file(s3_server, bucket, f"nightly/erp-{number:04d}.tar.zst", b"x", base + number % 700)
    newest = base + 100_000
    put_file(s3_server, bucket, "nightly/erp-1400.tar.zst", b"old", newest)
    put_file(s3_server, bucket, "nightly/erp-1401.tar.zst", b"tie", newest)  # same time: key wins
    put_file(s3_server, bucket, "nightly/other-9999.log", b"newer", newest + 60)
    put_file(s3_server, bucket, "nightly/erp-1401.tar.zst.sha256", b"newer", newest + 60)
    time.sleep(DIR_CACHE_WAIT)
    point = make_source(prefix="nightly/", pattern="erp-*.tar.zst").select()
    assert point.short_id == "erp-1401.tar.zst"
    assert point.time == datetime.fromtimestamp(newest, UTC)
    assert point.size_bytes == 3


def test_without_a_pattern_a_newer_sidecar_is_not_chosen(
    make_source: MakeSource, uploader: Any, bucket: str
) -> None:
    uploader.put_object(Bucket=bucket, Key="nightly/erp.tar.gz", Body=b"data")
    time.sleep(1.1)  # LastModified has a resolution of a second
    uploader.put_object(Bucket=bucket, Key="nightly/erp.tar.gz.sha256", Body=b"digest")
    assert make_source(prefix="nightly/").select().short_id == "erp.tar.gz"


def test_no_object_matching_the_pattern_is_an_error_naming_prefix_and_pattern(
    make_source: MakeSource, uploader: Any, bucket: str
) -> None:
    uploader.put_object(Bucket=bucket, Key="nightly/billing-1.tar.zst", Body=b"x")
    with pytest.raises(SourceError) as raised:
        make_source(prefix="nightly/", pattern="erp-*.tar.zst").select()
    assert str(raised.value) == f"s3: no object under s3://{bucket}/nightly/ matches erp-*.tar.zst"


def test_a_missing_key_is_an_error_naming_it(make_source: MakeSource, bucket: str) -> None:
    with pytest.raises(SourceError) as raised:
        make_source(key="nightly/erp.tar.zst").select()
    assert str(raised.value) == f"s3: no object s3://{bucket}/nightly/erp.tar.zst"


# -- fetch ------------------------------------------------------------------------------------


def test_a_download_with_its_sidecar_passes_and_proves_data(
    make_source: MakeSource, uploader: Any, bucket: str, folders: tuple[Path, Path]
) -> None:
    data = os.urandom(3 * MiB + 17)
    uploader.put_object(Bucket=bucket, Key="nightly/erp.bin", Body=data)
    sidecar = f"{sha256(data)}  erp.bin\n".encode()
    uploader.put_object(Bucket=bucket, Key="nightly/erp.bin.sha256", Body=sidecar)
    source = make_source(key="nightly/erp.bin", digest="sidecar")
    fetched = fetch(source, source.select(), folders)
    checks = checks_by_name(fetched)
    assert (folders[0] / "erp.bin").read_bytes() == data
    assert [check.status for check in fetched.checks] == [CHECK_PASSED, CHECK_PASSED]
    assert checks["digest"].proves_data and checks["digest"].expected == sha256(data)
    assert checks["size"].observed == f"{len(data):,} bytes"


def test_a_digest_mismatch_fails_with_expected_and_got(
    make_source: MakeSource, uploader: Any, bucket: str, folders: tuple[Path, Path]
) -> None:
    uploader.put_object(Bucket=bucket, Key="erp.bin", Body=b"restored bytes")
    wrong = sha256(b"other bytes")
    uploader.put_object(Bucket=bucket, Key="erp.bin.sha256", Body=f"{wrong}  erp.bin\n".encode())
    source = make_source(key="erp.bin", digest="sidecar")
    digest = checks_by_name(fetch(source, source.select(), folders))["digest"]
    assert digest.status == CHECK_FAILED
    assert digest.reason == (
        f"digest of erp.bin differs: expected {wrong[:8]}..., "
        f"got {sha256(b'restored bytes')[:8]}..."
    )


def test_a_missing_sidecar_is_an_error_before_the_download(
    make_source: MakeSource, uploader: Any, bucket: str, folders: tuple[Path, Path]
) -> None:
    uploader.put_object(Bucket=bucket, Key="nightly/erp.bin", Body=b"data")
    source = make_source(key="nightly/erp.bin", digest="sidecar")
    with pytest.raises(SourceError) as raised:
        fetch(source, source.select(), folders)
    assert str(raised.value) == (
        f"s3: sidecar s3://{bucket}/nightly/erp.bin.sha256 not found (digest: sidecar)"
    )
    assert list(folders[0].iterdir()) == []


def test_the_digest_in_the_objects_metadata_is_compared(
    make_source: MakeSource, uploader: Any, bucket: str, folders: tuple[Path, Path]
) -> None:
    """rclone keeps user metadata (it answers x-amz-meta-sha256 as Sha256: names are matched
    without regard to case)."""
    data = b"payload" * 1000
    uploader.put_object(Bucket=bucket, Key="erp.bin", Body=data, Metadata={"sha256": sha256(data)})
    source = make_source(key="erp.bin", digest="metadata")
    digest = checks_by_name(fetch(source, source.select(), folders))["digest"]
    assert digest.status == CHECK_PASSED and digest.proves_data


def test_missing_metadata_digest_is_an_error(
    make_source: MakeSource, uploader: Any, bucket: str, folders: tuple[Path, Path]
) -> None:
    uploader.put_object(Bucket=bucket, Key="erp.bin", Body=b"data")
    source = make_source(key="erp.bin", digest="metadata")
    with pytest.raises(SourceError) as raised:
        fetch(source, source.select(), folders)
    assert (
        str(raised.value)
        == f"s3: object s3://{bucket}/erp.bin has no x-amz-meta-sha256 (digest: metadata)"
    )


ARCHIVERS = {
    "tar.gz": ["tar", "-czf", "{archive}", "erp"],
    "tar.zst": ["tar", "--zstd", "-cf", "{archive}", "erp"],
    "zip": ["zip", "-qr", "{archive}", "erp"],
}


@pytest.mark.parametrize("suffix", sorted(ARCHIVERS))
def test_an_archive_object_is_unpacked_into_the_target(
    suffix: str,
    make_source: MakeSource,
    uploader: Any,
    bucket: str,
    folders: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    (tree / "erp" / "ledger").mkdir(parents=True)
    (tree / "erp" / "ledger" / "2026.csv").write_text("id,amount\n1,42\n")
    (tree / "erp" / "SHA256SUMS").write_text("x  ledger/2026.csv\n")
    archive = tmp_path / f"erp-2026-11-23.{suffix}"
    command = [part.format(archive=archive) for part in ARCHIVERS[suffix]]
    subprocess.run(command, cwd=tree, check=True)
    data = archive.read_bytes()
    uploader.put_object(Bucket=bucket, Key=f"nightly/{archive.name}", Body=data)
    source = make_source(prefix="nightly/", digest=f"sha256:{sha256(data)}")
    fetched = fetch(source, source.select(), folders)
    assert (folders[0] / "erp" / "ledger" / "2026.csv").read_text() == "id,amount\n1,42\n"
    assert [check.name for check in fetched.checks] == ["size", "digest", "unpack"]
    assert all(check.status == CHECK_PASSED for check in fetched.checks)
    assert checks_by_name(fetched)["unpack"].observed == "2 files, 34 B"


def test_a_large_object_comes_in_parallel_ranged_parts_with_bounded_memory(
    make_source: MakeSource,
    s3_server: S3Server,
    bucket: str,
    folders: tuple[Path, Path],
    relay: Callable[..., Relay],
) -> None:
    data = os.urandom(80 * MiB)
    put_file(s3_server, bucket, "images/disk.raw", data, time.time() - 60)
    time.sleep(DIR_CACHE_WAIT)
    counting = relay()
    source = make_source(
        endpoint=counting.endpoint,
        key="images/disk.raw",
        unpack="none",
        digest=f"sha256:{sha256(data)}",
    )
    point = source.select()
    tracemalloc.start()
    try:
        fetched = fetch(source, point, folders)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [check.status for check in fetched.checks] == [CHECK_PASSED, CHECK_PASSED]
    assert counting.ranged_gets == 10  # 8 MiB parts
    assert peak < 48 * MiB, f"peak {peak / MiB:.0f} MiB"  # 5 parts of 8 MiB at most
    assert sha256((folders[0] / "disk.raw").read_bytes()) == sha256(data)


def test_an_object_deleted_after_selection_is_an_error_naming_it(
    make_source: MakeSource, uploader: Any, bucket: str, folders: tuple[Path, Path]
) -> None:
    uploader.put_object(Bucket=bucket, Key="nightly/erp.bin", Body=b"data")
    source = make_source(key="nightly/erp.bin")
    point = source.select()
    uploader.delete_object(Bucket=bucket, Key="nightly/erp.bin")
    with pytest.raises(SourceError) as raised:
        fetch(source, point, folders)
    assert str(raised.value) == (
        f"s3: object s3://{bucket}/nightly/erp.bin is gone: deleted after it was selected"
    )


def test_a_truncated_object_fails_with_the_bytes_received(
    make_source: MakeSource, s3_server: S3Server, bucket: str, folders: tuple[Path, Path]
) -> None:
    data = os.urandom(2 * MiB)
    path = put_file(s3_server, bucket, "nightly/erp.bin", data, time.time() - 60)
    time.sleep(DIR_CACHE_WAIT)
    source = make_source(key="nightly/erp.bin")
    point = source.select()
    path.write_bytes(data[: 1 * MiB])
    time.sleep(DIR_CACHE_WAIT)
    fetched = fetch(source, point, folders)
    failures = [check.reason for check in fetched.checks if check.status == CHECK_FAILED]
    assert failures == ["object nightly/erp.bin is truncated: 1,048,576 of 2,097,152 bytes"]


def test_a_connection_cut_mid_download_is_resumed(
    make_source: MakeSource,
    uploader: Any,
    bucket: str,
    folders: tuple[Path, Path],
    relay: Callable[..., Relay],
) -> None:
    data = os.urandom(20 * MiB)
    uploader.put_object(Bucket=bucket, Key="erp.bin", Body=data)
    cutting = relay(cut_after=3 * MiB, cuts=2)
    source = make_source(endpoint=cutting.endpoint, key="erp.bin", digest=f"sha256:{sha256(data)}")
    fetched = fetch(source, source.select(), folders)
    assert cutting.cuts_left == 0
    assert [check.status for check in fetched.checks] == [CHECK_PASSED, CHECK_PASSED]
    assert (folders[0] / "erp.bin").read_bytes() == data


def test_a_connection_cut_at_every_attempt_is_an_error_after_three(
    make_source: MakeSource,
    uploader: Any,
    bucket: str,
    folders: tuple[Path, Path],
    relay: Callable[..., Relay],
) -> None:
    uploader.put_object(Bucket=bucket, Key="erp.bin", Body=os.urandom(2 * MiB))
    cutting = relay(cut_after=256 * 1024, cuts=1000)  # 3 attempts reach 768 KiB at most
    source = make_source(endpoint=cutting.endpoint, key="erp.bin")
    with pytest.raises(SourceError) as raised:
        fetch(source, source.select(), folders)
    assert str(raised.value) == (
        f"s3: download of s3://{bucket}/erp.bin failed after 3 attempts: the connection was cut"
    )


def test_a_download_past_its_time_is_stopped(
    make_source: MakeSource,
    uploader: Any,
    bucket: str,
    folders: tuple[Path, Path],
    relay: Callable[..., Relay],
) -> None:
    uploader.put_object(Bucket=bucket, Key="erp.bin", Body=os.urandom(16 * MiB))
    slow = relay(bytes_per_second=2 * MiB)
    source = make_source(endpoint=slow.endpoint, key="erp.bin")
    point = source.select()
    started = time.monotonic()
    with pytest.raises(ObjectiveMissed) as raised:
        fetch(source, point, folders, timeout=1.0)
    assert str(raised.value) == "download of erp.bin did not finish within 1.0s: stopped"
    assert time.monotonic() - started < 3


def test_a_cancelled_download_is_interrupted(
    make_source: MakeSource,
    uploader: Any,
    bucket: str,
    folders: tuple[Path, Path],
    relay: Callable[..., Relay],
) -> None:
    uploader.put_object(Bucket=bucket, Key="erp.bin", Body=os.urandom(16 * MiB))
    slow = relay(bytes_per_second=2 * MiB)
    source = make_source(endpoint=slow.endpoint, key="erp.bin")
    point = source.select()
    cancel_at = time.monotonic() + 0.5
    started = time.monotonic()
    with pytest.raises(Interrupted):
        fetch(source, point, folders, cancelled=lambda: time.monotonic() > cancel_at)
    assert time.monotonic() - started < 2.5


def test_an_archive_unpacked_from_a_stream_drains_what_follows_it_into_the_digest(
    make_source: MakeSource, uploader: Any, bucket: str, folders: tuple[Path, Path]
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        member = tarfile.TarInfo("erp/a.txt")
        member.size = 5
        archive.addfile(member, io.BytesIO(b"hello"))
    data = buffer.getvalue() + b"\0" * 100_000  # padding past the end-of-archive blocks
    uploader.put_object(Bucket=bucket, Key="erp.tar", Body=data)
    source = make_source(key="erp.tar", digest=f"sha256:{sha256(data)}")
    fetched = fetch(source, source.select(), folders)
    assert all(check.status == CHECK_PASSED for check in fetched.checks), fetched.checks


def test_a_download_reports_its_bytes_against_the_objects_size(
    make_source: MakeSource, uploader: Any, bucket: str, folders: tuple[Path, Path]
) -> None:
    data = os.urandom(20 * MiB + 5)
    uploader.put_object(Bucket=bucket, Key="nightly/erp.bin", Body=data)
    source = make_source(key="nightly/erp.bin")
    reports: list[FetchProgress] = []

    fetch(source, source.select(), folders, progress=reports.append)

    assert reports == [
        FetchProgress(8 * MiB, len(data)),
        FetchProgress(16 * MiB, len(data)),
        FetchProgress(len(data), len(data)),
    ]

"""The local source on its own: real files and archives in tmp_path, no Docker."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic
import pytest

from restore_tests.errors import Interrupted, SourceError
from restore_tests.results import CHECK_FAILED, CHECK_PASSED
from restore_tests.sources.base import FILE_MTIME, Fetched, FetchProgress, FetchRequest
from restore_tests.sources.local import LocalSettings, LocalSource
from restore_tests.sources.plain import digest_check, sidecar_digest

pytestmark = pytest.mark.integration

NOVEMBER_23 = datetime(2026, 11, 23, 3, 0, tzinfo=UTC).timestamp()
ROOT = Path(__file__).resolve().parents[2]


def source_for(tmp_path: Path, path: Path | str, **options: Any) -> LocalSource:
    settings = LocalSettings(type="local", path=str(path), **options)
    scratch = tmp_path / "work" / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    return LocalSource(settings.resolved(tmp_path), scratch)


def write(path: Path, data: bytes, mtime: float = NOVEMBER_23) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def fetch(tmp_path: Path, source: LocalSource) -> Fetched:
    source.preflight()
    point = source.select()
    target = tmp_path / "work" / "target"
    target.mkdir()
    return source.fetch(point, FetchRequest(target=target, scratch=source.scratch))


def export_archive(tmp_path: Path, name: str = "export-2026-11-23.tar.gz") -> Path:
    tree = tmp_path / "tree"
    (tree / "erp").mkdir(parents=True)
    for index in range(3):
        (tree / "erp" / f"invoice-{index}.csv").write_text(f"invoice {index}\n")
    archive = tmp_path / "nas" / name
    archive.parent.mkdir(exist_ok=True)
    subprocess.run(["tar", "-czf", archive, "-C", tree, "."], check=True)
    os.utime(archive, (NOVEMBER_23, NOVEMBER_23))
    return archive


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- settings ---------------------------------------------------------------------------------


def test_a_relative_path_resolves_against_the_scenario_folder(tmp_path: Path) -> None:
    settings = LocalSettings(type="local", path="exports/x.tar.gz").resolved(tmp_path / "scn")
    absolute = LocalSettings(type="local", path="/mnt/nas/x.tar.gz").resolved(tmp_path)

    assert settings.path == str(tmp_path / "scn" / "exports" / "x.tar.gz")
    assert absolute.path == "/mnt/nas/x.tar.gz"


def test_a_metadata_digest_is_refused_for_a_local_file() -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        LocalSettings(type="local", path="/mnt/nas", digest="metadata")
    assert "digest: metadata is for s3 objects; for a local file use 'sidecar'" in str(raised.value)


def test_a_malformed_digest_and_a_pattern_with_a_slash_are_refused() -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        LocalSettings(type="local", path="/mnt/nas", digest="sha256:abc", pattern="a/*.gz")
    message = str(raised.value)
    assert "digest must be sidecar, metadata, sha256:<64 hex digits> or none; got 'sha256:abc'" in (
        message
    )
    assert "pattern 'a/*.gz' is matched against the last part of the name only" in message


# -- preflight and select ---------------------------------------------------------------------


def test_the_newest_matching_file_of_a_folder_is_selected_by_mtime(tmp_path: Path) -> None:
    nas = tmp_path / "nas"
    write(nas / "export-2026-11-21.tar.gz", b"old", NOVEMBER_23 - 2 * 86400)
    write(nas / "export-2026-11-23.tar.gz", b"x" * 1_300_000, NOVEMBER_23)
    write(nas / "export-2026-11-22.tar.gz", b"mid", NOVEMBER_23 - 86400)
    write(nas / "export-2026-11-23.tar.gz.sha256", b"0" * 64, NOVEMBER_23 + 60)
    write(nas / "other-2026-11-24.tar.gz", b"not matched", NOVEMBER_23 + 86400)
    (nas / "zz-link.tar.gz").symlink_to(nas / "other-2026-11-24.tar.gz")
    (nas / "export-2026-11-30.tar.gz").mkdir()  # a folder is never the backup

    point = source_for(tmp_path, nas, pattern="export-*.tar.gz").select()

    assert point.id == str(nas / "export-2026-11-23.tar.gz")
    assert point.short_id == "export-2026-11-23.tar.gz"
    assert (point.time, point.time_basis) == (datetime.fromtimestamp(NOVEMBER_23, UTC), FILE_MTIME)
    assert point.size_bytes == 1_300_000
    assert point.description == "file export-2026-11-23.tar.gz (2026-11-23 03:00 UTC, 1.2 MiB)"


def test_files_of_the_same_mtime_are_told_apart_by_name(tmp_path: Path) -> None:
    write(tmp_path / "nas" / "erp-2026-11-22.tar.zst", b"a")
    write(tmp_path / "nas" / "erp-2026-11-23.tar.zst", b"b")

    assert source_for(tmp_path, tmp_path / "nas").select().short_id == "erp-2026-11-23.tar.zst"


def test_a_folder_without_a_matching_file_is_an_error_naming_the_pattern(tmp_path: Path) -> None:
    write(tmp_path / "nas" / "notes.txt", b"x")

    with pytest.raises(SourceError) as raised:
        source_for(tmp_path, tmp_path / "nas", pattern="export-*.tar.gz").select()

    assert str(raised.value) == f"no file in {tmp_path / 'nas'} matches export-*.tar.gz"


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as raised:
        source_for(tmp_path, "nas/exports").preflight()

    assert str(raised.value) == f"local path {tmp_path / 'nas' / 'exports'} does not exist"


def test_an_unreadable_path_is_an_error(tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="restore-tests-local-"))
    try:
        exports = folder / "exports"
        exports.mkdir()
        exports.chmod(0o000)
        message = preflight_without_privilege(exports)
    finally:
        exports.chmod(0o700)
        shutil.rmtree(folder)

    assert message == f"local path {exports} is not readable (Permission denied)"


def preflight_without_privilege(path: Path) -> str:
    """The preflight's error, as a user whom permissions apply to: root drops the capabilities
    that let it read anything (setpriv, util-linux); others are that user already."""
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from restore_tests.errors import SourceError
        from restore_tests.sources.local import LocalSettings, LocalSource
        settings = LocalSettings(type="local", path={str(path)!r})
        try:
            LocalSource(settings, Path("/nonexistent")).preflight()
        except SourceError as error:
            print(error)
        """
    )
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        drop = "-dac_override,-dac_read_search"
        command = ["setpriv", "--bounding-set", drop, "--inh-caps", drop, "--", *command]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
    return completed.stdout.strip()


# -- fetch ------------------------------------------------------------------------------------


def test_a_tar_gz_is_unpacked_into_staging(tmp_path: Path) -> None:
    archive = export_archive(tmp_path)

    fetched = fetch(tmp_path, source_for(tmp_path, archive.parent, pattern="export-*.tar.gz"))

    assert fetched.root == tmp_path / "work" / "target"
    assert sorted(path.name for path in (fetched.root / "erp").iterdir()) == [
        "invoice-0.csv",
        "invoice-1.csv",
        "invoice-2.csv",
    ]
    digest, unpacked = fetched.checks
    assert (digest.status, digest.proves_data) == (CHECK_PASSED, False)
    assert digest.observed.startswith(f"sha256 {sha256_of(archive)}")
    assert (unpacked.name, unpacked.status, unpacked.observed) == (
        "unpack",
        CHECK_PASSED,
        "3 files, 30 B",
    )


def test_a_sidecar_that_matches_proves_the_data(tmp_path: Path) -> None:
    archive = export_archive(tmp_path)
    write(Path(f"{archive}.sha256"), f"{sha256_of(archive)}  {archive.name}\n".encode())

    fetched = fetch(tmp_path, source_for(tmp_path, archive, digest="sidecar"))

    digest = fetched.checks[0]
    assert (digest.status, digest.reason, digest.proves_data) == (
        CHECK_PASSED,
        "sha256 matches",
        True,
    )


def test_a_sidecar_that_differs_fails_with_expected_and_got(tmp_path: Path) -> None:
    archive = export_archive(tmp_path)
    wrong = "abcd1234" + "0" * 56
    write(Path(f"{archive}.sha256"), f"{wrong} *{archive.name}\n".encode())

    fetched = fetch(tmp_path, source_for(tmp_path, archive, digest="sidecar"))

    digest = fetched.checks[0]
    assert digest.status == CHECK_FAILED
    assert digest.reason == (
        f"digest of {archive} differs: expected abcd1234..., got {sha256_of(archive)[:8]}..."
    )
    assert digest.expected == wrong


def test_a_missing_sidecar_is_an_error(tmp_path: Path) -> None:
    archive = export_archive(tmp_path)

    with pytest.raises(SourceError) as raised:
        fetch(tmp_path, source_for(tmp_path, archive, digest="sidecar"))

    assert str(raised.value) == f"sidecar {archive}.sha256 not found (digest: sidecar)"


def test_a_sidecar_larger_than_4_kib_is_refused(tmp_path: Path) -> None:
    archive = export_archive(tmp_path)
    write(Path(f"{archive}.sha256"), b"0" * 64 + b"  x\n" + b"#" * 5000)

    with pytest.raises(SourceError) as raised:
        fetch(tmp_path, source_for(tmp_path, archive, digest="sidecar"))

    assert str(raised.value) == (
        f"sidecar {archive}.sha256 is larger than 4 KiB: not a sha256sum file"
    )


def test_a_digest_written_in_the_scenario_is_compared(tmp_path: Path) -> None:
    archive = export_archive(tmp_path)
    good = source_for(tmp_path, archive, digest=f"sha256:{sha256_of(archive).upper()}")

    digest = fetch(tmp_path, good).checks[0]

    assert (digest.status, digest.proves_data) == (CHECK_PASSED, True)


def test_unpack_none_hard_links_the_file_into_staging_without_a_copy(tmp_path: Path) -> None:
    dump = write(tmp_path / "nas" / "erp.dump", os.urandom(200_000))
    source = source_for(tmp_path, dump, unpack="none")

    assert source.space_needed(source.select()) is None
    fetched = fetch(tmp_path, source)

    staged = fetched.root / "erp.dump"
    assert staged.stat().st_ino == dump.stat().st_ino
    assert dump.stat().st_nlink == 2
    assert fetched.checks == []  # nothing was read: no digest asked for


def test_unpack_none_with_a_digest_reads_the_linked_file_once(tmp_path: Path) -> None:
    archive = export_archive(tmp_path)
    source = source_for(tmp_path, archive, unpack="none", digest=f"sha256:{sha256_of(archive)}")

    fetched = fetch(tmp_path, source)

    assert os.listdir(fetched.root) == [archive.name]
    assert (fetched.root / archive.name).stat().st_ino == archive.stat().st_ino
    [digest] = fetched.checks
    assert (digest.status, digest.proves_data) == (CHECK_PASSED, True)


def test_a_setuid_file_is_copied_not_linked(tmp_path: Path) -> None:
    dump = write(tmp_path / "nas" / "erp.dump", b"data")
    dump.chmod(0o4755)
    source = source_for(tmp_path, dump, unpack="none")

    fetched = fetch(tmp_path, source)

    staged = fetched.root / "erp.dump"
    assert staged.stat().st_ino != dump.stat().st_ino
    assert staged.read_bytes() == b"data"
    assert dump.stat().st_mode & 0o4000  # the user's file is untouched


def test_an_archive_bomb_from_disk_stops_at_max_unpacked(tmp_path: Path) -> None:
    nas = tmp_path / "nas"
    nas.mkdir()
    with (nas / "bomb.gz").open("wb") as output:
        subprocess.run(["gzip", "-1"], input=bytes(50 * 1024**2), stdout=output, check=True)

    fetched = fetch(tmp_path, source_for(tmp_path, nas / "bomb.gz", max_unpacked="5m"))

    assert [check.reason for check in fetched.checks] == [
        "archive bomb.gz unpacks to more than 5 MiB (max_unpacked): stopped"
    ]


def test_a_file_that_does_not_match_the_pattern_is_an_error(tmp_path: Path) -> None:
    dump = write(tmp_path / "nas" / "notes.txt", b"x")

    with pytest.raises(SourceError) as raised:
        source_for(tmp_path, dump, pattern="export-*.tar.gz").select()

    assert str(raised.value) == f"local file {dump} does not match export-*.tar.gz"


def test_a_file_that_grew_between_select_and_fetch_is_an_error_of_the_size(
    tmp_path: Path,
) -> None:
    dump = write(tmp_path / "nas" / "erp.dump", b"a" * 1000)
    source = source_for(tmp_path, dump.parent, digest=f"sha256:{sha256_of(dump)}")
    point = source.select()
    with dump.open("ab") as still_written:
        still_written.write(b"b" * 500)
    target = tmp_path / "work" / "target"
    target.mkdir()

    fetched = source.fetch(point, FetchRequest(target=target, scratch=source.scratch))

    assert [(check.name, check.status) for check in fetched.checks] == [
        ("digest", CHECK_FAILED),
        ("size", "error"),
    ]
    assert fetched.checks[1].reason == (
        "file erp.dump changed while it was read: 1,000 bytes when selected, 1,500 read"
    )


def test_a_cancelled_fetch_raises_interrupted(tmp_path: Path) -> None:
    archive = export_archive(tmp_path)
    source = source_for(tmp_path, archive)
    target = tmp_path / "work" / "target"
    target.mkdir()
    request = FetchRequest(target=target, scratch=source.scratch, cancelled=lambda: True)

    with pytest.raises(Interrupted):
        source.fetch(source.select(), request)


# -- what the plain sources share -------------------------------------------------------------

HEX = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@pytest.mark.parametrize(
    "text", [f"{HEX}  erp.tar.gz\n", f"{HEX.upper()} *erp.tar.gz\n", f"{HEX}\n", f"  {HEX}"]
)
def test_a_sidecar_is_read_in_sha256sum_format(text: str) -> None:
    assert sidecar_digest(text.encode(), "x.sha256") == HEX


def test_a_sidecar_without_a_digest_first_is_refused() -> None:
    with pytest.raises(SourceError) as raised:
        sidecar_digest(b"sha256 of erp.tar.gz: " + HEX.encode(), "/nas/erp.tar.gz.sha256")

    assert str(raised.value) == (
        "sidecar /nas/erp.tar.gz.sha256 is not in sha256sum format (64 hex digits, then the name)"
    )


def test_max_unpacked_defaults_to_four_times_the_archive_and_at_least_1_gib() -> None:
    default = LocalSettings(type="local", path="/nas")
    written = LocalSettings(type="local", path="/nas", max_unpacked="20g")

    assert default.unpack_limit(3 * 1024**3) == 12 * 1024**3
    assert default.unpack_limit(1000) == 1024**3
    assert written.unpack_limit(3 * 1024**3) == 20 * 1024**3


def test_without_a_declared_digest_the_digest_is_recorded_but_proves_nothing() -> None:
    check = digest_check("nightly/erp.tar.zst", None, HEX, 1234)

    assert (check.status, check.proves_data) == (CHECK_PASSED, False)
    assert check.observed == f"sha256 {HEX} (1,234 bytes)"


def test_a_path_that_is_a_link_stages_the_file_it_leads_to(tmp_path: Path) -> None:
    dump = write(tmp_path / "nas" / "erp-2026-11-23.dump", b"data")
    latest = tmp_path / "nas" / "latest.dump"
    latest.symlink_to(dump.name)

    fetched = fetch(tmp_path, source_for(tmp_path, latest, unpack="none"))

    staged = fetched.root / "latest.dump"
    assert not staged.is_symlink()
    assert staged.stat().st_ino == dump.stat().st_ino


def test_a_file_read_for_its_digest_reports_its_bytes_against_its_size(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024**2 + 17)
    path = write(tmp_path / "nas" / "erp.bin", data)
    source = source_for(tmp_path, path, digest=f"sha256:{hashlib.sha256(data).hexdigest()}")
    target = tmp_path / "work" / "target"
    target.mkdir()
    reports: list[FetchProgress] = []

    source.fetch(source.select(), FetchRequest(target, source.scratch, progress=reports.append))

    assert {report.total_bytes for report in reports} == {len(data)}
    done = [report.done_bytes for report in reports]
    assert done == sorted(done) and done[0] == 0 and done[-1] == len(data)
    assert len(set(done)) >= 4  # one report per chunk read

"""Unpacking untrusted archives: real archives made by tar, gzip, zstd, xz and zip, hostile ones
made with tarfile and zipfile; everything in tmp_path."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from restore_tests import unpack_writer
from restore_tests.errors import HostError, Interrupted
from restore_tests.results import CHECK_FAILED, CHECK_PASSED
from restore_tests.unpack import AS_IS, COMPRESSED, Unpacked, archive_layout, store

pytestmark = pytest.mark.integration

MiB = 1024**2
TarEntry = Callable[[tarfile.TarFile], None]


# -- helpers ----------------------------------------------------------------------------------


def make_source_tree(root: Path) -> Path:
    """A small tree with nested folders, an empty file, a larger random file and a link."""
    source = root / "source"
    (source / "data" / "compta" / "sub").mkdir(parents=True)
    (source / "data" / "compta" / "ledger.csv").write_text("date,amount\n2026-11-23,12.50\n")
    (source / "data" / "compta" / "sub" / "empty.txt").write_bytes(b"")
    (source / "data" / "big.bin").write_bytes(os.urandom(3 * MiB + 17))
    (source / "data" / "run.sh").write_text("#!/bin/sh\necho ok\n")
    (source / "data" / "run.sh").chmod(0o750)
    (source / "data" / "ledger-link").symlink_to("compta/ledger.csv")
    return source


def tree(root: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """Every entry below root: kind, content (or link target) and permission bits."""
    entries: dict[str, tuple[str, bytes | str, int]] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        status = path.lstat()
        if path.is_symlink():
            entries[name] = ("link", os.readlink(path), 0)
        elif path.is_dir():
            entries[name] = ("folder", "", 0)
        else:
            entries[name] = ("file", path.read_bytes(), stat.S_IMODE(status.st_mode))
    return entries


def run(*command: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([str(part) for part in command], cwd=cwd, check=True, capture_output=True)


def store_file(
    archive: Path,
    tmp_path: Path,
    limit: int | None = None,
    unpack_mode: str = "auto",
    cancelled: Callable[[], bool] = lambda: False,
) -> tuple[Unpacked, Path]:
    target = tmp_path / "staging" / "target"
    scratch = tmp_path / "staging" / "scratch"
    target.mkdir(parents=True)
    scratch.mkdir()
    with archive.open("rb") as stream:
        unpacked = store(stream, archive.name, target, unpack_mode, limit, cancelled, scratch)
    return unpacked, target


def everything_outside(tmp_path: Path) -> set[str]:
    """All names below tmp_path but outside the staging target and its scratch folder."""
    staging = tmp_path / "staging"
    return {
        str(path.relative_to(tmp_path))
        for path in tmp_path.rglob("*")
        if path != staging
        and not path.is_relative_to(staging / "target")
        and not path.is_relative_to(staging / "scratch")
    }


def hostile_tar(path: Path, *entries: TarEntry) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            entry(archive)
    return path


def regular(name: str, data: bytes = b"data\n", mode: int = 0o644) -> TarEntry:
    def add(archive: tarfile.TarFile) -> None:
        member = tarfile.TarInfo(name)
        member.size, member.mode = len(data), mode
        archive.addfile(member, io.BytesIO(data))

    return add


def special(name: str, kind: bytes, linkname: str = "") -> TarEntry:
    def add(archive: tarfile.TarFile) -> None:
        member = tarfile.TarInfo(name)
        member.type, member.linkname = kind, linkname
        member.devmajor, member.devminor = 8, 0
        archive.addfile(member)

    return add


def reasons(unpacked: Unpacked) -> list[str]:
    return [check.reason for check in unpacked.checks()]


# -- normal archives, each format -------------------------------------------------------------

TOOL_ARCHIVES = {
    "erp.tar": ["tar", "-cf"],
    "erp.tar.gz": ["tar", "-czf"],
    "erp.tgz": ["tar", "-czf"],
    "erp.tar.zst": ["tar", "--zstd", "-cf"],
    "erp.tzst": ["tar", "--zstd", "-cf"],
    "erp.tar.xz": ["tar", "-cJf"],
    "erp.txz": ["tar", "-cJf"],
}


@pytest.mark.parametrize("name", sorted(TOOL_ARCHIVES))
def test_a_tar_made_by_tar_unpacks_to_the_same_tree(tmp_path: Path, name: str) -> None:
    source = make_source_tree(tmp_path)
    archive = tmp_path / name
    run(*TOOL_ARCHIVES[name], archive, "-C", source, ".")

    unpacked, target = store_file(archive, tmp_path)

    assert tree(target) == tree(source)
    assert (unpacked.files, unpacked.folders, unpacked.links) == (4, 3, 1)
    assert unpacked.bytes_written == 3 * MiB + 17 + 29 + 18
    assert unpacked.read_to_end
    [check] = unpacked.checks()
    assert (check.status, check.proves_data) == (CHECK_PASSED, False)
    assert check.observed == "4 files, 3 MiB"


def test_a_zip_made_by_zip_unpacks_to_the_same_tree(tmp_path: Path) -> None:
    source = make_source_tree(tmp_path)
    archive = tmp_path / "erp.zip"
    run("zip", "-qry", archive, ".", cwd=source)

    unpacked, target = store_file(archive, tmp_path)

    assert tree(target) == tree(source)
    assert (unpacked.files, unpacked.links) == (4, 1)
    assert [check.status for check in unpacked.checks()] == [CHECK_PASSED]
    assert os.listdir(tmp_path / "staging" / "scratch") == []  # the spill is gone


@pytest.mark.parametrize(
    ("suffix", "command"),
    [(".gz", ["gzip", "-k"]), (".zst", ["zstd", "-q"]), (".xz", ["xz", "-k"])],
)
def test_a_single_compressed_file_is_decompressed_to_its_name_without_the_suffix(
    tmp_path: Path, suffix: str, command: list[str]
) -> None:
    dump = tmp_path / "erp.sql"
    dump.write_bytes(b"INSERT INTO ledger VALUES (1);\n" * 50_000)
    run(*command, dump)

    unpacked, target = store_file(tmp_path / f"erp.sql{suffix}", tmp_path)

    assert os.listdir(target) == ["erp.sql"]
    assert (target / "erp.sql").read_bytes() == dump.read_bytes()
    assert (unpacked.layout.kind, unpacked.files) == (COMPRESSED, 1)
    assert [check.status for check in unpacked.checks()] == [CHECK_PASSED]


def test_a_file_of_unknown_suffix_is_stored_as_is(tmp_path: Path) -> None:
    data = tmp_path / "erp.dump"
    data.write_bytes(os.urandom(100_000))

    unpacked, target = store_file(data, tmp_path)

    assert (target / "erp.dump").read_bytes() == data.read_bytes()
    assert (unpacked.layout.kind, unpacked.files, unpacked.checks()) == (AS_IS, 1, [])


def test_unpack_none_stores_an_archive_as_is(tmp_path: Path) -> None:
    source = make_source_tree(tmp_path)
    archive = tmp_path / "erp.tar.gz"
    run("tar", "-czf", archive, "-C", source, ".")

    unpacked, target = store_file(archive, tmp_path, unpack_mode="none")

    assert os.listdir(target) == ["erp.tar.gz"]
    assert (target / "erp.tar.gz").read_bytes() == archive.read_bytes()
    assert unpacked.checks() == []


def test_suffixes_are_read_case_insensitively_and_from_the_last_part_of_a_key() -> None:
    assert archive_layout("nightly/ERP.TAR.ZST", "auto").compression == "zst"
    assert archive_layout("nightly/erp.sql.GZ", "auto").file_name == "erp.sql"
    assert archive_layout("nightly/..", "none").file_name == "data"


# -- hostile names and links ------------------------------------------------------------------


def test_an_entry_climbing_out_with_dotdot_is_refused_and_named(tmp_path: Path) -> None:
    archive = hostile_tar(tmp_path / "erp.tar.gz", regular("ok.txt"), regular("../escaped.txt"))
    before = everything_outside(tmp_path)

    unpacked, target = store_file(archive, tmp_path)

    assert reasons(unpacked) == [
        "archive erp.tar.gz holds 1 entry that would leave the restore folder or is not a plain "
        "file: ../escaped.txt (leads outside)"
    ]
    assert os.listdir(target) == ["ok.txt"]
    assert everything_outside(tmp_path) == before


def test_an_absolute_name_and_an_absolute_symlink_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    archive = hostile_tar(
        tmp_path / "erp.tar.gz",
        regular(f"{outside}/planted.txt"),
        special("etc-link", tarfile.SYMTYPE, "/etc"),
    )
    before = everything_outside(tmp_path)

    unpacked, target = store_file(archive, tmp_path)

    [check] = unpacked.checks()
    assert check.status == CHECK_FAILED
    assert check.reason == (
        "archive erp.tar.gz holds 2 entries that would leave the restore folder or are "
        f"not plain files: {outside}/planted.txt (absolute name), etc-link (symbolic link to an "
        "absolute path)"
    )
    assert os.listdir(target) == []
    assert everything_outside(tmp_path) == before


def test_a_symlink_climbing_above_the_root_is_refused(tmp_path: Path) -> None:
    archive = hostile_tar(
        tmp_path / "erp.tar.gz",
        special("a/up", tarfile.SYMTYPE, "../../outside"),
        special("a/fine", tarfile.SYMTYPE, "../b/c"),
    )

    unpacked, target = store_file(archive, tmp_path)

    assert [str(refusal) for refusal in unpacked.refused] == [
        "a/up (symbolic link leading outside)"
    ]
    assert os.readlink(target / "a" / "fine") == "../b/c"


def test_an_entry_through_a_symlink_placed_earlier_is_refused(tmp_path: Path) -> None:
    archive = hostile_tar(
        tmp_path / "erp.tar.gz",
        regular("real/keep.txt"),
        special("alias", tarfile.SYMTYPE, "real"),
        regular("alias/through.txt"),
    )

    unpacked, target = store_file(archive, tmp_path)

    assert [str(refusal) for refusal in unpacked.refused] == [
        "alias/through.txt (through a symbolic link (alias))"
    ]
    assert sorted(os.listdir(target / "real")) == ["keep.txt"]


def test_an_entry_under_a_refused_symlink_stays_inside_as_a_plain_folder(tmp_path: Path) -> None:
    archive = hostile_tar(
        tmp_path / "erp.tar.gz",
        special("escape", tarfile.SYMTYPE, str(tmp_path / "outside")),
        regular("escape/pwned.txt"),
    )
    before = everything_outside(tmp_path)

    unpacked, target = store_file(archive, tmp_path)

    assert unpacked.refused_count == 1
    assert (target / "escape").is_dir() and not (target / "escape").is_symlink()
    assert (target / "escape" / "pwned.txt").is_file()
    assert everything_outside(tmp_path) == before


def test_links_that_lead_outside_only_together_are_removed_once_all_are_placed(
    tmp_path: Path,
) -> None:
    # 'b' looks inside when placed (b -> a/a/..), but once 'a' -> '.' is placed, b leads above.
    archive = hostile_tar(
        tmp_path / "erp.tar.gz",
        special("b", tarfile.SYMTYPE, "a/a/.."),
        special("a", tarfile.SYMTYPE, "."),
    )

    unpacked, target = store_file(archive, tmp_path)

    assert [str(refusal) for refusal in unpacked.refused] == ["b (symbolic link leading outside)"]
    assert os.listdir(target) == ["a"]
    assert unpacked.links == 1


def test_hard_links_only_to_a_file_extracted_before(tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not yours\n")
    archive = hostile_tar(
        tmp_path / "erp.tar.gz",
        regular("data/original.txt", b"shared\n"),
        special("data/same.txt", tarfile.LNKTYPE, "data/original.txt"),
        special("up.txt", tarfile.LNKTYPE, "../outside/secret.txt"),
        special("abs.txt", tarfile.LNKTYPE, str(secret)),
        special("later.txt", tarfile.LNKTYPE, "data/not-yet.txt"),
        special("data/link", tarfile.SYMTYPE, "original.txt"),
        special("to-link.txt", tarfile.LNKTYPE, "data/link"),
        special("nowhere.txt", tarfile.LNKTYPE, "missing/file.txt"),
    )

    unpacked, target = store_file(archive, tmp_path)

    assert [str(refusal) for refusal in unpacked.refused] == [
        "up.txt (hard link leading outside)",
        "abs.txt (hard link leading outside)",
        "later.txt (hard link to a file not extracted before)",
        "to-link.txt (hard link to a file not extracted before)",
        "nowhere.txt (hard link to a file not extracted before)",
    ]
    assert sorted(os.listdir(target)) == ["data"]  # no folder made for a missing source
    original, same = target / "data" / "original.txt", target / "data" / "same.txt"
    assert original.stat().st_ino == same.stat().st_ino
    assert secret.stat().st_nlink == 1
    assert unpacked.files == 2


def test_device_files_and_fifos_are_never_created(tmp_path: Path) -> None:
    archive = hostile_tar(
        tmp_path / "erp.tar.gz",
        special("dev/sda", tarfile.BLKTYPE),
        special("dev/tty", tarfile.CHRTYPE),
        special("run/pipe", tarfile.FIFOTYPE),
        regular("ok.txt"),
    )

    unpacked, target = store_file(archive, tmp_path)

    assert reasons(unpacked) == [
        "archive erp.tar.gz holds 3 entries that would leave the restore folder or are not "
        "plain files: dev/sda (device file), dev/tty (device file), run/pipe (FIFO)"
    ]
    assert sorted(path.name for path in target.rglob("*")) == ["ok.txt"]


def test_setuid_and_setgid_bits_are_dropped(tmp_path: Path) -> None:
    archive = hostile_tar(
        tmp_path / "erp.tar.gz",
        regular("bin/su", b"\x7fELF", mode=0o4755),
        regular("bin/wall", b"\x7fELF", mode=0o2755),
        regular("bin/plain", b"\x7fELF", mode=0o755),
    )

    unpacked, target = store_file(archive, tmp_path)

    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (target / "bin").iterdir()}
    assert modes == {"su": 0o755, "wall": 0o755, "plain": 0o755}
    assert unpacked.setuid_dropped == 2
    [check] = unpacked.checks()
    assert check.detail == "setuid/setgid bits dropped on 2 files"


def test_a_file_where_a_folder_is_needed_refuses_the_entries_below_it(tmp_path: Path) -> None:
    archive = hostile_tar(tmp_path / "erp.tar.gz", regular("a"), regular("a/b"))

    unpacked, _ = store_file(archive, tmp_path)

    assert [str(refusal) for refusal in unpacked.refused] == ["a/b (a is not a folder)"]


def test_a_name_part_longer_than_255_bytes_is_refused(tmp_path: Path) -> None:
    archive = hostile_tar(tmp_path / "erp.tar.gz", regular("x" * 300), regular("ok"))

    unpacked, _ = store_file(archive, tmp_path)

    assert [refusal.why for refusal in unpacked.refused] == ["name too long"]


def test_an_oversized_pax_header_is_damage_not_memory(tmp_path: Path) -> None:
    archive = tmp_path / "erp.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as writer:
        member = tarfile.TarInfo("a.txt")
        member.pax_headers = {"comment": "x" * (2 * MiB)}
        writer.addfile(member, io.BytesIO(b""))

    unpacked, _ = store_file(archive, tmp_path)

    assert reasons(unpacked) == [
        "archive erp.tar is truncated or corrupt: a tar header of 2 MiB (longer than any name) "
        "after 1 MiB"
    ]


def test_a_zip_with_dotdot_names_absolute_links_and_devices_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "erp.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        writer.writestr("ok.txt", "fine\n")
        writer.writestr("../../escaped.txt", "no\n")
        link = zipfile.ZipInfo("etc")
        link.create_system, link.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
        writer.writestr(link, "/etc")
        device = zipfile.ZipInfo("sda")
        device.create_system, device.external_attr = 3, (stat.S_IFBLK | 0o600) << 16
        writer.writestr(device, "")
    before = everything_outside(tmp_path)

    unpacked, target = store_file(archive, tmp_path)

    assert reasons(unpacked) == [
        "archive erp.zip holds 3 entries that would leave the restore folder or are not plain "
        "files: ../../escaped.txt (leads outside), etc (symbolic link to an absolute path), "
        "sda (device file)"
    ]
    assert os.listdir(target) == ["ok.txt"]
    assert everything_outside(tmp_path) == before


# -- damage and limits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("erp.tar.gz", ["tar", "-czf"]),
        ("erp.tar.zst", ["tar", "--zstd", "-cf"]),
        ("erp.tar.xz", ["tar", "-cJf"]),
    ],
)
def test_a_truncated_compressed_tar_fails_with_where_it_ended(
    tmp_path: Path, name: str, command: list[str]
) -> None:
    source = make_source_tree(tmp_path)
    whole = tmp_path / "whole"
    run(*command, whole, "-C", source, ".")
    archive = tmp_path / name
    archive.write_bytes(whole.read_bytes()[: 2 * MiB])

    unpacked, _ = store_file(archive, tmp_path)

    assert reasons(unpacked) == [
        f"archive {name} is truncated or corrupt: unexpected end of data after 2 MiB"
    ]
    assert unpacked.read_to_end


@pytest.mark.parametrize("name", ["erp.sql.gz", "erp.sql.zst", "erp.sql.xz"])
def test_a_truncated_single_compressed_file_fails(tmp_path: Path, name: str) -> None:
    dump = tmp_path / "erp.sql"
    dump.write_bytes(os.urandom(MiB))
    tool = {".gz": "gzip", ".zst": "zstd", ".xz": "xz"}[Path(name).suffix]
    run(tool, "-k", "-q", dump) if tool == "zstd" else run(tool, "-k", dump)
    archive = tmp_path / name
    archive.write_bytes(archive.read_bytes()[:-100])

    unpacked, _ = store_file(archive, tmp_path)

    [reason] = reasons(unpacked)
    assert reason.startswith(f"archive {name} is truncated or corrupt: ")


def test_a_tar_cut_between_two_members_fails_though_tarfile_says_nothing(tmp_path: Path) -> None:
    whole = tmp_path / "whole.tar"
    with tarfile.open(whole, "w", format=tarfile.GNU_FORMAT) as writer:
        regular("a.txt", b"a" * 512)(writer)
        regular("b.txt")(writer)
    archive = tmp_path / "erp.tar"
    archive.write_bytes(whole.read_bytes()[:1024])  # a.txt's header and data, nothing more

    unpacked, target = store_file(archive, tmp_path)

    assert reasons(unpacked) == [
        "archive erp.tar is truncated or corrupt: unexpected end of data after 1 KiB"
    ]
    assert (target / "a.txt").read_bytes() == b"a" * 512


def test_a_damaged_header_in_the_middle_fails(tmp_path: Path) -> None:
    archive = tmp_path / "erp.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as writer:
        for name in ("a.txt", "b.txt", "c.txt"):
            regular(name, b"x" * 100)(writer)
    raw = bytearray(archive.read_bytes())
    raw[1024 + 148 : 1024 + 156] = b"9999999\0"  # b.txt's header checksum
    archive.write_bytes(bytes(raw))

    unpacked, target = store_file(archive, tmp_path)

    assert reasons(unpacked) == [
        "archive erp.tar is truncated or corrupt: invalid tar header at byte 1,024 of the "
        "unpacked data after 10 KiB"
    ]
    assert os.listdir(target) == ["a.txt"]


def test_a_corrupt_zip_member_fails(tmp_path: Path) -> None:
    archive = tmp_path / "erp.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as writer:
        writer.writestr("a.txt", b"a" * 1000)
    raw = bytearray(archive.read_bytes())
    raw[raw.index(b"a" * 1000) + 500] = ord("b")
    archive.write_bytes(bytes(raw))

    unpacked, _ = store_file(archive, tmp_path)

    assert reasons(unpacked) == [
        "archive erp.zip is truncated or corrupt: a.txt: Bad CRC-32 for file 'a.txt'"
    ]


def test_a_decompression_bomb_stops_at_the_limit(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as writer:
        member = tarfile.TarInfo("zeros")
        member.size = 200 * MiB
        with open("/dev/zero", "rb") as zeros:
            writer.addfile(member, zeros)
    assert archive.stat().st_size < MiB

    unpacked, target = store_file(archive, tmp_path, limit=10 * MiB)

    assert reasons(unpacked) == [
        "archive bomb.tar.gz unpacks to more than 10 MiB (max_unpacked): stopped"
    ]
    assert unpacked.bytes_written <= 10 * MiB
    assert sum(path.stat().st_size for path in target.rglob("*")) <= 10 * MiB
    assert not unpacked.read_to_end


def test_a_single_file_bomb_stops_at_the_limit(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zst"
    with open("/dev/zero", "rb") as zeros, archive.open("wb") as output:
        process = subprocess.Popen(["zstd", "-q", "-c"], stdin=subprocess.PIPE, stdout=output)
        assert process.stdin is not None
        for _ in range(200):
            process.stdin.write(zeros.read(MiB))
        process.stdin.close()
        assert process.wait() == 0

    unpacked, target = store_file(archive, tmp_path, limit=10 * MiB)

    assert reasons(unpacked) == [
        "archive bomb.zst unpacks to more than 10 MiB (max_unpacked): stopped"
    ]
    assert (target / "bomb").stat().st_size <= 10 * MiB


def test_more_entries_than_the_limit_stop_unpacking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unpack_writer, "MAX_ENTRIES", 5)
    archive = hostile_tar(tmp_path / "erp.tar.gz", *(regular(f"f{index}") for index in range(9)))

    unpacked, target = store_file(archive, tmp_path)

    assert reasons(unpacked) == ["archive erp.tar.gz holds more than 5 entries: stopped"]
    assert len(os.listdir(target)) == 5


# -- the host, the stream, cancellation -------------------------------------------------------


def test_cancellation_raises_interrupted(tmp_path: Path) -> None:
    source = make_source_tree(tmp_path)
    archive = tmp_path / "erp.tar.gz"
    run("tar", "-czf", archive, "-C", source, ".")

    with pytest.raises(Interrupted):
        store_file(archive, tmp_path, cancelled=lambda: True)


def test_an_error_of_the_stream_is_raised_as_it_came_not_taken_for_damage(
    tmp_path: Path,
) -> None:
    source = make_source_tree(tmp_path)
    archive = tmp_path / "erp.tar.gz"
    run("tar", "-czf", archive, "-C", source, ".")

    class CutConnection:
        """The archive's first MiB, then the connection is reset."""

        def __init__(self) -> None:
            self.stream = io.BytesIO(archive.read_bytes()[:MiB])

        def read(self, size: int = -1, /) -> bytes:
            data = self.stream.read(size)
            if not data:
                raise ConnectionResetError("connection reset by peer")
            return data

    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(ConnectionResetError, match="connection reset by peer"):
        store(CutConnection(), "erp.tar.gz", target, "auto", None, lambda: False, tmp_path)


def test_a_target_the_host_cannot_write_is_a_host_error(tmp_path: Path) -> None:
    with pytest.raises(HostError) as raised:
        store(io.BytesIO(b"x"), "x.bin", tmp_path / "gone", "auto", None, lambda: False, tmp_path)
    assert str(raised.value) == f"cannot write {tmp_path / 'gone'}: No such file or directory"


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (root only): a disk that fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", mount_point)
    try:
        yield mount_point
    finally:
        run("umount", mount_point)


def test_no_space_left_in_the_staging_folder_is_a_host_error_naming_it(
    tmp_path: Path, tiny_filesystem: Path
) -> None:
    source = make_source_tree(tmp_path)
    archive = tmp_path / "erp.tar.zst"
    run("tar", "--zstd", "-cf", archive, "-C", source, ".")

    with pytest.raises(HostError) as raised, archive.open("rb") as stream:
        store(stream, archive.name, tiny_filesystem, "auto", None, lambda: False, tmp_path)

    assert str(raised.value) == (
        f"cannot write data/big.bin in the staging folder {tiny_filesystem}: "
        "No space left on device"
    )


def test_many_refusals_show_five_in_the_reason_and_twenty_in_the_detail(tmp_path: Path) -> None:
    archive = hostile_tar(
        tmp_path / "erp.tar.gz", *(regular(f"../up-{index:02}") for index in range(30))
    )

    unpacked, _ = store_file(archive, tmp_path)

    [check] = unpacked.checks()
    assert check.reason == (
        "archive erp.tar.gz holds 30 entries that would leave the restore folder or are not "
        "plain files: ../up-00 (leads outside), ../up-01 (leads outside), ../up-02 (leads "
        "outside), ../up-03 (leads outside), ../up-04 (leads outside), ... (+25 more)"
    )
    assert check.detail.splitlines()[-2:] == ["../up-19 (leads outside)", "(+10 more)"]


def test_concatenated_zstd_frames_are_all_decompressed(tmp_path: Path) -> None:
    first, second = tmp_path / "a.sql", tmp_path / "b.sql"
    first.write_bytes(b"first part\n" * 10_000)
    second.write_bytes(b"second part\n" * 10_000)
    run("zstd", "-q", first, second)
    archive = tmp_path / "erp.sql.zst"
    archive.write_bytes(Path(f"{first}.zst").read_bytes() + Path(f"{second}.zst").read_bytes())

    unpacked, target = store_file(archive, tmp_path)

    assert (target / "erp.sql").read_bytes() == first.read_bytes() + second.read_bytes()
    assert [check.status for check in unpacked.checks()] == [CHECK_PASSED]


@pytest.mark.parametrize("sparse_format", ["gnu", "posix"])
def test_a_sparse_file_made_by_tar_unpacks_with_its_holes(
    tmp_path: Path, sparse_format: str
) -> None:
    disk = tmp_path / "source" / "disk.raw"
    disk.parent.mkdir()
    with disk.open("wb") as image:
        image.truncate(16 * MiB)
        image.seek(2 * MiB)
        image.write(b"boot sector" * 1000)
        image.seek(10 * MiB)
        image.write(os.urandom(MiB))
    archive = tmp_path / "vm.tar.gz"
    run("tar", f"--format={sparse_format}", "-cSzf", archive, "-C", disk.parent, "disk.raw")

    unpacked, target = store_file(archive, tmp_path)

    assert [check.status for check in unpacked.checks()] == [CHECK_PASSED]
    assert (target / "disk.raw").read_bytes() == disk.read_bytes()


def test_a_modification_time_no_clock_can_hold_is_ignored(tmp_path: Path) -> None:
    def far_future(archive: tarfile.TarFile) -> None:
        member = tarfile.TarInfo("far.txt")
        member.size, member.mtime = 4, 10**30
        archive.addfile(member, io.BytesIO(b"data"))

    unpacked, target = store_file(hostile_tar(tmp_path / "erp.tar.gz", far_future), tmp_path)

    assert [check.status for check in unpacked.checks()] == [CHECK_PASSED]
    assert (target / "far.txt").read_bytes() == b"data"

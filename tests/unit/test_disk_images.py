"""What a disk image is, from its magic bytes, and what sfdisk says of its partitions: pure
logic, no qemu-img."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runners.disk_images import (
    Partition,
    declared_format_problem,
    filesystem_reader,
    image_format,
    parse_partitions,
)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"QFI\xfb\x00\x00\x00\x03" + bytes(100), "qcow2"),
        (b"KDMV" + bytes(100), "vmdk"),
        (b"# Disk DescriptorFile\nversion=1\n", "vmdk"),
        (
            b"<<< Oracle VM VirtualBox Disk Image >>>\n".ljust(64, b"\x00") + b"\x7f\x10\xda\xbe",
            "vdi",
        ),
        (b"vhdxfile" + bytes(100), "vhdx"),
        (b"\xeb\x63\x90" + bytes(507) + b"\x55\xaa", "raw"),
        (b"", "raw"),
    ],
)
def test_the_format_is_read_from_the_magic_bytes(head: bytes, expected: str) -> None:
    assert image_format(head) == expected


def test_a_qcow2_declared_raw_is_refused_because_any_file_is_valid_raw(tmp_path: Path) -> None:
    image = tmp_path / "erp.img"
    image.write_bytes(b"QFI\xfb" + bytes(508))

    assert declared_format_problem(image, "raw") == (
        "declared raw, but it is a qcow2 image (its header says so)"
    )


def test_a_qcow2_whose_header_is_broken_has_no_header_qemu_img_knows(tmp_path: Path) -> None:
    image = tmp_path / "erp.qcow2"
    image.write_bytes(b"QFX\xfb" + bytes(508))

    assert declared_format_problem(image, "qcow2") == (
        "declared qcow2, but the file has no image header qemu-img knows"
    )
    assert declared_format_problem(image, "raw") == ""


def test_a_vmdk_declared_qcow2_names_the_header_it_has(tmp_path: Path) -> None:
    image = tmp_path / "erp.qcow2"
    image.write_bytes(b"KDMV" + bytes(508))

    assert (
        declared_format_problem(image, "qcow2") == "declared qcow2, but the file has a vmdk header"
    )


def test_a_fifo_is_never_read_as_an_image(tmp_path: Path) -> None:
    fifo = tmp_path / "disk.qcow2"
    os.mkfifo(fifo)
    with pytest.raises(OSError):
        declared_format_problem(fifo, "qcow2")


def test_sfdisk_json_gives_numbered_partitions_with_byte_offsets() -> None:
    text = json.dumps(
        {
            "partitiontable": {
                "label": "dos",
                "unit": "sectors",
                "sectorsize": 512,
                "partitions": [
                    {"node": "d1", "start": 2048, "size": 30720, "type": "c", "bootable": True},
                    {"node": "d2", "start": 32768, "size": 32768, "type": "83"},
                ],
            }
        }
    )

    partitions = parse_partitions(text)

    assert partitions == [Partition(1, 2048, 30720, "c"), Partition(2, 32768, 32768, "83")]
    assert partitions[1].offset == 32768 * 512
    assert partitions[0].describe() == "1: 15.0 MiB (type c)"


@pytest.mark.parametrize("text", ["", "not json", "{}", '{"partitiontable": 3}'])
def test_text_that_is_not_sfdisk_json_is_not_a_table(text: str) -> None:
    assert parse_partitions(text) is None


def test_a_table_without_partitions_is_an_empty_list() -> None:
    assert parse_partitions('{"partitiontable": {"label": "gpt"}}') == []


@pytest.mark.parametrize("filesystem", ["ext2", "ext3", "ext4", "vfat", "ntfs"])
def test_known_filesystems_have_a_reader(filesystem: str) -> None:
    reader = filesystem_reader(filesystem)
    assert reader is not None
    assert "/scratch/guest-file" in reader("$1", Partition(1, 2048, 100, "83"), "'/etc/hostname'")


@pytest.mark.parametrize(
    "filesystem", ["LVM2_member", "crypto_LUKS", "BitLocker", "swap", "", "zfs_member"]
)
def test_filesystems_that_cannot_be_read_here_have_no_reader(filesystem: str) -> None:
    assert filesystem_reader(filesystem) is None


def test_the_ext_reader_trusts_debugfs_words_not_its_exit_code() -> None:
    script = filesystem_reader("ext4")("$1", Partition(2, 32768, 100, "83"), "'/etc/host name'")  # type: ignore[misc]

    assert '"$1?offset=16777216"' in script
    assert "grep -q 'not found'" in script
    assert "P='/etc/host name'" in script

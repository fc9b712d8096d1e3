"""What a disk image is and what is inside it: pure logic over a bounded head of the file, sfdisk's
JSON, and the shell lines that read one file of a guest filesystem without mounting it.

A declared format is checked against the file's own magic before qemu-img is asked: any file
is a valid raw image, so a qcow2 declared raw would otherwise "pass" as raw bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from restore_tests.timing import format_size
from runners.dumps import read_head

SECTOR = 512
# The magic bytes of the formats qemu-img reads, at their offsets.
IMAGE_FORMATS: dict[str, list[tuple[int, bytes]]] = {
    "qcow2": [(0, b"QFI\xfb")],
    "vmdk": [(0, b"KDMV"), (0, b"# Disk DescriptorFile")],
    "vdi": [(64, b"\x7f\x10\xda\xbe")],
    "vhdx": [(0, b"vhdxfile")],
}
GUEST_FILE = "/scratch/guest-file"
READER_ERRORS = "/scratch/reader.err"


def image_format(head: bytes) -> str:
    """The format a file's first bytes announce; 'raw' when none does."""
    for name, signatures in IMAGE_FORMATS.items():
        if any(head[offset : offset + len(magic)] == magic for offset, magic in signatures):
            return name
    return "raw"


def declared_format_problem(path: Path, declared: str) -> str:
    """Why the file is not of the declared format, or '' (qemu-img judges the rest)."""
    found = image_format(read_head(path, 4096))
    if declared == "raw" and found != "raw":
        return f"declared raw, but it is a {found} image (its header says so)"
    if declared != "raw" and found != declared:
        what = "no image header qemu-img knows" if found == "raw" else f"a {found} header"
        return f"declared {declared}, but the file has {what}"
    return ""


@dataclass(frozen=True)
class Partition:
    number: int  # 1-based, in the table's order
    start: int  # sectors
    size: int  # sectors
    type: str  # MBR type (83) or GPT type GUID

    @property
    def offset(self) -> int:
        return self.start * SECTOR

    @property
    def end(self) -> int:
        """The byte just past the partition."""
        return (self.start + self.size) * SECTOR

    def describe(self) -> str:
        return f"{self.number}: {format_size(self.size * SECTOR)} (type {self.type})"


def parse_partitions(text: str) -> list[Partition] | None:
    """sfdisk --json's partitions, in order; None when the text is not its JSON."""
    try:
        table = json.loads(text)["partitiontable"]
        return [
            Partition(index, int(entry["start"]), int(entry["size"]), str(entry.get("type", "")))
            for index, entry in enumerate(table.get("partitions", []), 1)
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


Reader = Callable[[str, Partition, str], str]


def _ext(raw: str, part: Partition, path: str) -> str:
    """debugfs prints 'File not found by ext2_lookup' and exits 0: its words decide. (`dump -p`
    would copy a mode of 0000 too, and the copy could not be hashed.)"""
    return (
        f"rm -f {GUEST_FILE}; P={path}; "
        f'debugfs -R "dump \\"$P\\" {GUEST_FILE}" "{raw}?offset={part.offset}" '
        f"2>{READER_ERRORS} >/dev/null; "
        f"if grep -q 'not found' {READER_ERRORS} || [ ! -f {GUEST_FILE} ]; then "
        f"cat {READER_ERRORS} >&2; exit 2; fi"
    )


def _fat(raw: str, part: Partition, path: str) -> str:
    return f'mtype -i "{raw}@@{part.offset}" ::{path} >{GUEST_FILE}'


def _ntfs(raw: str, part: Partition, path: str) -> str:
    """ntfscat reads a filesystem image, not an offset: the partition is copied (sparse)."""
    return (
        f'dd if="{raw}" of=/scratch/partition.img bs={SECTOR} skip={part.start} '
        f"count={part.size} conv=sparse status=none && "
        f"ntfscat /scratch/partition.img {path} >{GUEST_FILE}"
    )


READERS: dict[str, Reader] = {
    "ext2": _ext,
    "ext3": _ext,
    "ext4": _ext,
    "vfat": _fat,
    "msdos": _fat,
    "ntfs": _ntfs,
}


def filesystem_reader(filesystem: str) -> Reader | None:
    """How to read one file of this filesystem (as blkid names it); None when it cannot be read
    here (LVM2_member, crypto_LUKS, BitLocker, swap, an unknown one)."""
    return READERS.get(filesystem)

"""Safe, streaming unpacking of untrusted archives into a staging folder.

An archive fetched from a backup store may have been made by an attacker (ARCHITECTURE.md,
"Threat model"). Every entry is checked and written by hand, never with extractall: no
absolute name, no `..`, nothing written through a symbolic link (the folders below the target
are opened one by one with O_NOFOLLOW, so a link the archive placed earlier is never followed),
symbolic links that are absolute or climb above the root refused and named, hard links only to
a plain file already extracted, no device or FIFO, no setuid/setgid bit kept, files created with
O_EXCL|O_NOFOLLOW. The stream is read once, front to back: a tar is unpacked while it streams
(a .zip needs random access and is spilled to a scratch file first). The bytes unpacked are
limited (a decompression bomb stops at max_unpacked), and so are the entries and name lengths.

Damage and refusals are findings about the backup (a FAIL in `Unpacked.checks()`); a failure
of the host (no space, permission denied) raises HostError; an error of the stream being read
(the network, the source disk) is raised as it came, for the source to explain.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from restore_tests.results import Check
from restore_tests.unpack_formats import SourceReader, decompressed, drain, unpack_tar, unpack_zip
from restore_tests.unpack_writer import (
    MAX_PART_BYTES,
    Damaged,
    Stopped,
    StreamFailed,
    Writer,
    size_text,
)

UNPACK_AUTO, UNPACK_NONE = "auto", "none"
TAR, ZIP, COMPRESSED, AS_IS = "tar", "zip", "compressed file", "file"
_TAR_SUFFIXES = {
    ".tar": "",
    ".tar.gz": "gz",
    ".tgz": "gz",
    ".tar.zst": "zst",
    ".tzst": "zst",
    ".tar.xz": "xz",
    ".txz": "xz",
}
_COMPRESSED_SUFFIXES = {".gz": "gz", ".zst": "zst", ".xz": "xz"}
FIRST_REFUSED = 20  # refusals kept (the count is exact)
REFUSED_IN_REASON = 5


class Readable(Protocol):
    """A binary stream read front to back: a file, an HTTP body, a HashingReader."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Layout:
    """How a fetched file is stored: unpacked as a tar or zip, decompressed, or as is."""

    kind: str  # TAR, ZIP, COMPRESSED or AS_IS
    compression: str  # "", "gz", "zst" or "xz"
    file_name: str  # the name written below the target (COMPRESSED and AS_IS)


@dataclass(frozen=True)
class Refusal:
    """An archive entry that was not written, and why."""

    name: str
    why: str

    def __str__(self) -> str:
        return f"{self.name} ({self.why})"


@dataclass
class Unpacked:
    """What storing one fetched file wrote, refused and found."""

    archive: str  # the file's name as shown: erp-2026-11-23.tar.zst
    layout: Layout
    files: int = 0
    folders: int = 0
    links: int = 0
    bytes_written: int = 0
    refused: list[Refusal] = field(default_factory=list)  # the first FIRST_REFUSED
    refused_count: int = 0
    setuid_dropped: int = 0  # files whose setuid/setgid bits were not kept
    damage: str = ""  # why the archive could not be read to its end
    stopped: str = ""  # why unpacking was stopped: the byte or entry limit
    read_to_end: bool = False  # the stream was read to its end (its digest is the whole file's)

    def refuse(self, name: str, why: str) -> None:
        self.refused_count += 1
        if len(self.refused) < FIRST_REFUSED:
            self.refused.append(Refusal(name, why))

    def checks(self) -> list[Check]:
        """FAILs for refused entries, damage and a stop at a limit; a PASS otherwise (not a
        proof of data: unpacking compares nothing). Nothing for a file stored as is."""
        if self.layout.kind == AS_IS:
            return []
        found = [
            Check.failed("unpack", reason, detail=detail)
            for reason, detail in (self._refusal_reason(), self._damage_reason())
            if reason
        ]
        if found:
            return found
        observed = f"{self.files:,} files, {size_text(self.bytes_written)}"
        detail = (
            f"setuid/setgid bits dropped on {self.setuid_dropped:,} files"
            if self.setuid_dropped
            else ""
        )
        return [Check.passed("unpack", observed=observed, detail=detail)]

    def _refusal_reason(self) -> tuple[str, str]:
        """The first few refusals in the reason, the first FIRST_REFUSED in the detail."""
        count = self.refused_count
        if not count:
            return "", ""
        entries = "entry that would leave" if count == 1 else "entries that would leave"
        kind = "is not a plain file" if count == 1 else "are not plain files"
        listed = ", ".join(str(refusal) for refusal in self.refused[:REFUSED_IN_REASON])
        if count > REFUSED_IN_REASON:
            listed += f", ... (+{count - REFUSED_IN_REASON:,} more)"
        detail = "\n".join(str(refusal) for refusal in self.refused)
        if count > len(self.refused):
            detail += f"\n(+{count - len(self.refused):,} more)"
        reason = f"archive {self.archive} holds {count:,} {entries} the restore folder or {kind}"
        return f"{reason}: {listed}", detail

    def _damage_reason(self) -> tuple[str, str]:
        if self.stopped:
            return f"archive {self.archive} {self.stopped}", ""
        if self.damage:
            return f"archive {self.archive} is truncated or corrupt: {self.damage}", ""
        return "", ""


def archive_layout(name: str, unpack: str) -> Layout:
    """How a file of this name is stored (by its suffix, case-insensitive, with unpack auto)."""
    base = name.rsplit("/", 1)[-1]
    lower = base.lower()
    if unpack == UNPACK_AUTO:
        for suffix, compression in _TAR_SUFFIXES.items():
            if lower.endswith(suffix):
                return Layout(TAR, compression, "")
        if lower.endswith(".zip"):
            return Layout(ZIP, "", "")
        for suffix, compression in _COMPRESSED_SUFFIXES.items():
            if lower.endswith(suffix):
                return Layout(COMPRESSED, compression, _file_name(base[: -len(suffix)], base))
    return Layout(AS_IS, "", _file_name(base, base))


def _file_name(wanted: str, fallback: str) -> str:
    for candidate in (wanted, fallback):
        if candidate not in ("", ".", "..") and len(os.fsencode(candidate)) <= MAX_PART_BYTES:
            return candidate
    return "data"


def store(
    stream: Readable,
    name: str,
    target: Path,
    unpack: str,
    limit_bytes: int | None,
    cancelled: Callable[[], bool],
    scratch: Path | None = None,
) -> Unpacked:
    """Store a fetched file below target: unpacked, decompressed or as is (archive_layout).

    The stream is read once, front to back, and to its end unless unpacking was stopped (at
    limit_bytes of unpacked data, or at MAX_ENTRIES). A .zip is spilled to a scratch file in
    `scratch` (required for a .zip). Refusals and damage are in the result; HostError when
    target cannot be written; Interrupted when cancelled() turns true; an error raised by the
    stream itself is raised unchanged.
    """
    layout = archive_layout(name, unpack)
    unpacked = Unpacked(name.rsplit("/", 1)[-1], layout)
    source = SourceReader(stream, cancelled)
    writer = Writer(target, unpacked, limit_bytes, cancelled)
    try:
        _store_and_judge(source, layout, writer, scratch)
    except StreamFailed as failure:
        raise failure.original from None
    finally:
        writer.close()
    return unpacked


def _store_and_judge(
    source: SourceReader, layout: Layout, writer: Writer, scratch: Path | None
) -> None:
    """Store, then read what is left of the stream (for the digest of the whole file) unless
    a limit stopped it; damage and stops are noted in writer.unpacked."""
    unpacked = writer.unpacked
    try:
        _store_layout(source, layout, writer, scratch)
    except Damaged as damage:
        where = f" after {size_text(source.bytes_read)}" if damage.at_offset else ""
        unpacked.damage = damage.reason + where
    except Stopped as stop:
        unpacked.stopped = stop.reason
    writer.sweep_links()
    if not unpacked.stopped:
        drain(source)
        unpacked.read_to_end = True


def _store_layout(
    source: SourceReader, layout: Layout, writer: Writer, scratch: Path | None
) -> None:
    if layout.kind == TAR:
        unpack_tar(decompressed(source, layout.compression, writer.limit_bytes), writer)
    elif layout.kind == ZIP:
        if scratch is None:
            raise ValueError("a .zip needs a scratch folder to be spilled to")
        unpack_zip(source, scratch, writer)
    elif layout.kind == COMPRESSED:
        stream = decompressed(source, layout.compression, writer.limit_bytes)
        writer.write_file((layout.file_name,), 0o644, None, stream.read)
        writer.unpacked.files += 1
    else:
        writer.write_file((layout.file_name,), 0o644, None, source.read, limited=False)
        writer.unpacked.files += 1

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

import contextlib
import errno
import gzip
import lzma
import os
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import zstandard

from restore_tests.errors import HostError, Interrupted
from restore_tests.results import Check
from restore_tests.timing import format_size

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
MAX_ENTRIES = 10_000_000
MAX_NAME_BYTES = 4095  # PATH_MAX - 1
MAX_PART_BYTES = 255  # NAME_MAX
MAX_HEADER_BYTES = 1024**2  # a pax header or GNU long name larger than this is not a name
FIRST_REFUSED = 20  # refusals kept (the count is exact)
REFUSED_IN_REASON = 5
CHUNK_BYTES = 1024**2
CANCEL_EVERY = 1000  # entries between two looks at the cancel flag
_FOLDER_CACHE = 256  # open folder descriptors kept between entries
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# What an entry meets in the way when it is not a folder: a refusal, not a fault of the host.
_IN_THE_WAY = {errno.ELOOP, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG}

LEADS_OUTSIDE = "leads outside"
ABSOLUTE_NAME = "absolute name"
DEVICE = "device file"
FIFO = "FIFO"
NOT_PLAIN = "not a plain file"
ABSOLUTE_LINK = "symbolic link to an absolute path"
LINK_OUTSIDE = "symbolic link leading outside"
HARD_LINK_OUTSIDE = "hard link leading outside"
HARD_LINK_UNKNOWN = "hard link to a file not extracted before"
THROUGH_LINK = "through a symbolic link"
NAME_TOO_LONG = "name too long"
INVALID_NAME = "invalid name"
UNEXPECTED_END = "unexpected end of data"


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


def size_text(size: int) -> str:
    """A size as people write it: 4 GiB, 1.2 MiB, 512 B."""
    return format_size(size).replace(".0 ", " ")


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
    source = _SourceReader(stream, cancelled)
    writer = _Writer(target, unpacked, limit_bytes, cancelled)
    try:
        _store_and_judge(source, layout, writer, scratch)
    except _StreamFailed as failure:
        raise failure.original from None
    finally:
        writer.close()
    return unpacked


def _store_and_judge(
    source: _SourceReader, layout: Layout, writer: _Writer, scratch: Path | None
) -> None:
    """Store, then read what is left of the stream (for the digest of the whole file) unless
    a limit stopped it; damage and stops are noted in writer.unpacked."""
    unpacked = writer.unpacked
    try:
        _store_layout(source, layout, writer, scratch)
    except _Damaged as damage:
        where = f" after {size_text(source.bytes_read)}" if damage.at_offset else ""
        unpacked.damage = damage.reason + where
    except _Stopped as stop:
        unpacked.stopped = stop.reason
    writer.sweep_links()
    if not unpacked.stopped:
        _drain(source)
        unpacked.read_to_end = True


def _store_layout(
    source: _SourceReader, layout: Layout, writer: _Writer, scratch: Path | None
) -> None:
    if layout.kind == TAR:
        _unpack_tar(_decompressed(source, layout.compression, writer.limit_bytes), writer)
    elif layout.kind == ZIP:
        if scratch is None:
            raise ValueError("a .zip needs a scratch folder to be spilled to")
        _unpack_zip(source, scratch, writer)
    elif layout.kind == COMPRESSED:
        stream = _decompressed(source, layout.compression, writer.limit_bytes)
        writer.write_file((layout.file_name,), 0o644, None, stream.read)
        writer.unpacked.files += 1
    else:
        writer.write_file((layout.file_name,), 0o644, None, source.read, limited=False)
        writer.unpacked.files += 1


def _drain(stream: Readable) -> None:
    """Read what is left (for the digest of the whole file), writing nothing."""
    while stream.read(CHUNK_BYTES):
        pass


# -- what may stop unpacking ------------------------------------------------------------------


class _Refused(Exception):
    """One entry is not written."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _Damaged(Exception):
    """The archive cannot be read on: truncated or corrupt."""

    def __init__(self, reason: str, at_offset: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.at_offset = at_offset  # "after 1.2 MiB" says something for a stream, not a zip


class _Stopped(Exception):
    """A limit was reached: the byte limit (a bomb) or the entry limit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _StreamFailed(Exception):
    """The stream being read failed (network, source disk): raised again as it came, once out
    of the decompressors and tarfile, which must not mistake it for damage."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def _over_limit(limit_bytes: int) -> _Stopped:
    return _Stopped(f"unpacks to more than {size_text(limit_bytes)} (max_unpacked): stopped")


# -- the stream, decompressed -----------------------------------------------------------------


class _SourceReader:
    """The fetched stream, counted; cancellation checked at each read; its errors wrapped."""

    def __init__(self, stream: Readable, cancelled: Callable[[], bool]) -> None:
        self.stream = stream
        self.cancelled = cancelled
        self.bytes_read = 0

    def read(self, size: int = -1, /) -> bytes:
        if self.cancelled():
            raise Interrupted()
        try:
            data = self.stream.read(CHUNK_BYTES if size is None or size < 0 else size)
        except Exception as error:
            raise _StreamFailed(error) from error
        self.bytes_read += len(data)
        return data


class _Decompressed:
    """Decompressed bytes, counted against the limit; decompression errors become damage."""

    def __init__(self, stream: Any, compression: str, limit_bytes: int | None) -> None:
        self.stream = stream
        self.compression = compression
        self.limit_bytes = limit_bytes
        self.bytes_read = 0

    def read(self, size: int = -1, /) -> bytes:
        try:
            data: bytes = self.stream.read(CHUNK_BYTES if size is None or size < 0 else size)
        except (_StreamFailed, _Damaged, Interrupted):
            raise
        except EOFError as error:
            raise _Damaged(UNEXPECTED_END) from error
        except (OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError) as error:
            raise _Damaged(f"invalid {self.compression} data ({error})") from error
        if self.limit_bytes is not None and self.bytes_read + len(data) > self.limit_bytes:
            raise _over_limit(self.limit_bytes)
        self.bytes_read += len(data)
        return data


class _TarReader:
    """The decompressed stream as tarfile's 'r:' mode reads it: read, tell, and seek forward
    only (past a member's data). Member data is handed out as views of the chunk it sits in:
    tarfile's own stream ('r|') copies every byte three times, into fresh buffers."""

    def __init__(self, stream: _Decompressed) -> None:
        self.stream = stream
        self.chunk = memoryview(b"")
        self.start = 0  # the next unread byte of chunk
        self.position = 0  # of the next unread byte, in the decompressed stream
        self.last_block = (-1, b"")  # the last header-sized read: (position, bytes)

    def tell(self) -> int:
        return self.position

    def read_some(self, size: int) -> memoryview:
        """At most size bytes, from the current chunk (a new one when it is used up)."""
        if self.start == len(self.chunk):
            self.chunk, self.start = memoryview(self.stream.read(CHUNK_BYTES)), 0
        view = self.chunk[self.start : self.start + size]
        self.start += len(view)
        self.position += len(view)
        return view

    def read(self, size: int = -1, /) -> bytes:
        """Exactly size bytes unless the stream ends (tarfile reads headers this way)."""
        at = self.position
        parts = []
        while size > 0 and (view := self.read_some(size)):
            parts.append(view)
            size -= len(view)
        data = b"".join(parts)
        if len(data) == tarfile.BLOCKSIZE:
            self.last_block = (at, data)
        return data

    def seek(self, position: int, whence: int = os.SEEK_SET, /) -> int:
        if whence != os.SEEK_SET or position < self.position:
            raise _Damaged("a tar that must be read backwards (not a stream)")
        while self.position < position and self.read_some(position - self.position):
            pass
        return self.position


def _decompressed(source: _SourceReader, compression: str, limit: int | None) -> _Decompressed:
    stream: Any
    if compression == "gz":
        stream = gzip.GzipFile(fileobj=cast(Any, source), mode="rb")
    elif compression == "xz":
        stream = lzma.LZMAFile(cast(Any, source))  # noqa: SIM115
    elif compression == "zst":
        stream = zstandard.ZstdDecompressor().stream_reader(
            cast(Any, _ZstdFrames(source)), read_size=CHUNK_BYTES, read_across_frames=True
        )
    else:
        stream = source
    return _Decompressed(stream, compression or "tar", limit)


_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE = 0x184D2A50  # to 0x184D2A5F


class _ZstdFrames:
    """Follows the zstd frames in the compressed bytes, without decompressing, so that an
    input cut inside a frame is told from a complete one: zstandard's stream reader returns
    end of data in both cases."""

    def __init__(self, source: Readable) -> None:
        self.source = source
        self.state = "magic"
        self.pending = b""
        self.skip = 0
        self.checksum = False
        self.frames = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self.source.read(size)
        if data:
            self._follow(data)
        elif self.skip or self.pending or self.state != "magic" or not self.frames:
            raise EOFError(UNEXPECTED_END)
        return data

    def _follow(self, data: bytes) -> None:
        position = 0
        while position < len(data):
            if self.skip:
                skipped = min(self.skip, len(data) - position)
                self.skip -= skipped
                position += skipped
                continue
            needed = {"magic": 4, "descriptor": 1, "skippable": 4, "block": 3}[self.state]
            taken = data[position : position + needed - len(self.pending)]
            self.pending += taken
            position += len(taken)
            if len(self.pending) == needed:
                header, self.pending = self.pending, b""
                self._parse(int.from_bytes(header, "little"))

    def _parse(self, value: int) -> None:
        if self.state == "magic":
            if value == _ZSTD_MAGIC:
                self.state = "descriptor"
            elif value & 0xFFFFFFF0 == _ZSTD_SKIPPABLE:
                self.state = "skippable"
            else:
                raise _Damaged("invalid zst data (not a zstd frame)")
        elif self.state == "skippable":
            self.skip, self.state = value, "magic"
        elif self.state == "descriptor":
            single_segment = bool(value & 0x20)
            content_size = (1 if single_segment else 0, 2, 4, 8)[value >> 6]
            self.skip = (0 if single_segment else 1) + (0, 1, 2, 4)[value & 3] + content_size
            self.checksum = bool(value & 0x04)
            self.state, self.frames = "block", self.frames + 1
        else:
            last, block_type, block_size = value & 1, (value >> 1) & 3, value >> 3
            if block_type == 3:
                raise _Damaged("invalid zst data (reserved block type)")
            self.skip = 1 if block_type == 1 else block_size
            if last:
                self.skip += 4 if self.checksum else 0
                self.state = "magic"


# -- tar --------------------------------------------------------------------------------------


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a pax header or a GNU long name whole into memory: one larger than
    MAX_HEADER_BYTES is damage, not something to allocate."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        extension = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
        long_names = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
        if self.type in extension + long_names and self.size > MAX_HEADER_BYTES:
            raise _Damaged(f"a tar header of {size_text(self.size)} (longer than any name)")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def _unpack_tar(stream: _Decompressed, writer: _Writer) -> None:
    """Each member extracted while the stream passes; then the end-of-archive block checked
    (tarfile ends quietly on a cut or a damaged header) and the rest read for the checksum."""
    reader = _TarReader(stream)
    try:
        archive = tarfile.open(  # noqa: SIM115 (read to its end below)
            fileobj=cast(Any, reader), mode="r:", tarinfo=_BoundedTarInfo
        )
    except tarfile.ReadError as error:
        reason = UNEXPECTED_END if "empty" in str(error) else f"not a tar ({error})"
        raise _Damaged(reason) from error
    members: list[tarfile.TarInfo] = cast(Any, archive).members
    try:
        while (member := archive.next()) is not None:
            members.clear()  # tarfile keeps every member it read: not for millions
            writer.begin_entry()
            _tar_member(archive, member, reader, writer)
        _check_tar_end(archive, reader)
    except tarfile.TarError as error:
        raise _Damaged(str(error) or UNEXPECTED_END) from error
    _drain(stream)


def _check_tar_end(archive: tarfile.TarFile, reader: _TarReader) -> None:
    end = archive.offset
    position, block = reader.last_block
    if position != end:
        raise _Damaged(UNEXPECTED_END)
    if block.strip(b"\0"):
        raise _Damaged(f"invalid tar header at byte {end:,} of the unpacked data")


def _tar_member(
    archive: tarfile.TarFile, member: tarfile.TarInfo, reader: _TarReader, writer: _Writer
) -> None:
    try:
        parts = entry_parts(member.name)
        if member.isreg():
            _tar_file(archive, member, parts, reader, writer)
        elif member.isdir():
            writer.make_folder(parts, member.mode)
        elif member.issym():
            writer.symlink(parts, member.linkname)
        elif member.islnk():
            writer.hard_link(parts, member.linkname)
        else:
            raise _Refused(_special_kind(member))
    except _Refused as refusal:
        writer.unpacked.refuse(member.name, refusal.why)


def _special_kind(member: tarfile.TarInfo) -> str:
    if member.ischr() or member.isblk():
        return DEVICE
    return FIFO if member.isfifo() else NOT_PLAIN


def _tar_file(
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    parts: tuple[str, ...],
    reader: _TarReader,
    writer: _Writer,
) -> None:
    """A member's data read straight from the stream; a sparse one through tarfile, which
    fills its holes."""
    if member.sparse is not None:
        data = archive.extractfile(member)
        read: Callable[[int], bytes | memoryview] = data.read if data else lambda size: b""
    else:
        reader.seek(member.offset_data)
        read = _bounded(reader, member.size)
    written = writer.write_file(parts, member.mode, member.mtime, read)
    if written != member.size:
        raise _Damaged(UNEXPECTED_END)
    writer.unpacked.files += 1


def _bounded(reader: _TarReader, size: int) -> Callable[[int], memoryview]:
    """Reads of at most size bytes in all: one member's data."""
    remaining = size

    def read(wanted: int) -> memoryview:
        nonlocal remaining
        view = reader.read_some(min(wanted, remaining))
        remaining -= len(view)
        return view

    return read


# -- zip --------------------------------------------------------------------------------------


def _unpack_zip(source: _SourceReader, scratch: Path, writer: _Writer) -> None:
    """A zip's index is at its end: the stream is spilled to an unnamed scratch file first."""
    try:
        spill = tempfile.TemporaryFile(dir=scratch)  # noqa: SIM115 (the with below)
    except OSError as error:
        raise HostError(
            f"cannot create a file in the scratch folder {scratch}: {error.strerror}"
        ) from error
    with spill:
        try:
            while chunk := source.read(CHUNK_BYTES):
                spill.write(chunk)
            spill.seek(0)
        except OSError as error:
            raise HostError(
                f"cannot write to the scratch folder {scratch}: {error.strerror}"
            ) from error
        try:
            archive = zipfile.ZipFile(spill)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as error:
            reason = f"not a zip, or its index is missing ({error})"
            raise _Damaged(reason, at_offset=False) from error
        with archive:
            members = archive.infolist()
            if len(members) > MAX_ENTRIES:
                raise _Stopped(f"holds more than {MAX_ENTRIES:,} entries: stopped")
            for member in members:
                writer.begin_entry()
                _zip_member(archive, member, writer)


def _zip_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, writer: _Writer) -> None:
    mode = member.external_attr >> 16 if member.create_system == 3 else 0
    try:
        parts = entry_parts(member.filename)
        if member.is_dir():
            writer.make_folder(parts, mode or 0o755)
        elif stat.S_ISLNK(mode):
            with archive.open(member) as data:
                target = data.read(MAX_NAME_BYTES + 1)
            writer.symlink(parts, target.decode("utf-8", errors="surrogateescape"))
        elif stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # no type bits: a plain file
            raise _Refused(_special_mode_kind(mode))
        else:
            with archive.open(member) as data:
                writer.write_file(parts, mode or 0o644, None, data.read)
            writer.unpacked.files += 1
    except _Refused as refusal:
        writer.unpacked.refuse(member.filename, refusal.why)
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError) as error:
        raise _Damaged(f"{member.filename}: {error}", at_offset=False) from error
    except (NotImplementedError, RuntimeError) as error:  # compression method, encryption
        writer.unpacked.refuse(member.filename, f"cannot be read: {error}")


def _special_mode_kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return DEVICE
    return FIFO if stat.S_ISFIFO(mode) else NOT_PLAIN


# -- names ------------------------------------------------------------------------------------


def entry_parts(name: str) -> tuple[str, ...]:
    """An entry's name as path parts below the target; _Refused when it could lead outside."""
    if name.startswith("/"):
        raise _Refused(ABSOLUTE_NAME)
    try:
        encoded = os.fsencode(name)
    except UnicodeError:
        raise _Refused(INVALID_NAME) from None
    if b"\0" in encoded:
        raise _Refused(INVALID_NAME)
    if len(encoded) > MAX_NAME_BYTES:
        raise _Refused(NAME_TOO_LONG)
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise _Refused(LEADS_OUTSIDE)
    if any(len(os.fsencode(part)) > MAX_PART_BYTES for part in parts):
        raise _Refused(NAME_TOO_LONG)
    return parts


def link_refusal(parts: tuple[str, ...], target: str) -> str | None:
    """Why a symbolic link at parts pointing to target is refused (None: it stays inside)."""
    if target.startswith("/"):
        return ABSOLUTE_LINK
    try:
        encoded = os.fsencode(target)
    except UnicodeError:
        return INVALID_NAME
    if not encoded or b"\0" in encoded or len(encoded) > MAX_NAME_BYTES:
        return NOT_PLAIN
    depth = len(parts) - 1
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return LINK_OUTSIDE
        elif part not in ("", "."):
            depth += 1
    return None


def _set_mtime(descriptor: int, mtime: float) -> None:
    """The archive's modification time, when the kernel can hold it (a hostile one may not)."""
    with contextlib.suppress(OverflowError, ValueError):
        os.utime(descriptor, (mtime, mtime))


# -- writing below the target -----------------------------------------------------------------


class _Writer:
    """The target folder, written through folder descriptors opened one part at a time with
    O_NOFOLLOW: no link, whoever placed it, is ever followed."""

    def __init__(
        self,
        target: Path,
        unpacked: Unpacked,
        limit_bytes: int | None,
        cancelled: Callable[[], bool],
    ) -> None:
        self.target = target
        self.unpacked = unpacked
        self.limit_bytes = limit_bytes
        self.cancelled = cancelled
        self.entries = 0
        self.created_links: list[tuple[str, ...]] = []
        try:
            root = os.open(target, _DIRECTORY_FLAGS)
        except OSError as error:
            raise self._host_error(error, "") from error
        self.folders: dict[tuple[str, ...], int] = {(): root}

    def close(self) -> None:
        for descriptor in self.folders.values():
            os.close(descriptor)
        self.folders.clear()

    def begin_entry(self) -> None:
        """Count the entry (bounded), look at the cancel flag, keep few descriptors open."""
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise _Stopped(f"holds more than {MAX_ENTRIES:,} entries: stopped")
        if self.entries % CANCEL_EVERY == 0 and self.cancelled():
            raise Interrupted()
        if len(self.folders) > _FOLDER_CACHE:
            root = self.folders.pop(())
            self.close()
            self.folders[()] = root

    def folder(self, parts: tuple[str, ...], create: bool = True) -> int:
        """The descriptor of the folder at parts, created as needed (0700), never through a
        link: _Refused when a link or a file is in the way (or it is missing, not to create)."""
        known = len(parts)
        while parts[:known] not in self.folders:
            known -= 1
        descriptor = self.folders[parts[:known]]
        for index in range(known, len(parts)):
            opened = self._open_folder(descriptor, parts, index, create)
            if index > known:
                os.close(descriptor)
            descriptor = opened
        if len(parts) > known:
            self.folders[parts] = descriptor
        return descriptor

    def _open_folder(self, parent: int, parts: tuple[str, ...], index: int, create: bool) -> int:
        name = parts[index]
        try:
            try:
                return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise _Refused(f"{'/'.join(parts[: index + 1])} is missing") from None
                os.mkdir(name, 0o700, dir_fd=parent)
                return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
        except OSError as error:
            if error.errno not in _IN_THE_WAY:
                raise self._host_error(error, "/".join(parts[: index + 1])) from error
            shown = "/".join(parts[: index + 1])
            if self._is_link(parent, name):
                raise _Refused(f"{THROUGH_LINK} ({shown})") from error
            raise _Refused(f"{shown} is not a folder") from error

    @staticmethod
    def _is_link(parent: int, name: str) -> bool:
        try:
            return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
        except OSError:
            return False

    def make_folder(self, parts: tuple[str, ...], mode: int) -> None:
        if not parts:
            return  # the archive's own root ("./"): the target already is
        descriptor = self.folder(parts)
        try:
            os.fchmod(descriptor, (mode & 0o777) | 0o700)  # the owner must be able to clean up
        except OSError as error:
            raise self._host_error(error, "/".join(parts)) from error
        self.unpacked.folders += 1

    def write_file(
        self,
        parts: tuple[str, ...],
        mode: int,
        mtime: float | None,
        read: Callable[[int], bytes | memoryview],
        limited: bool = True,
    ) -> int:
        """A new regular file (O_EXCL, O_NOFOLLOW) holding what read() gives; bytes written."""
        if not parts:
            raise _Refused("no name")
        parent = self._replaceable(parts)
        try:
            descriptor = os.open(parts[-1], _NEW_FILE_FLAGS, 0o600, dir_fd=parent)
        except OSError as error:
            raise self._host_error(error, "/".join(parts)) from error
        try:
            written = self._copy(read, descriptor, parts, limited)
            if mode & 0o6000:
                self.unpacked.setuid_dropped += 1
            os.fchmod(descriptor, (mode & 0o777) | 0o400)  # the host must be able to hash it
            if mtime is not None:
                _set_mtime(descriptor, mtime)
        except OSError as error:
            raise self._host_error(error, "/".join(parts)) from error
        finally:
            os.close(descriptor)
        return written

    def _copy(
        self,
        read: Callable[[int], bytes | memoryview],
        descriptor: int,
        parts: tuple[str, ...],
        limited: bool,
    ) -> int:
        written = 0
        while chunk := read(CHUNK_BYTES):
            total = self.unpacked.bytes_written + len(chunk)
            if limited and self.limit_bytes is not None and total > self.limit_bytes:
                raise _over_limit(self.limit_bytes)
            view = memoryview(chunk)
            while view:
                view = view[os.write(descriptor, view) :]
            written += len(chunk)
            self.unpacked.bytes_written = total
        return written

    def symlink(self, parts: tuple[str, ...], target: str) -> None:
        why = link_refusal(parts, target) if parts else "no name"
        if why:
            raise _Refused(why)
        parent = self._replaceable(parts)
        try:
            os.symlink(target, parts[-1], dir_fd=parent)
        except OSError as error:
            raise self._host_error(error, "/".join(parts)) from error
        self.created_links.append(parts)
        self.unpacked.links += 1

    def hard_link(self, parts: tuple[str, ...], source_name: str) -> None:
        """A hard link, only to a regular file this archive already placed below the target."""
        try:
            source = entry_parts(source_name)
        except _Refused as refusal:
            raise _Refused(HARD_LINK_OUTSIDE) from refusal
        if not parts or not source:
            raise _Refused(HARD_LINK_UNKNOWN)
        if source == parts:
            self.unpacked.files += 1
            return
        try:
            source_folder = self.folder(source[:-1], create=False)
            status = os.stat(source[-1], dir_fd=source_folder, follow_symlinks=False)
        except (OSError, _Refused) as error:
            raise _Refused(HARD_LINK_UNKNOWN) from error
        if not stat.S_ISREG(status.st_mode):
            raise _Refused(HARD_LINK_UNKNOWN)
        parent = self._replaceable(parts)  # both folders stay open until the next entry
        try:
            os.link(
                source[-1],
                parts[-1],
                src_dir_fd=source_folder,
                dst_dir_fd=parent,
                follow_symlinks=False,
            )
        except OSError as error:
            raise self._host_error(error, "/".join(parts)) from error
        self.unpacked.files += 1

    def _replaceable(self, parts: tuple[str, ...]) -> int:
        """The parent folder of parts, with any earlier entry of that name removed (a later
        entry replaces an earlier one, as tar does), unless it is a folder."""
        parent = self.folder(parts[:-1])
        try:
            status = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return parent
        except OSError as error:
            raise self._host_error(error, "/".join(parts)) from error
        if stat.S_ISDIR(status.st_mode):
            raise _Refused("a folder of that name was extracted before")
        try:
            os.unlink(parts[-1], dir_fd=parent)
        except OSError as error:
            raise self._host_error(error, "/".join(parts)) from error
        return parent

    def sweep_links(self) -> None:
        """Links are checked again once all are placed: a link that looked inside when it was
        made may lead outside through one placed later. Such a link is removed and refused."""
        root = os.path.realpath(self.target)
        for parts in self.created_links:
            path = os.path.join(self.target, *parts)
            if not os.path.islink(path):
                continue
            resolved = os.path.realpath(path)
            if resolved == root or resolved.startswith(root + os.sep):
                continue
            try:
                os.unlink(parts[-1], dir_fd=self.folder(parts[:-1]))
            except (OSError, _Refused):
                continue
            self.unpacked.links -= 1
            self.unpacked.refuse("/".join(parts), LINK_OUTSIDE)
        self.created_links.clear()

    def _host_error(self, error: OSError, name: str) -> HostError:
        where = f"{name} in the staging folder {self.target}" if name else str(self.target)
        return HostError(f"cannot write {where}: {error.strerror or error}")

"""Reading the archive formats for unpack.py: the fetched stream, counted and decompressed
(the zstd frames followed to tell a cut input), tar members read while the stream passes, zip
members from a scratch file."""

from __future__ import annotations

import gzip
import lzma
import os
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import zstandard

from restore_tests.errors import HostError, Interrupted
from restore_tests.unpack_writer import (
    CHUNK_BYTES,
    DEVICE,
    FIFO,
    MAX_ENTRIES,
    MAX_NAME_BYTES,
    NOT_PLAIN,
    UNEXPECTED_END,
    Damaged,
    Refused,
    Stopped,
    StreamFailed,
    Writer,
    entry_parts,
    over_limit,
    size_text,
)

if TYPE_CHECKING:  # unpack.py imports this module
    from restore_tests.unpack import Readable

MAX_HEADER_BYTES = 1024**2  # a pax header or GNU long name larger than this is not a name


# -- the stream, decompressed -----------------------------------------------------------------


class SourceReader:
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
            raise StreamFailed(error) from error
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
        except (StreamFailed, Damaged, Interrupted):
            raise
        except EOFError as error:
            raise Damaged(UNEXPECTED_END) from error
        except (OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError) as error:
            raise Damaged(f"invalid {self.compression} data ({error})") from error
        if self.limit_bytes is not None and self.bytes_read + len(data) > self.limit_bytes:
            raise over_limit(self.limit_bytes)
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
            raise Damaged("a tar that must be read backwards (not a stream)")
        while self.position < position and self.read_some(position - self.position):
            pass
        return self.position


def decompressed(source: SourceReader, compression: str, limit: int | None) -> _Decompressed:
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
                raise Damaged("invalid zst data (not a zstd frame)")
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
                raise Damaged("invalid zst data (reserved block type)")
            self.skip = 1 if block_type == 1 else block_size
            if last:
                self.skip += 4 if self.checksum else 0
                self.state = "magic"


def drain(stream: Readable) -> None:
    """Read what is left (for the digest of the whole file), writing nothing."""
    while stream.read(CHUNK_BYTES):
        pass


# -- tar --------------------------------------------------------------------------------------


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a pax header or a GNU long name whole into memory: one larger than
    MAX_HEADER_BYTES is damage, not something to allocate."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        extension = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
        long_names = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
        if self.type in extension + long_names and self.size > MAX_HEADER_BYTES:
            raise Damaged(f"a tar header of {size_text(self.size)} (longer than any name)")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def unpack_tar(stream: _Decompressed, writer: Writer) -> None:
    """Each member extracted while the stream passes; then the end-of-archive block checked
    (tarfile ends quietly on a cut or a damaged header) and the rest read for the checksum."""
    reader = _TarReader(stream)
    try:
        archive = tarfile.open(  # noqa: SIM115 (read to its end below)
            fileobj=cast(Any, reader), mode="r:", tarinfo=_BoundedTarInfo
        )
    except tarfile.ReadError as error:
        reason = UNEXPECTED_END if "empty" in str(error) else f"not a tar ({error})"
        raise Damaged(reason) from error
    members: list[tarfile.TarInfo] = cast(Any, archive).members
    try:
        while (member := archive.next()) is not None:
            members.clear()  # tarfile keeps every member it read: not for millions
            writer.begin_entry()
            _tar_member(archive, member, reader, writer)
        _check_tar_end(archive, reader)
    except tarfile.TarError as error:
        raise Damaged(str(error) or UNEXPECTED_END) from error
    drain(stream)


def _check_tar_end(archive: tarfile.TarFile, reader: _TarReader) -> None:
    end = archive.offset
    position, block = reader.last_block
    if position != end:
        raise Damaged(UNEXPECTED_END)
    if block.strip(b"\0"):
        raise Damaged(f"invalid tar header at byte {end:,} of the unpacked data")


def _tar_member(
    archive: tarfile.TarFile, member: tarfile.TarInfo, reader: _TarReader, writer: Writer
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
            raise Refused(_special_kind(member))
    except Refused as refusal:
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
    writer: Writer,
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
        raise Damaged(UNEXPECTED_END)
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


def unpack_zip(source: SourceReader, scratch: Path, writer: Writer) -> None:
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
            raise Damaged(reason, at_offset=False) from error
        with archive:
            members = archive.infolist()
            if len(members) > MAX_ENTRIES:
                raise Stopped(f"holds more than {MAX_ENTRIES:,} entries: stopped")
            for member in members:
                writer.begin_entry()
                _zip_member(archive, member, writer)


def _zip_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, writer: Writer) -> None:
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
            raise Refused(_special_mode_kind(mode))
        else:
            with archive.open(member) as data:
                writer.write_file(parts, mode or 0o644, None, data.read)
            writer.unpacked.files += 1
    except Refused as refusal:
        writer.unpacked.refuse(member.filename, refusal.why)
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError) as error:
        raise Damaged(f"{member.filename}: {error}", at_offset=False) from error
    except (NotImplementedError, RuntimeError) as error:  # compression method, encryption
        writer.unpacked.refuse(member.filename, f"cannot be read: {error}")


def _special_mode_kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return DEVICE
    return FIFO if stat.S_ISFIFO(mode) else NOT_PLAIN

"""What a restored database backup is, read from its first bytes on the host.

Pure logic over a bounded head of the file (never the whole file, never executed): which engine
made it, in which format, compressed how, and from which server version. A dump of the wrong
engine is then a FAIL that names what it is, before any server is asked to load it; a dump from
a newer server than the sandbox's tools is an ERROR naming both versions.
"""

from __future__ import annotations

import lzma
import os
import re
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import zstandard

from restore_tests.restored import OPEN_FLAGS

HEAD_BYTES = 64 * 1024
POSTGRES, MYSQL, SQLITE = "postgres", "mysql", "sqlite"
ENGINE_NAMES = {POSTGRES: "PostgreSQL", MYSQL: "MariaDB/MySQL", SQLITE: "SQLite"}
# pg_dump's archive formats, by the format byte of its header.
_PG_FORMATS = {1: "custom", 3: "tar", 5: "directory"}
_PG_MAGIC = b"PGDMP"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_PG_PLAIN_VERSION = re.compile(rb"^-- Dumped from database version (\S+)", re.MULTILINE)
_MYSQL_VERSION = re.compile(rb"^-- Server version\s+(\S+)", re.MULTILINE)


@dataclass(frozen=True)
class Dump:
    """What a backup file (or a pg_dump directory) is."""

    engine: str | None  # POSTGRES, MYSQL, SQLITE, or None when unknown
    format: str  # custom, directory, tar, plain (pg); sql; file (sqlite); unknown
    compression: str = ""  # gzip, zstd, xz, or "" (a format's own compression is not this)
    server_version: str = ""  # the version of the server it was made from, when it says
    database: str = ""  # the database it holds, when the format says (pg archives)

    @property
    def description(self) -> str:
        """As a reason names it: 'a PostgreSQL custom-format dump (from 17.2)'."""
        engine = ENGINE_NAMES.get(self.engine or "", "")
        if self.engine == SQLITE and self.format == "file":
            what = "a SQLite database file"
        elif self.engine is None:
            what = "text that is not a known SQL dump" if self.format == "sql" else "not a dump"
        elif self.format in ("custom", "directory", "tar"):
            what = f"a {engine} {self.format}-format dump"
        else:
            what = f"a {engine} SQL dump"
        if self.compression:
            what += f" ({self.compression}-compressed)"
        if self.server_version:
            what += f" from server {self.server_version}"
        return what


def identify(path: Path) -> Dump:
    """What the file or folder at path is (OSError when it cannot be read as one)."""
    if path.is_dir() and not path.is_symlink():
        toc = path / "toc.dat"
        if not os.path.lexists(toc):
            return Dump(None, "unknown")
        return _postgres_archive(read_head(toc, 4096), "directory")
    head = read_head(path, HEAD_BYTES)
    compression, inner = decompressed_head(head)
    dump = identify_head(inner)
    if compression:
        return Dump(dump.engine, dump.format, compression, dump.server_version, dump.database)
    return dump


def identify_head(head: bytes) -> Dump:
    """What a file is, from its first bytes (decompressed)."""
    if not head:  # an empty file, or a compressed head too garbled to yield a byte
        return Dump(None, "unknown")
    if head.startswith(_PG_MAGIC):
        return _postgres_archive(head, "custom")
    if head[257:262] == b"ustar" and head[512:517] == _PG_MAGIC:  # pg_dump -Ft: toc.dat first
        return _postgres_archive(head[512:], "tar")
    if head.startswith(_SQLITE_MAGIC):
        return Dump(SQLITE, "file")
    if b"\x00" in head[:4096]:
        return Dump(None, "unknown")
    text = head[:HEAD_BYTES]
    if b"-- PostgreSQL database dump" in text[:4096]:
        version = _PG_PLAIN_VERSION.search(text)
        return Dump(POSTGRES, "plain", server_version=_decoded(version))
    if re.search(rb"^-- (MySQL|MariaDB) dump", text[:4096], re.MULTILINE):
        version = _MYSQL_VERSION.search(text)
        return Dump(MYSQL, "sql", server_version=_decoded(version))
    if text.startswith(b"PRAGMA foreign_keys=OFF;") or text.startswith(b"BEGIN TRANSACTION;"):
        return Dump(SQLITE, "sql")
    return Dump(None, "sql")


def read_head(path: Path, limit: int) -> bytes:
    """The first bytes of a restored regular file (never through a link, never a FIFO)."""
    descriptor = os.open(path, OPEN_FLAGS)
    with open(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(f"{path} is not a regular file")
        return stream.read(limit)


def decompressed_head(head: bytes) -> tuple[str, bytes]:
    """The compression of a file and the first bytes of what it holds (bounded)."""
    try:
        if head.startswith(_GZIP_MAGIC):
            return "gzip", zlib.decompressobj(wbits=31).decompress(head, HEAD_BYTES)
        if head.startswith(_ZSTD_MAGIC):
            # A stream reader stops at HEAD_BYTES; a decompressobj would inflate all of it
            # (a 64 KiB head of zeros is 2 GiB) before the slice.
            with zstandard.ZstdDecompressor().stream_reader(head) as reader:
                return "zstd", reader.read(HEAD_BYTES)
        if head.startswith(_XZ_MAGIC):
            return "xz", lzma.LZMADecompressor().decompress(head, HEAD_BYTES)
    except (zlib.error, zstandard.ZstdError, lzma.LZMAError):
        return _compression_name(head), b""
    return "", head


def _compression_name(head: bytes) -> str:
    for magic, name in ((_GZIP_MAGIC, "gzip"), (_ZSTD_MAGIC, "zstd"), (_XZ_MAGIC, "xz")):
        if head.startswith(magic):
            return name
    return ""


def _postgres_archive(head: bytes, container: str) -> Dump:
    """pg_dump's archive header: PGDMP, archive version, sizes, format, compression, the
    creation time, then the database name and the server and pg_dump versions as strings."""
    if not head.startswith(_PG_MAGIC) or len(head) < 11:
        return Dump(POSTGRES, container)
    major, minor, int_size, format_byte = head[5], head[6], head[8], head[10]
    # A directory's toc.dat carries the tar format's byte: where it was found says more.
    fmt = _PG_FORMATS.get(format_byte, container) if container == "custom" else container
    try:
        offset = 11
        if (major, minor) >= (1, 15):
            offset += 1  # the compression algorithm, one byte
        else:
            offset += 1 + int_size  # the compression level, an int
        offset += 7 * (1 + int_size)  # the creation time: sec, min, hour, mday, mon, year, isdst
        database, offset = _archive_string(head, offset, int_size)
        server, offset = _archive_string(head, offset, int_size)
    except (ValueError, struct.error, IndexError):
        return Dump(POSTGRES, fmt)
    return Dump(POSTGRES, fmt, server_version=server.split(" ")[0], database=database)


def _archive_string(head: bytes, offset: int, int_size: int) -> tuple[str, int]:
    """An archive int (a sign byte, then int_size little-endian bytes), then that many bytes."""
    sign = head[offset]
    length = int.from_bytes(head[offset + 1 : offset + 1 + int_size], "little")
    offset += 1 + int_size
    if sign or length > 1024 or offset + length > len(head):
        raise ValueError("not a string of an archive header")
    return head[offset : offset + length].decode("utf-8", errors="replace"), offset + length


def _decoded(match: re.Match[bytes] | None) -> str:
    return match[1].decode("utf-8", errors="replace")[:40] if match else ""


def major_version(version: str) -> int | None:
    """17 of '17.2 (Debian 17.2-1)', 10 of '10.11.6-MariaDB'; None when there is none."""
    match = re.match(r"\s*(\d+)", version)
    return int(match[1]) if match else None

"""Which engine made a restored dump, in which format and compression, read from its head."""

from __future__ import annotations

import gzip
import lzma
import os
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from runners.dumps import (
    HEAD_BYTES,
    MYSQL,
    POSTGRES,
    SQLITE,
    Dump,
    decompressed_head,
    identify,
    identify_head,
    major_version,
)

INT_SIZE = 4
PG_PLAIN = b"--\n-- PostgreSQL database dump\n--\n\n-- Dumped from database version 17.2\n"
MARIADB = (
    b"/*M!999999\\- enable the sandbox mode */ \n"
    b"-- MariaDB dump 10.19-11.4.5-MariaDB, for debian-linux-gnu (x86_64)\n--\n"
    b"-- Host: localhost    Database: shop\n"
    b"-- ------------------------------------------------------\n"
    b"-- Server version\t10.11.18-MariaDB-0+deb12u1\n"
)
MYSQL_DUMP = (
    b"-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)\n--\n"
    b"-- Host: localhost    Database: shop\n-- Server version\t8.0.36\n"
)
SQLITE_DUMP = b"PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\nCREATE TABLE t(x);\n"
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "zstd": zstandard.ZstdCompressor().compress,
    "xz": lzma.compress,
}


def _archive_int(value: int) -> bytes:
    """pg_dump's WriteInt: a sign byte, then INT_SIZE little-endian bytes."""
    return bytes([value < 0]) + abs(value).to_bytes(INT_SIZE, "little")


def _archive_string(text: str) -> bytes:
    encoded = text.encode()
    return _archive_int(len(encoded)) + encoded


def pg_archive_header(
    version: tuple[int, int] = (1, 15),
    format_byte: int = 1,
    database: str = "shop",
    server: str = "17.2 (Debian 17.2-1.pgdg120+1)",
) -> bytes:
    """The head of a pg_dump archive, laid out as pg_dump's WriteHead writes it."""
    major, minor = version
    head = b"PGDMP" + bytes([major, minor, 0, INT_SIZE, 8, format_byte])
    # 1.15 and later: the compression algorithm as a byte; before: the level as an int.
    head += bytes([1]) if version >= (1, 15) else _archive_int(-1)
    head += b"".join(_archive_int(field) for field in (0, 30, 3, 1, 5, 124, 0))
    head += _archive_string(database) + _archive_string(server) + _archive_string("17.2")
    return head + b"\x00" * 64


def pg_tar_head() -> bytes:
    """pg_dump -Ft: a tar header for toc.dat, then toc.dat's own archive header."""
    tar_header = bytearray(512)
    tar_header[:7] = b"toc.dat"
    tar_header[257:263] = b"ustar\x00"
    return bytes(tar_header) + pg_archive_header(format_byte=3)


def test_a_custom_archive_of_version_1_15_names_its_database_and_server_version() -> None:
    assert identify_head(pg_archive_header()) == Dump(
        POSTGRES, "custom", server_version="17.2", database="shop"
    )


def test_a_custom_archive_of_version_1_14_with_an_int_compression_level_is_read() -> None:
    head = pg_archive_header(version=(1, 14), database="billing", server="15.6")
    assert identify_head(head) == Dump(
        POSTGRES, "custom", server_version="15.6", database="billing"
    )


def test_a_truncated_archive_header_is_still_postgres_without_names() -> None:
    assert identify_head(pg_archive_header()[:40]) == Dump(POSTGRES, "custom")
    assert identify_head(b"PGDMP\x01") == Dump(POSTGRES, "custom")


def test_an_archive_header_with_an_absurd_string_length_is_postgres_without_names() -> None:
    head = bytearray(pg_archive_header())
    database_length_at = 11 + 1 + 7 * (1 + INT_SIZE) + 1
    head[database_length_at : database_length_at + INT_SIZE] = struct.pack("<I", 10**6)
    assert identify_head(bytes(head)) == Dump(POSTGRES, "custom")


def test_a_pg_dump_tar_is_recognised_by_toc_dat_after_the_tar_header() -> None:
    assert identify_head(pg_tar_head()) == Dump(
        POSTGRES, "tar", server_version="17.2", database="shop"
    )


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (PG_PLAIN, Dump(POSTGRES, "plain", server_version="17.2")),
        (MARIADB, Dump(MYSQL, "sql", server_version="10.11.18-MariaDB-0+deb12u1")),
        (MYSQL_DUMP, Dump(MYSQL, "sql", server_version="8.0.36")),
        (b"SQLite format 3\x00" + b"\x10\x00" * 50, Dump(SQLITE, "file")),
        (SQLITE_DUMP, Dump(SQLITE, "sql")),
        (b"BEGIN TRANSACTION;\nCREATE TABLE t(x);\n", Dump(SQLITE, "sql")),
        (b"hello, this is a shopping list\n", Dump(None, "sql")),
        (b"\x7fELF\x02\x01\x01\x00" + bytes(64), Dump(None, "unknown")),
        (b"", Dump(None, "unknown")),
    ],
    ids=[
        "pg-plain",
        "mariadb",
        "mysql",
        "sqlite-file",
        "sqlite-dump",
        "sqlite-begin",
        "text",
        "binary",
        "empty",
    ],
)
def test_each_kind_of_head_is_identified_by_engine_format_and_version(
    head: bytes, expected: Dump
) -> None:
    assert identify_head(head) == expected


def test_a_plain_pg_dump_without_a_version_line_has_no_server_version() -> None:
    assert identify_head(b"-- PostgreSQL database dump\nSET x = 1;\n") == Dump(POSTGRES, "plain")


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
@pytest.mark.parametrize(
    ("plain", "engine", "fmt"),
    [(MARIADB, MYSQL, "sql"), (PG_PLAIN, POSTGRES, "plain"), (SQLITE_DUMP, SQLITE, "sql")],
)
def test_a_compressed_dump_reports_its_compression_and_the_engine_inside(
    tmp_path: Path, compression: str, plain: bytes, engine: str, fmt: str
) -> None:
    path = tmp_path / "dump.sql.compressed"
    path.write_bytes(COMPRESSORS[compression](plain))
    dump = identify(path)
    assert (dump.compression, dump.engine, dump.format) == (compression, engine, fmt)


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_a_decompressed_head_is_bounded_however_large_the_inside(compression: str) -> None:
    compressed = COMPRESSORS[compression](PG_PLAIN + b"\x00" * (64 * HEAD_BYTES))
    name, inner = decompressed_head(compressed[:HEAD_BYTES])
    assert name == compression
    assert inner.startswith(PG_PLAIN) and len(inner) <= HEAD_BYTES


def test_a_zstd_head_that_inflates_a_thousandfold_is_never_inflated_whole() -> None:
    compressed = zstandard.ZstdCompressor().compress(PG_PLAIN + bytes(64 * 1024 * 1024))
    tracemalloc.start()
    try:
        _, inner = decompressed_head(compressed[:HEAD_BYTES])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(inner) == HEAD_BYTES
    assert peak < 16 * HEAD_BYTES


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_a_truncated_compressed_head_keeps_what_it_could_decompress(compression: str) -> None:
    text = MARIADB + os.urandom(HEAD_BYTES).hex().encode()
    compressed = COMPRESSORS[compression](text)
    name, inner = decompressed_head(compressed[: len(compressed) // 2])
    assert name == compression
    assert text.startswith(inner)
    if inner:
        assert identify_head(inner).engine == MYSQL


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_a_garbled_compressed_file_reports_its_compression_and_an_unknown_inside(
    tmp_path: Path, compression: str
) -> None:
    magic = COMPRESSORS[compression](b"")[:6]
    path = tmp_path / "dump.garbled"
    path.write_bytes(magic + b"\xff\xfe garbage, not a stream " * 20)
    assert identify(path) == Dump(None, "unknown", compression)


def test_a_compressed_head_cut_inside_the_header_reports_an_unknown_inside(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dump.sql.gz"
    path.write_bytes(gzip.compress(PG_PLAIN)[:8])
    assert identify(path) == Dump(None, "unknown", "gzip")


def test_a_pg_dump_directory_is_identified_from_its_toc_dat(tmp_path: Path) -> None:
    (tmp_path / "toc.dat").write_bytes(pg_archive_header(format_byte=5))
    assert identify(tmp_path) == Dump(POSTGRES, "directory", server_version="17.2", database="shop")


def test_a_folder_without_toc_dat_is_not_a_dump(tmp_path: Path) -> None:
    (tmp_path / "shop.sql").write_bytes(PG_PLAIN)
    assert identify(tmp_path) == Dump(None, "unknown")


def test_a_fifo_raises_oserror_instead_of_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "dump.sql"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        identify(fifo)


def test_a_toc_dat_that_is_a_fifo_raises_oserror_instead_of_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "toc.dat")
    with pytest.raises(OSError, match="not a regular file"):
        identify(tmp_path)


def test_a_symlink_to_a_dump_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "real.sql"
    target.write_bytes(PG_PLAIN)
    link = tmp_path / "dump.sql"
    link.symlink_to(target)
    with pytest.raises(OSError):
        identify(link)


def test_a_symlink_to_a_folder_with_toc_dat_is_not_followed(tmp_path: Path) -> None:
    folder = tmp_path / "real"
    folder.mkdir()
    (folder / "toc.dat").write_bytes(pg_archive_header(format_byte=5))
    (tmp_path / "dump").symlink_to(folder)
    with pytest.raises(OSError):
        identify(tmp_path / "dump")


@pytest.mark.parametrize(
    ("dump", "description"),
    [
        (
            Dump(POSTGRES, "custom", server_version="17.2", database="shop"),
            "a PostgreSQL custom-format dump from server 17.2",
        ),
        (Dump(POSTGRES, "plain"), "a PostgreSQL SQL dump"),
        (
            Dump(MYSQL, "sql", "gzip", "10.11.18-MariaDB"),
            "a MariaDB/MySQL SQL dump (gzip-compressed) from server 10.11.18-MariaDB",
        ),
        (Dump(SQLITE, "file"), "a SQLite database file"),
        (Dump(SQLITE, "sql", "zstd"), "a SQLite SQL dump (zstd-compressed)"),
        (Dump(None, "sql"), "text that is not a known SQL dump"),
        (Dump(None, "unknown", "xz"), "not a dump (xz-compressed)"),
    ],
)
def test_a_dump_describes_itself_as_a_reason_names_it(dump: Dump, description: str) -> None:
    assert dump.description == description


@pytest.mark.parametrize(
    ("version", "major"),
    [
        ("17.2 (Debian 17.2-1)", 17),
        ("10.11.6-MariaDB", 10),
        (" 8.0.36", 8),
        ("", None),
        ("unknown", None),
    ],
)
def test_major_version_is_the_leading_number_or_none(version: str, major: int | None) -> None:
    assert major_version(version) == major

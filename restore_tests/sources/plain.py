"""What the plain sources (a file on local disk, an object in S3) share: their options, the
digest read while the bytes stream past, and the choice of the newest file or object.

A plain backup is one file: an archive a cron job made, or the data itself. Its bytes are hashed
while they are fetched (never in a second pass) and compared with a declared digest: a sidecar
file in sha256sum format, the object's metadata (S3), or a digest written in the scenario.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Literal, NamedTuple

from pydantic import Field, field_validator

from restore_tests.errors import SourceError
from restore_tests.model import Size
from restore_tests.results import Check
from restore_tests.sources.base import SourceSettings
from restore_tests.unpack import Readable

DIGEST_NONE, DIGEST_SIDECAR, DIGEST_METADATA = "none", "sidecar", "metadata"
DIGEST_PREFIX = "sha256:"
SIDECAR_SUFFIX = ".sha256"
SIDECAR_LIMIT_BYTES = 4096  # one sha256sum line; anything larger is not a sidecar
UNPACK_FACTOR = 4  # max_unpacked's default: 4x the archive's size...
UNPACK_MINIMUM_BYTES = 1024**3  # ...and at least 1 GiB
SHORT_DIGEST = 8  # hex digits shown in a reason
_HEX_DIGEST = re.compile(r"^[0-9a-fA-F]{64}$")
_SIDECAR_LINE = re.compile(r"^([0-9a-fA-F]{64})(?:[ \t]+\*?(.*))?$")
DIGEST_FORMS = "sidecar, metadata, sha256:<64 hex digits> or none"


def parse_digest(value: str) -> str:
    """The digest setting, checked: sidecar, metadata, none, or sha256:HEX (lowercased)."""
    if value in (DIGEST_NONE, DIGEST_SIDECAR, DIGEST_METADATA):
        return value
    if value.startswith(DIGEST_PREFIX) and _HEX_DIGEST.match(value[len(DIGEST_PREFIX) :]):
        return value.lower()
    shown = value if len(value) <= 80 else value[:77] + "..."
    raise ValueError(f"digest must be {DIGEST_FORMS}; got {shown!r}")


def parse_pattern(value: str | None) -> str | None:
    """A glob on the last part of a name: it cannot hold a '/'."""
    if value is not None and ("/" in value or not value):
        raise ValueError(
            f"pattern {value!r} is matched against the last part of the name only: "
            "write it without '/', like 'erp-*.tar.zst'"
        )
    return value


class PlainOptions(SourceSettings):
    """Options shared by the plain sources (local, s3): digest, unpacking, limit, pattern."""

    digest: str = Field(
        DIGEST_NONE,
        description="How the file's SHA-256 is known, to compare with the bytes fetched: "
        "'sidecar' (a NAME.sha256 file next to it, sha256sum format), 'metadata' (s3 only: "
        "the object's x-amz-meta-sha256), 'sha256:<64 hex digits>', or 'none'.",
        examples=[
            "sidecar",
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ],
    )
    unpack: Literal["auto", "none"] = Field(
        "auto",
        description="'auto': archives are unpacked by their suffix (.tar, .tar.gz/.tgz, "
        ".tar.zst/.tzst, .tar.xz/.txz, .zip), a single compressed file (.gz, .zst, .xz) is "
        "decompressed to its name without the suffix, anything else is stored as is; "
        "'none': the file is the data, stored as is.",
        examples=["auto", "none"],
    )
    max_unpacked: Size | None = Field(
        None,
        description="Stop unpacking past this many bytes (a decompression bomb is a FAIL). "
        "Default: 4 times the archive's size, at least 1 GiB.",
        examples=["20g"],
    )
    pattern: str | None = Field(
        None,
        description="Take the newest file whose last name part matches this glob (when a "
        "folder or a prefix is given).",
        examples=["erp-*.tar.zst"],
    )

    @field_validator("digest")
    @classmethod
    def _valid_digest(cls, value: str) -> str:
        return parse_digest(value)

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, value: str | None) -> str | None:
        return parse_pattern(value)

    @property
    def expected_digest(self) -> str | None:
        """The hex digest written in the scenario (digest: sha256:HEX), else None."""
        if self.digest.startswith(DIGEST_PREFIX):
            return self.digest[len(DIGEST_PREFIX) :]
        return None

    def unpack_limit(self, archive_size: int | None) -> int:
        """Bytes unpacking may write: max_unpacked, or 4x the archive's size (at least 1 GiB)."""
        if self.max_unpacked is not None:
            return self.max_unpacked
        return max(UNPACK_FACTOR * (archive_size or 0), UNPACK_MINIMUM_BYTES)


class HashingReader:
    """A binary stream that computes the SHA-256 and counts the bytes of everything read
    through it, so that the digest costs no second pass over the data."""

    def __init__(self, stream: Readable) -> None:
        self.stream = stream
        self.bytes_read = 0
        self._hash = hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        data = self.stream.read(size)
        self._hash.update(data)
        self.bytes_read += len(data)
        return data

    def readable(self) -> bool:
        return True

    def hexdigest(self) -> str:
        """The SHA-256 of the bytes read so far."""
        return self._hash.hexdigest()


def digest_check(name: str, expected_hex: str | None, actual_hex: str, size: int) -> Check:
    """The digest of the bytes fetched against the declared one. It proves data only when
    there was one to compare with; without it, the digest is still recorded."""
    observed = f"sha256 {actual_hex} ({size:,} bytes)"
    if expected_hex is None:
        return Check.passed("digest", observed=observed, detail=f"{name}: no digest declared")
    expected_hex = expected_hex.lower()
    if expected_hex == actual_hex:
        return Check.passed(
            "digest",
            reason="sha256 matches",
            expected=expected_hex,
            observed=observed,
            proves_data=True,
        )
    return Check.failed(
        "digest",
        f"digest of {name} differs: expected {expected_hex[:SHORT_DIGEST]}..., "
        f"got {actual_hex[:SHORT_DIGEST]}...",
        expected=expected_hex,
        observed=observed,
    )


def read_sidecar(stream: Readable, location: str) -> str:
    """The digest a sidecar holds, read with a bound: SourceError when it is not one."""
    data = stream.read(SIDECAR_LIMIT_BYTES + 1)
    return sidecar_digest(data, location)


def sidecar_digest(data: bytes, location: str) -> str:
    """The first 64 hex digits on a sidecar's first line (sha256sum format: 'HEX  name')."""
    if len(data) > SIDECAR_LIMIT_BYTES:
        raise SourceError(f"sidecar {location} is larger than 4 KiB: not a sha256sum file")
    first_line = data.split(b"\n", 1)[0].strip().decode("utf-8", errors="replace")
    match = _SIDECAR_LINE.match(first_line)
    if not match:
        raise SourceError(
            f"sidecar {location} is not in sha256sum format (64 hex digits, then the name)"
        )
    return match[1].lower()


class Candidate(NamedTuple):
    """A file or object that may be the newest backup."""

    name: str  # a path or a key: the pattern is matched against its last part
    time: datetime
    size: int


def matches(name: str, pattern: str | None) -> bool:
    """Whether the last part of name matches the glob (case-sensitive); any name without one."""
    return pattern is None or fnmatch.fnmatchcase(name.rsplit("/", 1)[-1], pattern)


def newest(
    candidates: Iterable[tuple[str, datetime, int]], pattern: str | None
) -> Candidate | None:
    """The newest candidate (name, time, size) by time whose last name part matches the
    pattern; ties go to the greatest name, so erp-2026-11-23 wins over erp-2026-11-22 written
    in the same second."""
    best: Candidate | None = None
    for name, time, size in candidates:
        if matches(name, pattern) and (best is None or (time, name) > (best.time, best.name)):
            best = Candidate(name, time, size)
    return best

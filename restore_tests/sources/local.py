"""A plain backup on local disk or a mounted share: one file, or the newest file in a folder.

An archive is unpacked into staging while it is read (restore_tests/unpack.py). A file stored
as is (unpack: none, or a suffix that is no archive) is not copied when it can be hard-linked
into staging: the pipeline walks and sweeps the folder it is given and mounts it into the
sandbox, so it must never be handed the user's own folder, and a link in staging costs no copy.
A file whose setuid/setgid bits the sweep would clear (on the shared inode), or on another
filesystem, is copied instead. Its bytes are hashed while they are read, once.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from restore_tests import unpack
from restore_tests.errors import Interrupted, ObjectiveMissed, SourceError
from restore_tests.results import Check
from restore_tests.sources.base import (
    FILE_MTIME,
    Fetched,
    FetchProgress,
    FetchRequest,
    RestorePoint,
    Source,
)
from restore_tests.sources.plain import (
    DIGEST_METADATA,
    DIGEST_SIDECAR,
    SIDECAR_SUFFIX,
    HashingReader,
    PlainOptions,
    digest_check,
    matches,
    newest,
    read_sidecar,
)
from restore_tests.timing import format_duration
from restore_tests.unpack import AS_IS, archive_layout
from restore_tests.unpack_writer import CHUNK_BYTES, size_text

_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO named by mistake never hangs


class LocalSettings(PlainOptions):
    """A file on local disk or a mounted share (NAS): one file, or the newest in a folder."""

    type: Literal["local"]
    path: str = Field(
        description="A file, or a folder whose newest regular file (matching `pattern`, not "
        "recursive, links not followed) is taken; relative to the scenario file's folder.",
        examples=["/mnt/nas/exports/", "exports/erp-2026-11-23.tar.gz"],
    )

    @field_validator("path")
    @classmethod
    def _valid_path(cls, value: str) -> str:
        if not value.strip() or "\0" in value:
            raise ValueError("give the path of a file or a folder")
        return value

    @model_validator(mode="after")
    def _no_metadata_digest(self) -> LocalSettings:
        if self.digest == DIGEST_METADATA:
            raise ValueError(
                "digest: metadata is for s3 objects; for a local file use 'sidecar' (a "
                "NAME.sha256 file next to it) or 'sha256:<64 hex digits>'"
            )
        return self

    def resolved(self, folder: Path) -> LocalSettings:
        """A relative path resolves against the scenario file's folder, not the current one."""
        path = os.path.expanduser(self.path)
        if os.path.isabs(path):
            return self
        return self.model_copy(update={"path": os.path.join(folder, path)})


class LocalSource(Source):
    """A file on local disk or a mounted share, read front to back once."""

    name: ClassVar[str] = "local"
    settings_model: ClassVar[type[LocalSettings]] = LocalSettings

    def __init__(self, settings: LocalSettings, scratch: Path, no_cache: bool = False) -> None:
        self.settings = settings
        self.scratch = scratch
        self.path = Path(os.path.abspath(os.path.expanduser(settings.path)))

    @property
    def location(self) -> str:
        return str(self.path)

    def preflight(self) -> None:
        """The path exists and can be read (a folder listed, a file opened)."""
        try:
            status = os.stat(self.path)
            if stat.S_ISDIR(status.st_mode):
                with os.scandir(self.path) as entries:
                    next(entries, None)
            elif stat.S_ISREG(status.st_mode):
                os.close(os.open(self.path, _READ_FLAGS))
            else:
                raise SourceError(f"local path {self.path} is neither a file nor a folder")
        except FileNotFoundError:
            raise SourceError(f"local path {self.path} does not exist") from None
        except OSError as error:
            raise SourceError(
                f"local path {self.path} is not readable ({error.strerror})"
            ) from None

    def select(self) -> RestorePoint:
        """The file, or the newest matching regular file of the folder (by mtime, then name)."""
        try:
            chosen = self._chosen()
        except OSError as error:
            raise SourceError(
                f"local path {self.path} is not readable ({error.strerror})"
            ) from None
        path, status = chosen
        when = datetime.fromtimestamp(status.st_mtime, UTC)
        return RestorePoint(
            id=str(path),
            short_id=path.name,
            time=when,
            time_basis=FILE_MTIME,
            size_bytes=status.st_size,
            description=f"file {path.name} ({when:%Y-%m-%d %H:%M} UTC, "
            f"{size_text(status.st_size)})",
            label=f"file {path.name}",
        )

    def _chosen(self) -> tuple[Path, os.stat_result]:
        pattern = self.settings.pattern
        status = os.stat(self.path)
        if not stat.S_ISDIR(status.st_mode):
            if not stat.S_ISREG(status.st_mode):
                raise SourceError(f"local path {self.path} is neither a file nor a folder")
            if not matches(self.path.name, pattern):
                raise SourceError(f"local file {self.path} does not match {pattern}")
            return self.path, status
        best = newest(self._candidates(), pattern)
        if best is None:
            raise SourceError(
                f"no file in {self.path} matches {pattern}"
                if pattern
                else f"no regular file in {self.path}"
            )
        chosen = self.path / best.name
        return chosen, os.stat(chosen, follow_symlinks=False)

    def _candidates(self) -> Iterator[tuple[str, datetime, int]]:
        """Regular files of the folder, not recursive, links not followed; sidecars are never
        the backup (written after the archive, they would be the newest)."""
        with os.scandir(self.path) as entries:
            for entry in entries:
                if entry.name.endswith(SIDECAR_SUFFIX) or not entry.is_file(follow_symlinks=False):
                    continue
                status = entry.stat(follow_symlinks=False)
                yield entry.name, datetime.fromtimestamp(status.st_mtime, UTC), status.st_size

    def space_needed(self, point: RestorePoint) -> int | None:
        """Nothing when the file will be hard-linked into staging; else its size (an archive
        may unpack to more, but max_unpacked stops a bomb and 4x would refuse most drills)."""
        if archive_layout(point.id, self.settings.unpack).kind != AS_IS:
            return point.size_bytes
        try:
            linkable = self._linkable(os.stat(point.id))
        except OSError:
            linkable = False
        return None if linkable else point.size_bytes

    def _linkable(self, status: os.stat_result) -> bool:
        """On the staging's filesystem, and without a setuid/setgid bit that the sweep of the
        staged data would clear on the shared inode, so on the user's own file."""
        try:
            same_filesystem = status.st_dev == os.stat(self.scratch).st_dev
        except OSError:
            return False
        return same_filesystem and not status.st_mode & (stat.S_ISUID | stat.S_ISGID)

    def fetch(self, point: RestorePoint, request: FetchRequest) -> Fetched:
        """The file into request.target: unpacked, or hard-linked (else copied) as is, hashed
        while it is read; its checks: the digest, the size read, the unpacking."""
        path = Path(point.id)
        expected = self._expected_digest(path)
        as_is = archive_layout(path.name, self.settings.unpack).kind == AS_IS
        try:
            with self._opened(path) as stream:
                hashing = HashingReader(stream)
                watch = _watch(request, hashing, point)
                if as_is and self._link(path, os.fstat(stream.fileno()), request.target):
                    if expected is None:
                        return Fetched(root=request.target)  # nothing to read, nothing to check
                    _read_all(hashing, watch)
                    read_to_end, checks = True, []
                else:
                    unpacked = self._store(hashing, path.name, request, watch, point)
                    read_to_end, checks = unpacked.read_to_end, unpacked.checks()
        except OSError as error:  # the local disk or the share, not staging (a HostError)
            raise SourceError(f"local file {path} could not be read ({error.strerror})") from None
        if read_to_end:  # else unpacking stopped at its limit: its FAIL says why
            checks[:0] = _read_checks(path, point, expected, hashing)
        return Fetched(root=request.target, checks=checks)

    def _expected_digest(self, path: Path) -> str | None:
        """The declared digest: written in the scenario, or read from the sidecar."""
        if self.settings.digest != DIGEST_SIDECAR:
            return self.settings.expected_digest
        sidecar = Path(f"{path}{SIDECAR_SUFFIX}")
        try:
            with self._opened(sidecar) as stream:
                return read_sidecar(stream, str(sidecar))
        except FileNotFoundError:
            raise SourceError(f"sidecar {sidecar} not found (digest: sidecar)") from None
        except OSError as error:
            raise SourceError(f"sidecar {sidecar} is not readable ({error.strerror})") from None

    @contextmanager
    def _opened(self, path: Path) -> Iterator[BinaryIO]:
        """A regular file opened for reading; inside a folder, a link is never followed."""
        flags = _READ_FLAGS | (os.O_NOFOLLOW if path != self.path else 0)
        descriptor = os.open(path, flags)
        with os.fdopen(descriptor, "rb", buffering=0) as stream:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise SourceError(f"local path {path} is not a regular file")
            yield stream

    def _link(self, path: Path, opened: os.stat_result, target: Path) -> bool:
        """Hard-link the file opened into target when that is safe and possible (no copy)."""
        if not self._linkable(opened):
            return False
        staged = target / path.name
        try:
            os.link(os.path.realpath(path), staged, follow_symlinks=False)  # a named link
            if os.stat(staged, follow_symlinks=False).st_ino == opened.st_ino:
                return True
            os.unlink(staged)  # replaced since it was opened: the copy reads what was opened
        except OSError:
            pass  # another filesystem, a protected link: it is copied instead
        return False

    def _store(
        self,
        hashing: HashingReader,
        name: str,
        request: FetchRequest,
        watch: Callable[[], bool],
        point: RestorePoint,
    ) -> unpack.Unpacked:
        limit = self.settings.unpack_limit(point.size_bytes)
        return unpack.store(
            hashing, name, request.target, self.settings.unpack, limit, watch, request.scratch
        )


def _watch(
    request: FetchRequest, hashing: HashingReader, point: RestorePoint
) -> Callable[[], bool]:
    """Called at each read: reports progress, stops past the timeout, says if cancelled."""
    timeout = request.timeout
    deadline = time.monotonic() + timeout if timeout else None

    def cancelled() -> bool:
        if deadline is not None and time.monotonic() > deadline:
            raise ObjectiveMissed(
                f"reading {point.id} did not finish within {format_duration(timeout)}: stopped"
            )
        request.progress(FetchProgress(hashing.bytes_read, point.size_bytes))
        return request.cancelled()

    return cancelled


def _read_all(hashing: HashingReader, watch: Callable[[], bool]) -> None:
    """Read to the end for the digest alone (a file linked, not copied)."""
    while True:
        if watch():
            raise Interrupted()
        if not hashing.read(CHUNK_BYTES):
            return


def _read_checks(
    path: Path, point: RestorePoint, expected: str | None, hashing: HashingReader
) -> list[Check]:
    """The digest of the bytes read, and their count against the size when selected."""
    checks = [digest_check(str(path), expected, hashing.hexdigest(), hashing.bytes_read)]
    if point.size_bytes is not None and hashing.bytes_read != point.size_bytes:
        checks.append(
            Check.error(
                "size",
                f"file {path.name} changed while it was read: {point.size_bytes:,} bytes when "
                f"selected, {hashing.bytes_read:,} read",
            )
        )
    return checks

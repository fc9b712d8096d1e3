"""sha256sum-format manifests and fast, bounded-memory verification of restored files.

Never trust size or mtime: restic restores a damaged blob as zeros with the right size and
mtime, so every file named in a manifest is hashed. Only regular files inside the restored tree
are opened (restored.RestoredTree resolves every name), never a FIFO, a device or a host file.
Python's hashlib uses SHA-NI where coreutils does not; one reusable buffer per worker keeps
memory flat for any restore size.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from restore_tests import execute
from restore_tests.errors import Interrupted
from restore_tests.prehash import EarlyDigests
from restore_tests.restored import MISSING, OPEN_FLAGS, REGULAR, RestoredTree

BUFFER_BYTES = 1024 * 1024
INLINE_BELOW_BYTES = 1024 * 1024  # smaller files are hashed in the calling thread
Job = tuple[int, str, str, str]  # size, manifest name, path inside the tree, expected sha256
_LINE = re.compile(r"^(\\?)([0-9a-fA-F]{64}) [ *](.+)$")


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One expected file: its path relative to the manifest's folder and its sha256."""

    path: str
    sha256: str


@dataclass(frozen=True)
class Manifest:
    entries: list[ManifestEntry]
    malformed_lines: list[int]


def parse_manifest(text: str) -> Manifest:
    """Parse `sha256sum` output, including its backslash-escaped names."""
    entries: list[ManifestEntry] = []
    malformed: list[int] = []
    for number, line in enumerate(_lines(text), start=1):
        line = line.removesuffix("\r")  # CRLF manifests; a CR inside a name is escaped
        if not line.strip() or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            malformed.append(number)
            continue
        escaped, digest, name = match.groups()
        if escaped:
            name = _unescape(name)
        entries.append(ManifestEntry(name, digest.lower()))
    return Manifest(entries, malformed)


def _lines(text: str) -> Iterator[str]:
    """The text's lines, one at a time (a list of 600,000 lines would double the memory).

    Split on newlines only: sha256sum escapes \\n, \\r and \\\\ in names but not \\f or \\v,
    which str.splitlines() would also break on.
    """
    start = 0
    while (end := text.find("\n", start)) >= 0:
        yield text[start:end]
        start = end + 1
    yield text[start:]


def _unescape(name: str) -> str:
    """Undo sha256sum's escaping of a name: \\\\ -> \\, \\n -> newline, \\r -> CR."""
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), name)


@dataclass
class Verification:
    """What hashing the expected files found."""

    checked: int = 0
    matched: int = 0
    bytes_hashed: int = 0
    matched_early: int = 0  # of matched: hashed while the source was still fetching
    missing: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    # Restored entries that cannot hold the expected content: a folder, a FIFO, a device, a
    # link leading out of the restored data. The backup's fault: a failure.
    unreadable: list[str] = field(default_factory=list)
    # Regular files the host could not read (permission denied, too many open files, I/O
    # error): not the backup's fault, so the check could not run: an error.
    host_errors: list[str] = field(default_factory=list)

    def add(self, other: Verification) -> None:
        """Count another thread's files in."""
        self.matched += other.matched
        self.bytes_hashed += other.bytes_hashed
        for mine, theirs in (
            (self.missing, other.missing),
            (self.differing, other.differing),
            (self.unreadable, other.unreadable),
            (self.host_errors, other.host_errors),
        ):
            mine.extend(theirs)

    @property
    def ok(self) -> bool:
        return self.checked > 0 and not (
            self.missing or self.differing or self.unreadable or self.host_errors
        )


def sha256_file(path: str, buffer: bytearray, cancelled: Callable[[], bool] = bool) -> str:
    """The sha256 of a regular file; anything else (a FIFO, a device) is refused unopened.

    O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: never a link's target.
    """
    descriptor = os.open(path, OPEN_FLAGS)
    try:
        return sha256_open_file(descriptor, path, buffer, cancelled).hex()
    finally:
        os.close(descriptor)


def sha256_open_file(
    descriptor: int, path: str, buffer: bytearray, cancelled: Callable[[], bool] = bool
) -> bytes:
    """The sha256 digest of an open file, which must be a regular file (else NotRegularFile).

    A file that fits in the buffer is read with one call when that call returns its whole size:
    for a 1 KiB file the second read that would only confirm the end costs as much as hashing.
    """
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):
        raise NotRegularFile(path)
    view = memoryview(buffer)
    read = os.readv(descriptor, [buffer])
    digest = hashlib.sha256(view[:read])
    if read < len(buffer) and read == status.st_size:
        return digest.digest()
    while read:
        if cancelled():
            raise Interrupted()
        read = os.readv(descriptor, [buffer])
        digest.update(view[:read])
    return digest.digest()


class NotRegularFile(OSError):
    """Opened something that is not a regular file (the tree changed since it was walked)."""


def verify(
    tree: RestoredTree,
    expected: Iterable[tuple[str, str]],
    workers: int | None = None,
    cancelled: Callable[[], bool] = execute.cancel_requested,
    early: EarlyDigests | None = None,
) -> Verification:
    """Hash each (path inside the tree, sha256) pair; only regular files inside the tree are read.

    Paths are resolved over the tree's index (links followed only while they stay inside), so
    nothing outside the restored data is ever opened. A file hashed while the restore ran
    (early, see prehash.py) counts when its digest matches and its size is the walk's; a
    mismatch is hashed again before it is called a difference. Small files are hashed inline as
    they are looked up (for a 1 KiB file a thread hand-off costs more than the hashing, and a
    queued job per file holds ~120 bytes: 12 MB at 100,000 files); large ones afterwards,
    largest first, over worker threads that pull from one shared list (hashlib and file reads
    release the GIL), each with its own buffer. Raises Interrupted when cancelled (checked
    between chunks and files).
    """
    large: list[Job] = []
    result = Verification()
    buffer = bytearray(BUFFER_BYTES)
    for name, digest in expected:
        result.checked += 1
        found = tree.lookup(name)
        if found.kind == REGULAR:
            size = tree.files[found.path]
            if early is not None and early.matches(found.path, size, digest):
                result.matched += 1
                result.matched_early += 1
                result.bytes_hashed += size
            elif size >= INLINE_BELOW_BYTES:
                large.append((size, name, found.path, digest))
            elif cancelled():
                raise Interrupted()
            else:
                _hash_one(tree.root, (size, name, found.path, digest), buffer, result, cancelled)
        elif found.kind == MISSING:
            result.missing.append(name)
        else:
            result.unreadable.append(f"{name} ({found.kind})")
    large.sort(reverse=True)
    _hash_large(tree.root, large, result, workers, cancelled)
    for names in (result.missing, result.differing, result.unreadable, result.host_errors):
        names.sort()
    return result


def _hash_large(
    root: Path,
    jobs: list[Job],
    result: Verification,
    workers: int | None,
    cancelled: Callable[[], bool],
) -> None:
    """Hash the large files over worker threads that pull from one shared list. Each thread
    counts into its own Verification, added up at the end (no lock per file)."""
    lock = threading.Lock()
    pending = iter(jobs)
    partials: list[Verification] = []

    def next_job() -> Job | None:
        with lock:
            return next(pending, None)

    def work() -> None:
        buffer, counted = bytearray(BUFFER_BYTES), Verification()
        while not cancelled() and (job := next_job()) is not None:
            _hash_one(root, job, buffer, counted, cancelled)
        with lock:
            partials.append(counted)

    threads = [
        threading.Thread(target=work, daemon=True)
        for _ in range(min(workers or default_workers(), len(jobs)))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for counted in partials:
        result.add(counted)
    if cancelled():
        raise Interrupted()


def _hash_one(
    root: Path,
    job: Job,
    buffer: bytearray,
    result: Verification,
    cancelled: Callable[[], bool],
) -> None:
    size, name, path, digest = job
    location = f"{root}/{path}"  # path is relative to the tree, as the walk found it
    try:
        descriptor = os.open(location, OPEN_FLAGS)
        try:
            actual = sha256_open_file(descriptor, location, buffer, cancelled).hex()
        finally:
            os.close(descriptor)
    except Interrupted:
        return
    except NotRegularFile:
        result.unreadable.append(f"{name} (not a regular file)")
        return
    except OSError as error:
        result.host_errors.append(f"{name} ({error.strerror or error})")
        return
    result.bytes_hashed += size
    if actual == digest:
        result.matched += 1
    else:
        result.differing.append(name)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))

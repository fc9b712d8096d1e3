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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from restore_tests import execute
from restore_tests.errors import Interrupted
from restore_tests.restored import MISSING, OPEN_FLAGS, REGULAR, RestoredTree

BUFFER_BYTES = 1024 * 1024
INLINE_BELOW_BYTES = 1024 * 1024  # smaller files are hashed in the calling thread
_LINE = re.compile(r"^(\\?)([0-9a-fA-F]{64}) [ *](.+)$")


@dataclass(frozen=True)
class ManifestEntry:
    """One expected file: its path relative to the manifest's folder and its sha256."""

    path: str
    sha256: str
    line: int


@dataclass(frozen=True)
class Manifest:
    entries: list[ManifestEntry]
    malformed_lines: list[int]


def parse_manifest(text: str) -> Manifest:
    """Parse `sha256sum` output, including its backslash-escaped names."""
    entries: list[ManifestEntry] = []
    malformed: list[int] = []
    # Split on newlines only: sha256sum escapes \n, \r and \\ in names but not \f or \v,
    # which str.splitlines() would also break on.
    for number, line in enumerate(text.split("\n"), start=1):
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
        entries.append(ManifestEntry(name, digest.lower(), number))
    return Manifest(entries, malformed)


def _unescape(name: str) -> str:
    """Undo sha256sum's escaping of a name: \\\\ -> \\, \\n -> newline, \\r -> CR."""
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), name)


@dataclass
class Verification:
    """What hashing the expected files found."""

    checked: int = 0
    matched: int = 0
    bytes_hashed: int = 0
    missing: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    # Restored entries that cannot hold the expected content: a folder, a FIFO, a device, a
    # link leading out of the restored data. The backup's fault: a failure.
    unreadable: list[str] = field(default_factory=list)
    # Regular files the host could not read (permission denied, too many open files, I/O
    # error): not the backup's fault, so the check could not run: an error.
    host_errors: list[str] = field(default_factory=list)

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
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotRegularFile(path)
        digest = hashlib.sha256()
        view = memoryview(buffer)
        while read := os.readv(descriptor, [buffer]):
            digest.update(view[:read])
            if cancelled():
                raise Interrupted()
    finally:
        os.close(descriptor)
    return digest.hexdigest()


class NotRegularFile(OSError):
    """Opened something that is not a regular file (the tree changed since it was walked)."""


def verify(
    tree: RestoredTree,
    expected: Iterable[tuple[str, str]],
    workers: int | None = None,
    cancelled: Callable[[], bool] = execute.cancel_requested,
) -> Verification:
    """Hash each (path inside the tree, sha256) pair; only regular files inside the tree are read.

    Paths are resolved over the tree's index (links followed only while they stay inside), so
    nothing outside the restored data is ever opened. Large files first, spread over worker
    threads that pull from one shared list (hashlib and file reads release the GIL), each with
    its own buffer. Raises Interrupted when cancelled (checked between chunks).
    """
    jobs: list[tuple[int, str, str, str]] = []
    result = Verification()
    for name, digest in expected:
        result.checked += 1
        found = tree.lookup(name)
        if found.kind == REGULAR:
            size = tree.files[found.path]
            jobs.append((size, name, str(tree.root / found.path), digest))
        elif found.kind == MISSING:
            result.missing.append(name)
        else:
            result.unreadable.append(f"{name} ({found.kind})")
    jobs.sort(reverse=True)
    _hash_jobs(jobs, result, workers, cancelled)
    for names in (result.missing, result.differing, result.unreadable, result.host_errors):
        names.sort()
    return result


def _hash_jobs(
    jobs: list[tuple[int, str, str, str]],
    result: Verification,
    workers: int | None,
    cancelled: Callable[[], bool],
) -> None:
    """Large files (sorted first) go to worker threads; small ones are hashed here, inline,
    meanwhile: for a 1 KiB file a thread hand-off costs more than the hashing."""
    lock = threading.Lock()
    large = [job for job in jobs if job[0] >= INLINE_BELOW_BYTES]
    pending = iter(large)

    def next_large() -> tuple[int, str, str, str] | None:
        with lock:
            return next(pending, None)

    def work() -> None:
        buffer = bytearray(BUFFER_BYTES)
        while not cancelled() and (job := next_large()) is not None:
            _hash_one(job, buffer, result, cancelled, lock)

    threads = [
        threading.Thread(target=work, daemon=True)
        for _ in range(min(workers or default_workers(), len(large)))
    ]
    for thread in threads:
        thread.start()
    buffer = bytearray(BUFFER_BYTES)
    for job in jobs[len(large) :] if threads else jobs:
        if cancelled():
            break
        _hash_one(job, buffer, result, cancelled, lock)
    for thread in threads:
        thread.join()
    if cancelled():
        raise Interrupted()


def _hash_one(
    job: tuple[int, str, str, str],
    buffer: bytearray,
    result: Verification,
    cancelled: Callable[[], bool],
    lock: threading.Lock,
) -> None:
    size, name, location, digest = job
    try:
        actual = sha256_file(location, buffer, cancelled)
    except Interrupted:
        return
    except NotRegularFile:
        with lock:
            result.unreadable.append(f"{name} (not a regular file)")
        return
    except OSError as error:
        with lock:
            result.host_errors.append(f"{name} ({error.strerror or error})")
        return
    with lock:
        result.bytes_hashed += size
        if actual == digest:
            result.matched += 1
        else:
            result.differing.append(name)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))

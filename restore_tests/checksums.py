"""sha256sum-format manifests and fast, bounded-memory verification of restored files.

Never trust size or mtime: restic restores a damaged blob as zeros with the right size and
mtime, so every file named in a manifest is hashed. Python's hashlib uses SHA-NI where
coreutils does not; one reusable buffer per worker keeps memory flat for any restore size.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

BUFFER_BYTES = 1024 * 1024
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
    unreadable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.checked > 0 and not (self.missing or self.differing or self.unreadable)


def sha256_file(path: str, buffer: bytearray) -> str:
    digest = hashlib.sha256()
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as stream:
        while read := stream.readinto(buffer):
            digest.update(view[:read])
    return digest.hexdigest()


def verify(
    root: Path,
    expected: Iterable[tuple[str, str]],
    workers: int | None = None,
) -> Verification:
    """Hash each (path inside root, sha256) pair; paths may not leave root, links included.

    Large files first, spread over worker threads that pull from one shared list (hashlib and
    file reads release the GIL), each with its own buffer.
    """
    real_root = os.path.realpath(root)
    jobs: list[tuple[int, str, str, str]] = []
    result = Verification()
    for name, digest in expected:
        result.checked += 1
        location = os.path.realpath(os.path.join(real_root, name))
        if os.path.commonpath([real_root, location]) != real_root:
            result.unreadable.append(f"{name} (leads outside the restored data)")
            continue
        try:
            size = os.stat(location).st_size
        except FileNotFoundError:
            result.missing.append(name)
            continue
        except OSError as error:
            result.unreadable.append(f"{name} ({error.strerror})")
            continue
        jobs.append((size, name, location, digest))
    jobs.sort(reverse=True)
    lock = threading.Lock()
    pending = iter(jobs)

    def work() -> None:
        buffer = bytearray(BUFFER_BYTES)
        while True:
            with lock:
                job = next(pending, None)
            if job is None:
                return
            size, name, location, digest = job
            try:
                actual = sha256_file(location, buffer)
            except OSError as error:
                with lock:
                    result.unreadable.append(f"{name} ({error.strerror})")
                continue
            with lock:
                result.bytes_hashed += size
                if actual == digest:
                    result.matched += 1
                else:
                    result.differing.append(name)

    count = max(1, min(workers or default_workers(), len(jobs)))
    threads = [threading.Thread(target=work, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for names in (result.missing, result.differing, result.unreadable):
        names.sort()
    return result


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class TreeStats:
    files: int
    bytes: int


def walk_files(root: Path) -> Iterator[tuple[str, int]]:
    """Every regular file below root (relative path, size), never following links."""
    stack = [str(root)]
    base = len(str(root)) + 1
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    yield entry.path[base:], entry.stat(follow_symlinks=False).st_size


def tree_stats(root: Path) -> TreeStats:
    files = total = 0
    for _, size in walk_files(root):
        files += 1
        total += size
    return TreeStats(files, total)

"""Hashing restored files while the restore is still running.

restic 0.17+ names each file once it has written the whole of it (`restore --json -vv`:
`verbose_status`, action `restored`). A background thread hashes each such file right away, so
that on a large restore the hashing is done when restic is, instead of starting then.

It is only a head start; the verdict stays with checksums.verify():
- a file is opened only through real folders below the restore root (openat, one component at
  a time, never following a link) and only if it is a regular file; anything else is left for
  the verification after the walk, which resolves links inside the tree;
- an early digest counts only if the walk found a regular file of the same size at that path;
- a path restic names twice is doubted and hashed again after the restore;
- an early digest that differs from the manifest is hashed again before it is called a
  difference, so a head start can never turn into a verdict of its own.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from restore_tests.errors import Interrupted
from restore_tests.restored import OPEN_FLAGS

log = logging.getLogger(__name__)
BUFFER_BYTES = 1024 * 1024
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SIZE_BYTES = 8  # a digest is kept as 8 bytes of size then 32 of sha256: one small object


class EarlyDigests:
    """Digests of files below one folder of the restore, taken as restic finishes them."""

    def __init__(self, root: Path, below: str, cancelled: Callable[[], bool]) -> None:
        self.root = root
        self.prefix = below.strip("/") + "/" if below.strip("/") else ""
        self.cancelled = cancelled
        self.files = 0
        self.bytes = 0
        self._digests: dict[str, bytes] = {}
        self._doubted: set[str] = set()
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="early-hash", daemon=True)

    def __enter__(self) -> EarlyDigests:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stopping = True
        self.finish()

    def restored(self, item: str) -> None:
        """restic finished writing this snapshot path (called from the restore's reader)."""
        relative = item.lstrip("/")
        if relative.startswith(self.prefix):
            self._queue.put(relative)

    def finish(self) -> None:
        """Wait until every file named so far is hashed (or stop at once when cancelled)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def matches(self, path: str, size: int, sha256: str) -> bool:
        """True when the file at path (relative to the root) was hashed early, had this size
        and this sha256; call finish() first."""
        kept = self._digests.get(path)
        return (
            kept is not None
            and int.from_bytes(kept[:_SIZE_BYTES], "little") == size
            and kept[_SIZE_BYTES:].hex() == sha256
        )

    def release(self) -> None:
        """Forget the digests (after the verification): 100,000 of them hold ~20 MiB."""
        self._digests.clear()
        self._doubted.clear()

    def _work(self) -> None:
        from restore_tests.checksums import NotRegularFile, sha256_open_file

        buffer = bytearray(BUFFER_BYTES)
        with _Folders(self.root) as folders:
            while (relative := self._queue.get()) is not None:
                if self._stopping or self.cancelled():
                    continue  # drain: the restore's reader must never block on us
                if relative in self._digests or relative in self._doubted:
                    self._digests.pop(relative, None)
                    self._doubted.add(relative)
                    continue
                try:
                    descriptor = folders.open(relative)
                    try:
                        digest = sha256_open_file(descriptor, relative, buffer, self._stop)
                        size = os.fstat(descriptor).st_size
                    finally:
                        os.close(descriptor)
                except (OSError, NotRegularFile, Interrupted, ValueError):
                    continue  # left for the verification after the walk
                self._digests[relative] = size.to_bytes(_SIZE_BYTES, "little") + digest
                self.files += 1
                self.bytes += size
        log.debug("hashed %d files (%d bytes) while the restore ran", self.files, self.bytes)

    def _stop(self) -> bool:
        return self._stopping or self.cancelled()


class _Folders:
    """Opens files below a root through real folders only; keeps the last folder open (restic
    finishes the files of one folder close together)."""

    def __init__(self, root: Path) -> None:
        self.root = os.open(root, FOLDER_FLAGS)
        self.last_name: str | None = None
        self.last: int | None = None

    def __enter__(self) -> _Folders:
        return self

    def __exit__(self, *exception: object) -> None:
        if self.last is not None:
            os.close(self.last)
        os.close(self.root)

    def open(self, relative: str) -> int:
        folder, _, name = relative.rpartition("/")
        if name in ("", ".", ".."):
            raise ValueError(relative)
        return os.open(name, OPEN_FLAGS, dir_fd=self._folder(folder))

    def _folder(self, folder: str) -> int:
        if folder == "":
            return self.root
        if folder == self.last_name and self.last is not None:
            return self.last
        if self.last is not None:
            os.close(self.last)
            self.last, self.last_name = None, None
        descriptor = os.dup(self.root)
        try:
            for part in folder.split("/"):
                if part in ("", ".", ".."):
                    raise ValueError(folder)
                inner = os.open(part, FOLDER_FLAGS, dir_fd=descriptor)
                os.close(descriptor)
                descriptor = inner
        except BaseException:
            os.close(descriptor)
            raise
        self.last, self.last_name = descriptor, folder
        return descriptor

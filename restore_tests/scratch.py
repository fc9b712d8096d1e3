"""A kind's writable space on disk, watched while the kind writes to it.

A database's files live in a folder of the private staging area (mounted at /scratch in the
sandbox): its size was checked free before the sandbox started, but what a dump writes is the
backup's to decide, and a hostile one (a plain SQL dump that inserts without end) would fill the
host's disk. So while the kind loads and verifies, the folder's size and the disk's free space
are polled; past the limit, the sandbox's processes are stopped and the run is a FAIL that says
why. Everything is bounded: a walk of the folder is cheap next to what a server writes.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from restore_tests.timing import format_size

POLL_SECONDS = 1.0
FREE_FLOOR_BYTES = 512 * 1024**2  # never let the host's disk go below this
FREE_FLOOR_FRACTION = 0.02


def folder_bytes(folder: Path) -> int:
    """Bytes allocated below folder (links not followed); what cannot be read counts zero."""
    total = 0
    stack = [str(folder)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total


class ScratchWatch:
    """Polls a scratch folder in a thread; stop() is called once when it outgrows its limit."""

    def __init__(self, folder: Path, limit_bytes: int, stop: Callable[[], None]) -> None:
        self.folder, self.limit_bytes, self.stop = folder, limit_bytes, stop
        self.reason = ""
        self._done = threading.Event()

    def _overflow(self) -> str:
        used = folder_bytes(self.folder)
        if used > self.limit_bytes:
            return (
                f"the sandbox wrote {format_size(used)} to its scratch space, more than the "
                f"{format_size(self.limit_bytes)} set aside for it: stopped (a dump that "
                "expands without bound, or a scratch size too small for this database)"
            )
        disk = shutil.disk_usage(self.folder)
        floor = max(FREE_FLOOR_BYTES, int(disk.total * FREE_FLOOR_FRACTION))
        if disk.free < floor:
            return (
                f"the disk holding the sandbox's scratch space has {format_size(disk.free)} "
                f"free, under the {format_size(floor)} kept for the host: stopped"
            )
        return ""

    def _run(self) -> None:
        while not self._done.wait(POLL_SECONDS):
            reason = self._overflow()
            if reason:
                self.reason = reason
                self.stop()
                return


@contextmanager
def watched(
    folder: Path | None, limit_bytes: int, stop: Callable[[], None]
) -> Iterator[ScratchWatch | None]:
    """Watch folder while the block runs (nothing when there is no folder)."""
    if folder is None:
        yield None
        return
    watch = ScratchWatch(folder, limit_bytes, stop)
    thread = threading.Thread(target=watch._run, name="scratch-watch", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        watch._done.set()
        thread.join()

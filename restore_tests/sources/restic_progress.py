"""How far a restic restore is, when restic does not say it itself.

restic 0.16 and later print JSON status lines while restoring (RestoreReader reads them); 0.14
prints nothing. For it, the bytes restic has written so far are read from /proc/PID/io (wchar)
every POLL_SECONDS, from a thread, until restic ends. The size of the staging folder is no
measure: restic preallocates each file when it starts writing it, so a 400 MiB file counts in
full after its first blob (measured with 0.14: 408 MiB of 500 MiB "staged" when 21 MiB had been
written). wchar also counts restic's few lines of output: it is held to the total when known.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from restore_tests.sources.base import FetchProgress

JSON_PROGRESS_SINCE = (0, 16, 0)  # restic's own restore status (restic pull request 4314)
POLL_SECONDS = 0.5
STOP_WAIT_SECONDS = 2.0
PROC = Path("/proc")


@contextmanager
def written_bytes(
    on_progress: Callable[[FetchProgress], None] | None,
    total_bytes: int | None,
) -> Iterator[Callable[[int], None] | None]:
    """Yields the callback to give the restic process's id to (None without on_progress); the
    polling stops when the block ends."""
    if on_progress is None:
        yield None
        return
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def started(pid: int) -> None:
        poll = _poller(pid, on_progress, total_bytes, stop)
        threads.append(threading.Thread(target=poll, name="restic-progress", daemon=True))
        threads[-1].start()

    try:
        yield started
    finally:
        stop.set()
        for thread in threads:
            thread.join(STOP_WAIT_SECONDS)


def _poller(
    pid: int,
    on_progress: Callable[[FetchProgress], None],
    total_bytes: int | None,
    stop: threading.Event,
) -> Callable[[], None]:
    def poll() -> None:
        while not stop.wait(POLL_SECONDS):
            written = bytes_written(pid)
            if written is None:  # the process is gone, or /proc cannot tell
                return
            done = written if total_bytes is None else min(written, total_bytes)
            on_progress(FetchProgress(done, total_bytes))

    return poll


def bytes_written(pid: int, proc: Path = PROC) -> int | None:
    """What the process has written so far (its wchar), None when it cannot be read."""
    try:
        text = (proc / str(pid) / "io").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == "wchar" and value.strip().isdigit():
            return int(value)
    return None

"""Downloading one S3 object: ranged parts fetched ahead by threads, read back in order.

Memory is bounded (a few parts in flight), a cut transfer resumes from the byte it reached, and
every wait looks at cancellation and the scenario's deadline. s3.py selects the object and judges
it; this module only moves its bytes.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from restore_tests.errors import Interrupted, ObjectiveMissed, SourceError
from restore_tests.results import Check, one_line
from restore_tests.sources.base import FetchProgress, FetchRequest
from restore_tests.timing import format_duration

if TYPE_CHECKING:  # the source hands itself to the download (its client and its errors)
    from restore_tests.sources.s3 import S3Source

READ_TIMEOUT_SECONDS = 60
DOWNLOAD_ATTEMPTS = 3  # attempts at a part whose transfer is cut, resumed from the byte reached
PART_BYTES = 8 * 1024**2
PART_WORKERS = 4
PARTS_AHEAD = PART_WORKERS  # parts in flight or waiting to be read: the memory bound
CHUNK_BYTES = 256 * 1024  # one read from the network (1 MiB reads cost 3x the system time:
# buffers that large are mmapped and unmapped at each read, with TLB shootdowns across threads)
WAIT_SLICE_SECONDS = 0.25  # how often a wait for a part looks at cancellation and the deadline
RANGE_NOT_SATISFIABLE = 416  # a range that starts past the end of the object
_CONTENT_RANGE_TOTAL = re.compile(r"/(\d+)$")


@dataclass(frozen=True)
class S3Object:
    """One object as the server described it (HEAD)."""

    bucket: str
    key: str
    size: int
    last_modified: datetime  # aware, UTC
    etag: str | None
    version_id: str | None
    metadata: dict[str, str] = field(default_factory=dict)  # names lower-cased

    @property
    def name(self) -> str:
        """The key's last part: the file name the object is stored as."""
        return self.key.rsplit("/", 1)[-1]

    @property
    def url(self) -> str:
        return object_url(self.bucket, self.key, self.version_id)


def object_url(bucket: str, key: str, version_id: str | None = None) -> str:
    return f"s3://{bucket}/{key}" + (f"?versionId={version_id}" if version_id else "")


def watchdog(request: FetchRequest, key: str) -> Callable[[], None]:
    """A check that raises when the run is cancelled or the download's time is up."""
    timeout = request.timeout
    deadline = None if timeout is None else time.monotonic() + timeout

    def check() -> None:
        if request.cancelled():
            raise Interrupted()
        if deadline is not None and time.monotonic() > deadline:
            raise ObjectiveMissed(
                f"download of {key} did not finish within {format_duration(timeout)}: stopped"
            )

    return check


class _Stopped(Exception):
    """A part's worker was told to stop: its result is not wanted."""


class ObjectDownload:
    """The bytes of one object, read in order from ranged parts that threads fetch ahead.

    At most PARTS_AHEAD parts are fetched ahead of the one being read: memory is bounded by
    (PARTS_AHEAD + 1) * PART_BYTES whatever the object's size. Chunks are handed over as they
    came from the network, without a copy. A part whose transfer is cut is resumed from the
    byte reached, DOWNLOAD_ATTEMPTS times at most. Only the listed size is read: an object that
    ends before it is truncated (the byte count tells), one that grew is noted in server_size.
    """

    def __init__(
        self,
        source: S3Source,
        found: S3Object,
        check: Callable[[], None],
        progress: Callable[[FetchProgress], None] = lambda progress: None,
    ) -> None:
        self.found = found
        self.bytes_read = 0
        self.server_size: int | None = None  # the size the server's answers gave
        self._source = source
        self._client = source.client()
        self._check = check
        self._progress = progress
        self._etag: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(PART_WORKERS, thread_name_prefix="s3-part")
        self._pending: deque[tuple[Future[list[bytes]], int]] = deque()  # with their length
        self._next_start = 0
        self._requested = False
        self._ended = False
        self._current: deque[bytes] = deque()  # the current part's chunks not yet read

    def __enter__(self) -> ObjectDownload:
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers; a worker stuck in a read ends at its timeout, unwaited for."""
        self._stop.set()
        for future, _ in self._pending:
            future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to size bytes (all that is left when size < 0); b"" at the end."""
        if size < 0:
            return b"".join(iter(lambda: self.read(CHUNK_BYTES), b""))
        while not self._current:
            if not self._next_part():
                return b""
        piece = self._current.popleft()
        if len(piece) > size:  # a chunk is handed over as it came, unless it is too large
            piece, rest = piece[:size], piece[size:]
            self._current.appendleft(rest)
        self.bytes_read += len(piece)
        return piece

    def _next_part(self) -> bool:
        """Make the next part current; False at the end of the object."""
        self._check()
        self._schedule()
        if not self._pending:
            return False
        future, wanted = self._pending.popleft()
        part = self._wait(future)
        length = sum(len(chunk) for chunk in part)
        if length < wanted:  # the object ends inside this part: nothing comes after it
            self._ended = True
            for later, _ in self._pending:
                later.cancel()
            self._pending.clear()
        self._schedule()
        self._current.extend(part)
        size = self.found.size
        self._progress(FetchProgress(min(self.bytes_read + length, size), size))
        return True

    def _schedule(self) -> None:
        """Keep PARTS_AHEAD parts in flight (one request even for an empty object)."""
        size = self.found.size
        while not self._ended and len(self._pending) < PARTS_AHEAD:
            if self._next_start >= size and (size or self._requested):
                return
            start, end = self._next_start, min(size, self._next_start + PART_BYTES)
            self._pending.append((self._executor.submit(self._part, start, end), end - start))
            self._next_start, self._requested = end, True

    def _wait(self, future: Future[list[bytes]]) -> list[bytes]:
        while True:
            try:
                return future.result(timeout=WAIT_SLICE_SECONDS)
            except TimeoutError:
                self._check()

    def _part(self, start: int, end: int) -> list[bytes]:
        """Bytes start..end-1 of the object (fewer when it ends before), as they came from the
        network (no copy): a worker's task."""
        return list(self._chunks(start, end))

    def _chunks(self, start: int, end: int) -> Iterator[bytes]:
        """The range's bytes as they arrive; a cut transfer resumes from the byte reached."""
        import urllib3.exceptions
        from botocore.exceptions import BotoCoreError

        offset, failures = start, 0
        while True:
            body = self._open(offset, end)
            if body is None:
                return
            try:
                while offset < end:
                    if self._stop.is_set():
                        raise _Stopped()
                    chunk = body.read(min(CHUNK_BYTES, end - offset))
                    if not chunk:
                        return  # the object ends here: truncated, told by the count
                    offset += len(chunk)
                    yield chunk
                return
            except (BotoCoreError, urllib3.exceptions.HTTPError, OSError) as error:
                failures += 1
                if failures >= DOWNLOAD_ATTEMPTS:
                    raise SourceError(
                        f"s3: download of {self.found.url} failed after {DOWNLOAD_ATTEMPTS} "
                        f"attempts: {stream_failure(error)}"
                    ) from None
            finally:
                body.close()

    def _open(self, start: int, end: int) -> Any:
        """The answer's body for bytes start..end-1; None when the object ends before start."""
        found = self.found
        arguments: dict[str, Any] = {"Bucket": found.bucket, "Key": found.key}
        if found.version_id:
            arguments["VersionId"] = found.version_id
        if end > start:
            arguments["Range"] = f"bytes={start}-{end - 1}"
        answer = self._source.call(
            "get_object",
            f"download of {found.key}",
            not_found=f"s3: object {found.url} is gone: deleted after it was selected",
            none_for=RANGE_NOT_SATISFIABLE,
            **arguments,
        )
        if answer is None:
            return None
        self._note(answer)
        return answer["Body"]

    def _note(self, answer: dict[str, Any]) -> None:
        """Every answer must come from the same object: its ETag must not change."""
        total = _CONTENT_RANGE_TOTAL.search(answer.get("ContentRange") or "")
        etag = answer.get("ETag")
        with self._lock:
            self.server_size = int(total[1]) if total else int(answer["ContentLength"])
            if self._etag is None:
                self._etag = etag
            elif etag and etag != self._etag:
                raise SourceError(
                    f"s3: object {self.found.url} changed during its download (its ETag "
                    "changed): run again"
                )


def size_check(found: S3Object, download: ObjectDownload) -> Check:
    """The bytes downloaded against the size listed when the object was selected."""
    listed, read = found.size, download.bytes_read
    expected = f"{listed:,} bytes"
    if read < listed:
        return Check.failed(
            "size",
            f"object {found.key} is truncated: {read:,} of {listed:,} bytes",
            expected=expected,
            observed=f"{read:,} bytes",
        )
    now = download.server_size
    if now is not None and now > listed:
        return Check.failed(
            "size",
            f"object {found.key} grew after it was selected: {now:,} bytes, {listed:,} listed",
            expected=expected,
            observed=f"{now:,} bytes",
        )
    return Check.passed("size", expected=expected, observed=f"{read:,} bytes")


def error_code(error: Any) -> tuple[str, int | None]:
    """A ClientError's code (the HTTP status when the answer had no body) and status."""
    response = getattr(error, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = response.get("Error", {}).get("Code") or str(status)
    return str(code), status


def connection_reason(error: BaseException) -> str:
    """Why a connection failed, as the system said it: 'connection refused'."""
    seen: BaseException | None = getattr(error, "kwargs", {}).get("error") or error
    for _ in range(6):
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    return "connection failed"


def stream_failure(error: BaseException) -> str:
    """What cut a transfer, in a few words: the details (byte counts) vary from run to run."""
    from botocore.exceptions import ReadTimeoutError

    if isinstance(error, ReadTimeoutError):
        return f"no data for {READ_TIMEOUT_SECONDS}s"
    return "the connection was cut"


def said(error: BaseException) -> str:
    return one_line(str(error), 200)

"""The one gateway for subprocesses.

Argument tuples only (never a shell), secrets passed through the environment and masked in every
message, a minimal inherited environment, and cooperative cancellation: on Ctrl-C, SIGTERM or a
drill-wide cancel, the child gets SIGINT first (restic removes its lock on SIGINT, not on SIGTERM)
and is killed only if it does not stop in time.

A child's output is untrusted and bounded: lines are read with a length limit, only a tail of
stderr is kept (callbacks still see every line), and stdout that is kept whole has a size limit
beyond which the child is stopped (a hostile repository can make restic print without end).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from restore_tests.errors import CommandFailed, EnvironmentUnusable, Interrupted

log = logging.getLogger(__name__)

# Variables a child may inherit; everything else (cloud credentials included) must be passed
# explicitly by the caller, so that no secret reaches a tool that was not meant to see it.
INHERITED_VARIABLES = (
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
STOP_GRACE_SECONDS = 10.0  # restic 0.18 ignores SIGINT while throttled (--limit-download)
POLL_SECONDS = 0.1
STDERR_TAIL_LINES = 40  # in an error message
KEPT_STDERR_LINES = 400  # kept in Completed.stderr: enough for a Go stack trace and its message
KEPT_STDERR_BYTES = 256 * 1024
LINE_LIMIT_BYTES = 64 * 1024  # a longer line is cut: its rest is read and dropped
CUT_MARK = " [line cut]"
STDOUT_LIMIT_BYTES = 64 * 1024 * 1024  # stdout kept whole (snapshots --json); more is refused
READ_CHUNK_BYTES = 1024 * 1024
MASK = "***"

_cancel = threading.Event()


def request_cancel() -> None:
    """Ask every running and future command of this process to stop (Ctrl-C, SIGTERM)."""
    _cancel.set()


def reset_cancel() -> None:
    _cancel.clear()


def cancel_requested() -> bool:
    return _cancel.is_set()


@dataclass(frozen=True)
class Completed:
    """A finished command: its exit code, its output and how long it took."""

    command: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    gave_up: bool = False  # stopped because a stderr line said waiting was pointless
    stderr_lines_dropped: int = 0  # earlier stderr lines not kept (stderr is their tail)


class TimedOut(CommandFailed):
    """The command ran past its timeout and was stopped."""


class OutputTooLarge(CommandFailed):
    """The command printed more on stdout than is ever kept, and was stopped."""

    def __init__(self, command: str, returncode: int | None, stderr_tail: str, limit: int):
        self.limit_text = _size_text(limit)
        program = command.split(" ", 1)[0]
        reason = f"{program} printed more than {self.limit_text} on stdout: stopped"
        super().__init__(command, returncode, stderr_tail, reason)


class BoundedTail:
    """The last lines of a stream, at most max_lines lines and about max_bytes characters."""

    def __init__(
        self, max_lines: int = KEPT_STDERR_LINES, max_bytes: int = KEPT_STDERR_BYTES
    ) -> None:
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.lines: deque[str] = deque()
        self.size = 0
        self.dropped = 0

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line)
        while len(self.lines) > 1 and (
            len(self.lines) > self.max_lines or self.size > self.max_bytes
        ):
            self.size -= len(self.lines.popleft())
            self.dropped += 1

    def text(self) -> str:
        return "".join(self.lines)


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value (at least 4 characters long) in text by ***."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


def child_environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    environment = {name: os.environ[name] for name in INHERITED_VARIABLES if name in os.environ}
    environment.update(extra or {})
    return environment


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    timeout: float | None = None,
    cwd: str | None = None,
    check: bool = True,
    on_stdout_line: Callable[[str], None] | None = None,
    on_stderr_line: Callable[[str], None] | None = None,
    give_up_when: Callable[[str], bool] | None = None,
    stdout_limit: int = STDOUT_LIMIT_BYTES,
    on_started: Callable[[int], None] | None = None,
) -> Completed:
    """Run argv to completion and return its output.

    With on_stdout_line, stdout is streamed to the callback line by line and not kept (a long
    restore prints a lot); otherwise it is returned whole, up to stdout_limit bytes: beyond it
    the child is stopped and OutputTooLarge raised, whatever check says. Only a tail of stderr
    is kept (its last lines go into errors); on_stderr_line sees every line. Lines longer than
    LINE_LIMIT_BYTES are cut. Raises CommandFailed on a non-zero exit when check is true,
    TimedOut on a timeout, and EnvironmentUnusable when the program does not exist. With
    give_up_when, the child is stopped (SIGINT) as soon as a stderr line makes it return true: a
    tool retrying an error that cannot heal (restic 0.18 retries a refused S3 signature for 15
    minutes). on_started is given the child's process id once it runs (to watch it).
    """
    secret_values = [value for value in secrets if value]
    command = mask(" ".join(argv), secret_values)
    if _cancel.is_set():
        raise Interrupted()
    log.debug("run: %s", command)
    started = time.monotonic()
    process = _start(argv, env, cwd)
    if on_started is not None:
        on_started(process.pid)
    output = _Output(on_stdout_line, on_stderr_line, give_up_when, stdout_limit)
    readers = output.read(process)
    try:
        _wait(process, command, timeout, started, output.stop_now)
    finally:
        for reader in readers:
            reader.join()
    seconds = time.monotonic() - started
    stderr = mask(output.stderr_tail.text(), secret_values)
    log.debug("exit %s after %.2fs: %s", process.returncode, seconds, command)
    if output.too_much.is_set():
        raise OutputTooLarge(command, process.returncode, tail(stderr), stdout_limit)
    completed = Completed(
        command,
        process.returncode,
        output.stdout(),
        stderr,
        seconds,
        output.give_up.is_set(),
        output.stderr_tail.dropped,
    )
    if check and process.returncode != 0:
        raise CommandFailed(command, process.returncode, tail(stderr))
    return completed


class _Output:
    """What is read from one child: stdout kept (bounded) or streamed, a tail of stderr, and
    the events that ask for the child to be stopped."""

    def __init__(
        self,
        on_stdout_line: Callable[[str], None] | None,
        on_stderr_line: Callable[[str], None] | None,
        give_up_when: Callable[[str], bool] | None,
        stdout_limit: int,
    ) -> None:
        self.on_stdout_line, self.on_stderr_line = on_stdout_line, on_stderr_line
        self.give_up_when, self.stdout_limit = give_up_when, stdout_limit
        self.stdout_chunks: list[bytes] = []
        self.stderr_tail = BoundedTail()
        self.give_up, self.too_much, self.stop_now = (threading.Event() for _ in range(3))

    def read(self, process: subprocess.Popen[bytes]) -> list[threading.Thread]:
        if self.on_stdout_line is None:
            limit = self.stdout_limit
            stdout = _chunk_reader(process.stdout, self.stdout_chunks, limit, self.on_overflow)
        else:
            stdout = _line_reader(process.stdout, self.on_stdout_line)
        return [stdout, _line_reader(process.stderr, self.on_error_line)]

    def on_error_line(self, line: str) -> None:
        self.stderr_tail.add(line)
        if self.on_stderr_line is not None:
            self.on_stderr_line(line)
        if self.give_up_when is not None and not self.give_up.is_set() and self.give_up_when(line):
            self.give_up.set()
            self.stop_now.set()

    def on_overflow(self) -> None:
        self.too_much.set()
        self.stop_now.set()

    def stdout(self) -> str:
        return b"".join(self.stdout_chunks).decode("utf-8", errors="replace")


def _start(
    argv: Sequence[str], env: Mapping[str, str] | None, cwd: str | None
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_environment(env),
            cwd=cwd,
            start_new_session=True,  # our signal handling decides what the child receives
        )
    except FileNotFoundError as error:
        raise EnvironmentUnusable(f"{argv[0]}: program not found") from error
    except PermissionError as error:
        raise EnvironmentUnusable(f"{argv[0]}: not executable ({error.strerror})") from error


def spawn_detached(argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """Start argv in its own session and do not wait for it (it outlives this process).

    It gets the minimal environment plus env (the detached reaper needs the variables that chose
    the Docker engine, to remove sandboxes from the same one).
    """
    log.debug("spawn: %s", " ".join(argv))
    try:
        subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=child_environment(env),
            start_new_session=True,
        )
    except OSError as error:
        raise EnvironmentUnusable(f"{argv[0]}: cannot start ({error.strerror})") from error


def _size_text(size: int) -> str:
    mebibyte = 1024 * 1024
    return f"{size // mebibyte} MiB" if size % mebibyte == 0 else f"{size:,} bytes"


def tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    return "".join(deque(text.splitlines(keepends=True), maxlen=lines))


def read_lines(stream: IO[bytes], limit: int = LINE_LIMIT_BYTES) -> Iterator[str]:
    """The stream's lines, each at most limit bytes: the rest of a longer line is dropped and
    the line ends with CUT_MARK."""
    while True:
        raw = stream.readline(limit)
        if not raw:
            return
        if len(raw) >= limit and not raw.endswith(b"\n"):
            _skip_rest_of_line(stream, limit)
            yield raw.decode("utf-8", errors="replace") + CUT_MARK + "\n"
        else:
            yield raw.decode("utf-8", errors="replace")


def _skip_rest_of_line(stream: IO[bytes], limit: int) -> None:
    while True:
        rest = stream.readline(limit)
        if not rest or rest.endswith(b"\n"):
            return


def _line_reader(stream: IO[bytes] | None, callback: Callable[[str], None]) -> threading.Thread:
    def pump() -> None:
        assert stream is not None
        for line in read_lines(stream):
            callback(line)
        stream.close()

    return _started(pump)


def _chunk_reader(
    stream: IO[bytes] | None, keep: list[bytes], limit: int, on_overflow: Callable[[], None]
) -> threading.Thread:
    """Keeps up to limit bytes; past it, calls on_overflow once and drops the rest (still read,
    so that the child is never stuck writing while it is being stopped)."""

    def pump() -> None:
        assert stream is not None
        kept, overflowed = 0, False
        while chunk := stream.read(READ_CHUNK_BYTES):
            if overflowed or kept + len(chunk) > limit:
                if not overflowed:
                    overflowed = True
                    on_overflow()
                continue
            keep.append(chunk)
            kept += len(chunk)
        stream.close()

    return _started(pump)


def _started(pump: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def _wait(
    process: subprocess.Popen[bytes],
    command: str,
    timeout: float | None,
    started: float,
    stop_now: threading.Event,
) -> None:
    """Wait for the child, stopping it cleanly on cancellation, Ctrl-C, timeout or when asked
    (a hopeless retry, too much output)."""
    try:
        while True:
            try:
                process.wait(timeout=POLL_SECONDS)
                return
            except subprocess.TimeoutExpired:
                pass
            if stop_now.is_set():
                stop(process)
                return
            if _cancel.is_set():
                stop(process)
                raise Interrupted()
            if timeout is not None and time.monotonic() - started > timeout:
                stop(process)
                raise TimedOut(command, None, "", f"timed out after {timeout:.0f}s")
    except KeyboardInterrupt:
        _cancel.set()
        stop(process)
        raise Interrupted() from None


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT, a grace period, then SIGKILL to the child's whole process group."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()

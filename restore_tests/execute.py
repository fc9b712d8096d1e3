"""The one gateway for subprocesses.

Argument tuples only (never a shell), secrets passed through the environment and masked in every
message, a minimal inherited environment, and cooperative cancellation: on Ctrl-C, SIGTERM or a
drill-wide cancel, the child gets SIGINT first (restic removes its lock on SIGINT, not on SIGTERM)
and is killed only if it does not stop in time.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
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
STDERR_TAIL_LINES = 40
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
) -> Completed:
    """Run argv to completion and return its output.

    With on_stdout_line, stdout is streamed to the callback line by line and not kept (a long
    restore prints a lot); otherwise it is returned whole. stderr is always kept (its tail goes
    into errors). Raises CommandFailed on a non-zero exit when check is true, on a timeout, and
    EnvironmentUnusable when the program does not exist. With give_up_when, the child is
    stopped (SIGINT) as soon as a stderr line makes it return true: a tool retrying an error that
    cannot heal (restic 0.18 retries a refused S3 signature for 15 minutes).
    """
    secret_values = [value for value in secrets if value]
    command = mask(" ".join(argv), secret_values)
    if _cancel.is_set():
        raise Interrupted()
    log.debug("run: %s", command)
    started = time.monotonic()
    try:
        process = subprocess.Popen(
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
    stdout_lines: list[str] = []
    stderr_lines: list[str] = []
    give_up = threading.Event()

    def on_error_line(line: str) -> None:
        if on_stderr_line is not None:
            on_stderr_line(line)
        if give_up_when is not None and give_up_when(line):
            give_up.set()

    readers = [
        _reader(process.stdout, stdout_lines if on_stdout_line is None else None, on_stdout_line),
        _reader(process.stderr, stderr_lines, on_error_line),
    ]
    try:
        _wait(process, command, timeout, started, give_up)
    finally:
        for reader in readers:
            reader.join()
    seconds = time.monotonic() - started
    stderr = mask("".join(stderr_lines), secret_values)
    completed = Completed(
        command, process.returncode, "".join(stdout_lines), stderr, seconds, give_up.is_set()
    )
    log.debug("exit %s after %.2fs: %s", process.returncode, seconds, command)
    if check and process.returncode != 0:
        raise CommandFailed(command, process.returncode, tail(stderr))
    return completed


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


def tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    return "".join(deque(text.splitlines(keepends=True), maxlen=lines))


def _reader(
    stream: IO[bytes] | None,
    keep: list[str] | None,
    callback: Callable[[str], None] | None,
) -> threading.Thread:
    def pump() -> None:
        assert stream is not None
        for raw in stream:
            line = raw.decode("utf-8", errors="replace")
            if keep is not None:
                keep.append(line)
            if callback is not None:
                callback(line)
        stream.close()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def _wait(
    process: subprocess.Popen[bytes],
    command: str,
    timeout: float | None,
    started: float,
    give_up: threading.Event,
) -> None:
    """Wait for the child, stopping it cleanly on cancellation, Ctrl-C, timeout or give-up."""
    try:
        while True:
            try:
                process.wait(timeout=POLL_SECONDS)
                return
            except subprocess.TimeoutExpired:
                pass
            if give_up.is_set():
                stop(process)
                return
            if _cancel.is_set():
                stop(process)
                raise Interrupted()
            if timeout is not None and time.monotonic() - started > timeout:
                stop(process)
                raise CommandFailed(command, None, "", f"timed out after {timeout:.0f}s")
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

"""restic, driven through the subprocess gateway.

Works with restic 0.14 (Debian bookworm) to 0.18 (Debian trixie). Their outputs and exit codes
differ, and 0.14 exits 0 or 1 for nearly everything, so outcomes are read from what restic says,
not from its exit code alone. Read-only commands run with --no-lock: an interrupted restore can
then never leave a stale lock, and read-only credentials are enough.

What restic says is read as untrusted data by restic_output.py.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from restore_tests import execute
from restore_tests.background import Background
from restore_tests.errors import (
    EnvironmentUnusable,
    HostError,
    ObjectiveMissed,
    RestoreTestsError,
    SourceError,
)
from restore_tests.sources import secrets
from restore_tests.sources.base import FetchProgress
from restore_tests.sources.restic_output import (
    RestoreOutcome,
    RestoreReader,
    ends_with_error_count,
    explain_failure,
    is_hopeless_retry,
    refuse_unreadable_snapshots,
    says_fatal,
)
from restore_tests.sources.restic_progress import JSON_PROGRESS_SINCE, written_bytes
from restore_tests.timing import format_duration

if TYPE_CHECKING:  # the settings model imports this module
    from restore_tests.sources.restic import ResticSettings, SnapshotFilter

AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)
QUERY_TIMEOUT_SECONDS = 600.0
CONNECT_TIMEOUT_SECONDS = 10.0
PROGRESS_FPS = "0.5"
# restore --json --verbose=2 names each file once it is written whole (verbose_status).
NAMES_RESTORED_FILES_SINCE = (0, 17, 0)
_VERSION = re.compile(r"restic (\d+)\.(\d+)\.(\d+)")


# Commands started early by Restic.start_listing (the listing, then restic stats), by everything
# that makes their answer: binary, environment (repository and password), flags and arguments.
# Each answer is used once.
_started_listings: dict[tuple[Any, ...], Background[execute.Completed]] = {}
_started_lock = threading.Lock()


@atexit.register
def _stop_unused_listings() -> None:
    """A listing nobody asked for (the run stopped before selection) leaves no restic behind."""
    with _started_lock:
        unused = list(_started_listings.values())
        _started_listings.clear()
    if unused:
        execute.request_cancel()
        for listing in unused:
            listing.wait()


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: datetime
    hostname: str
    paths: tuple[str, ...]
    tags: tuple[str, ...]
    size_bytes: int | None  # from the snapshot's summary (restic >= 0.17), else unknown

    @property
    def short_id(self) -> str:
        return self.id[:8]


def display_location(repository: str) -> str:
    """The repository as it may be shown: credentials embedded in a URL are removed."""
    return re.sub(r"//[^/]*@", "//", repository)  # userinfo ends at the last @ before a /


class Restic:
    """One restic repository, as seen by one scenario run."""

    def __init__(self, source: ResticSettings, cache_dir: Path | None) -> None:
        self.source = source
        self.location = display_location(source.repository)
        self.cache_dir = cache_dir
        self.binary = self._find_binary()
        self._environment: dict[str, str] | None = None
        self._version: tuple[int, int, int] | None = None
        self._restore_sizes: dict[str, int | None] = {}  # restic stats, asked once per snapshot

    def _find_binary(self) -> str:
        wanted = self.source.restic_binary or os.environ.get("RESTIC_BINARY") or "restic"
        found = shutil.which(wanted)
        if not found:
            raise EnvironmentUnusable(
                f"restic not found: {wanted!r} (install restic, or set RESTIC_BINARY or the "
                "scenario's source.restic_binary)"
            )
        return found

    def version(self) -> tuple[int, int, int]:
        if self._version is None:
            output = execute.run([self.binary, "version"], timeout=30).stdout
            match = _VERSION.search(output)
            if not match:
                raise EnvironmentUnusable(f"{self.binary} is not restic: {output.strip()[:80]}")
            self._version = (int(match[1]), int(match[2]), int(match[3]))
        return self._version

    def version_text(self) -> str:
        return ".".join(map(str, self.version()))

    # -- environment and secrets ----------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """restic's environment: repository, password and passed-through variables only."""
        if self._environment is None:
            source = self.source
            environment = {
                "RESTIC_REPOSITORY": source.repository,
                "RESTIC_PASSWORD": self._password(),
            }
            for name in source.env_from:
                environment[name] = secrets.from_env(name, "source.env_from")
            if source.repository.startswith("s3:"):
                for name in AWS_VARIABLES:
                    if name in os.environ and name not in environment:
                        environment[name] = os.environ[name]
            self._environment = environment
        return self._environment

    def _password(self) -> str:
        source = self.source
        if source.password_env:
            return secrets.from_env(source.password_env, "source.password_env")
        if source.password_file:
            return secrets.from_file(source.password_file, "source.password_file")
        assert source.password_command is not None
        return secrets.from_command(source.password_command, "source.password_command")

    def secret_values(self) -> list[str]:
        environment = self.environment()
        return [value for name, value in environment.items() if name != "RESTIC_REPOSITORY"]

    # -- commands ---------------------------------------------------------------------------

    def _global_flags(self) -> list[str]:
        flags = ["--no-lock"]
        flags += ["--no-cache"] if self.cache_dir is None else ["--cache-dir", str(self.cache_dir)]
        if self.source.limit_download:
            flags += ["--limit-download", str(max(1, self.source.limit_download // 1024))]
        return flags

    def _run(
        self, arguments: list[str], timeout: float | None = QUERY_TIMEOUT_SECONDS, **options: Any
    ) -> execute.Completed:
        try:
            completed = execute.run(
                [self.binary, *self._global_flags(), *arguments],
                env=self.environment(),
                secrets=self.secret_values(),
                timeout=timeout,
                check=False,
                give_up_when=is_hopeless_retry,
                **options,
            )
        except execute.OutputTooLarge as error:
            raise SourceError(
                f"restic {arguments[0]} printed more than {error.limit_text} for "
                f"{self.location}: stopped"
            ) from error
        if completed.returncode != 0 or completed.gave_up or says_fatal(completed.stderr):
            raise self.explain(completed)
        return completed

    def explain(
        self,
        completed: execute.Completed,
        snapshot: Snapshot | None = None,
        staging: Path | None = None,
    ) -> RestoreTestsError:
        """One line saying why restic failed (see explain_failure)."""
        return explain_failure(
            completed.stderr,
            completed.returncode,
            self.location,
            snapshot_id=snapshot.short_id if snapshot else None,
            host_folders=self._host_folders(staging),
        )

    def _host_folders(self, staging: Path | None) -> dict[str, str]:
        """restore-tests' own folders that restic writes to, and how a reason names them."""
        folders = {} if staging is None else {str(staging): "the staging folder"}
        if self.cache_dir is not None:
            folders[str(self.cache_dir.absolute())] = "the cache folder"
        return folders

    def check_reachable(self, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
        """For S3 repositories: does the endpoint answer HTTP at all? Asked before restic runs.

        restic 0.18 retries a refused connection for 14 minutes, and 0.14 waits forever on an
        endpoint that accepts connections but never answers. Any HTTP answer (even 403) counts:
        credentials are restic's to judge. TLS is not verified here, only liveness.
        """
        endpoint = s3_endpoint(self.source.repository)
        if endpoint is None:
            return
        scheme, host, port = endpoint
        connection: http.client.HTTPConnection
        if scheme == "https":
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request("HEAD", "/")
            connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            reason = _socket_reason(error, timeout)
            raise SourceError(
                f"restic: cannot reach the repository {self.location} ({host}:{port}: {reason})"
            ) from error
        finally:
            connection.close()

    def start_listing(self, selector: str | SnapshotFilter, sized: bool = True) -> None:
        """Start the listing that selecting this snapshot will ask for, so that restic derives
        the repository's key while restore-tests is still loading; snapshots() then takes its
        answer instead of starting restic again. sized: the run will ask the snapshot's
        restore size; when its summary does not hold it (restic < 0.17), `restic stats` for
        the snapshot this very listing selects is started as soon as the listing is done."""
        arguments = _listing_arguments(None if isinstance(selector, str) else selector)

        def run() -> execute.Completed:
            completed = self._run(arguments)
            if sized and (isinstance(selector, str) or not selector.random_within):
                self._start_size(completed, selector)
            return completed

        self._start(arguments, run)

    def _start_size(self, listing: execute.Completed, selector: str | SnapshotFilter) -> None:
        try:
            snapshot = self._choose(self._parse_listing(listing), selector)
        except RestoreTestsError:
            return  # selection will say why, in its place
        if snapshot.size_bytes is None:
            arguments = _size_arguments(snapshot.id)
            self._start(arguments, lambda: self._run(arguments))

    def _start(self, arguments: list[str], run: Callable[[], execute.Completed]) -> None:
        key = self._started_key(arguments)
        with _started_lock:
            if key not in _started_listings:
                _started_listings[key] = Background(run, f"restic {arguments[0]}")

    def _started_or_run(self, arguments: list[str]) -> execute.Completed:
        """The answer of a command started early with these arguments, else a new run."""
        with _started_lock:
            started = _started_listings.pop(self._started_key(arguments), None)
        return self._run(arguments) if started is None else started.result()

    def _started_key(self, arguments: list[str]) -> tuple[Any, ...]:
        environment = tuple(sorted(self.environment().items()))
        return (self.binary, environment, *self._global_flags(), *arguments)

    def snapshots(self, selector: SnapshotFilter | None = None) -> list[Snapshot]:
        return self._parse_listing(self._started_or_run(_listing_arguments(selector)))

    def _parse_listing(self, completed: execute.Completed) -> list[Snapshot]:
        refuse_unreadable_snapshots(completed.stderr, self.location)
        output = completed.stdout
        try:
            records = json.loads(output or "[]")
        except json.JSONDecodeError as error:
            raise SourceError(f"restic snapshots printed no JSON: {output[:120]!r}") from error
        return sorted((_snapshot(record) for record in records or []), key=lambda s: s.time)

    def matching(self, selector: SnapshotFilter) -> list[Snapshot]:
        """The snapshots matching a filter, oldest first; SourceError when none does."""
        return self._matching(self.snapshots(selector), selector)

    def _matching(self, found: list[Snapshot], selector: SnapshotFilter) -> list[Snapshot]:
        if not found:
            which = selector.describe() or "any filter"
            raise SourceError(f"no snapshot in {self.location} matches {which}")
        return found

    def select(self, selector: str | SnapshotFilter) -> Snapshot:
        """latest, an id or id prefix, or the newest snapshot matching a filter."""
        filtered = None if isinstance(selector, str) else selector
        return self._choose(self.snapshots(filtered), selector)

    def _choose(self, found: list[Snapshot], selector: str | SnapshotFilter) -> Snapshot:
        """The snapshot a listing (of the filter's matches, oldest first) gives for selector."""
        if not isinstance(selector, str):  # a SnapshotFilter
            return self._matching(found, selector)[-1]
        if not found:
            raise SourceError(f"no snapshot in {self.location}: the repository is empty")
        if selector == "latest":
            return found[-1]
        # Matched here, not by restic: 0.14 exits 0 on an unknown id ("Ignoring ...").
        matches = [snapshot for snapshot in found if snapshot.id.startswith(selector.lower())]
        if not matches:
            raise SourceError(f"no snapshot {selector!r} in {self.location}")
        if len(matches) > 1:
            raise SourceError(
                f"snapshot id {selector!r} is ambiguous in {self.location} "
                f"({len(matches)} snapshots start with it)"
            )
        return matches[0]

    def restore_size(self, snapshot: Snapshot) -> int | None:
        """Bytes a full restore of the snapshot writes (restic stats, restore-size mode, asked
        once: the disk check, the restore's progress and an RTO projection share it)."""
        if snapshot.size_bytes is not None:
            return snapshot.size_bytes
        if snapshot.id not in self._restore_sizes:
            output = self._started_or_run(_size_arguments(snapshot.id)).stdout
            try:
                self._restore_sizes[snapshot.id] = int(json.loads(output)["total_size"])
            except (ValueError, KeyError, TypeError):
                self._restore_sizes[snapshot.id] = None
        return self._restore_sizes[snapshot.id]

    def restore(
        self,
        snapshot: Snapshot,
        target: Path,
        include: list[str],
        verify: bool,
        on_progress: Callable[[FetchProgress], None] | None = None,
        timeout: float | None = None,
        on_restored_file: Callable[[str], None] | None = None,
    ) -> RestoreOutcome:
        """Restore into target; per-file damage is collected, not raised (it is a verdict).

        A restore that restic aborts on damage (a blob missing from the index) raises
        DamagedBackup; a failure of the host (no space left in staging) raises HostError, and
        restic is stopped at its first such error. A restore still running after timeout seconds
        is stopped (ObjectiveMissed): restic 0.14 waits forever on a storage endpoint that stops
        answering. on_progress hears restic's own status (0.16+), else the bytes it wrote so far
        against the full restore's size when it was asked before (restore_size).
        on_restored_file hears each file restic has finished writing (0.17+, `-vv`).
        """
        target = target.absolute()  # restic names it in its errors, which are matched on it
        arguments = ["restore", snapshot.id, "--target", str(target), "--json"]
        for path in include:
            arguments += ["--include", path]
        if verify:
            arguments.append("--verify")
        if on_restored_file is not None and self.version() >= NAMES_RESTORED_FILES_SINCE:
            arguments.append("--verbose=2")
        else:
            on_restored_file = None
        reader = RestoreReader(self._host_folders(target), on_progress, on_restored_file)
        total = None if include else self._restore_sizes.get(snapshot.id, snapshot.size_bytes)
        silent = self.version() < JSON_PROGRESS_SINCE
        try:
            with written_bytes(on_progress if silent else None, total) as on_started:
                completed = execute.run(
                    [self.binary, *self._global_flags(), *arguments],
                    # Off a terminal, 0.18 prints dozens of status lines a second unless told
                    # otherwise.
                    env={**self.environment(), "RESTIC_PROGRESS_FPS": PROGRESS_FPS},
                    secrets=self.secret_values(),
                    timeout=timeout,
                    check=False,
                    on_stdout_line=reader.read,
                    on_stderr_line=reader.read,
                    give_up_when=reader.should_stop,
                    on_started=on_started,
                )
        except execute.TimedOut as error:
            raise ObjectiveMissed(
                f"restore from {self.location} did not finish within "
                f"{format_duration(timeout)}: stopped"
            ) from error
        return self._judge_restore(completed, reader.outcome, snapshot, target)

    def _judge_restore(
        self,
        completed: execute.Completed,
        outcome: RestoreOutcome,
        snapshot: Snapshot,
        target: Path,
    ) -> RestoreOutcome:
        """The outcome, or the error that makes it meaningless. Per-file errors followed by
        restic's count of them ("There were 3 errors") are the verdict's to judge."""
        if outcome.host_problem is not None:
            raise HostError(outcome.host_problem)
        counted = outcome.damaged_count > 0 and ends_with_error_count(completed.stderr)
        if completed.gave_up or (completed.returncode != 0 and not counted):
            raise self.explain(completed, snapshot, target)
        return outcome


def _size_arguments(snapshot_id: str) -> list[str]:
    return ["stats", "--json", "--mode", "restore-size", snapshot_id]


def _listing_arguments(selector: SnapshotFilter | None) -> list[str]:
    arguments = ["snapshots", "--json"]
    if selector is not None:
        for tag in selector.tags:
            arguments += ["--tag", tag]
        if selector.host:
            arguments += ["--host", selector.host]
        if selector.path:
            arguments += ["--path", selector.path]
    return arguments


def _socket_reason(error: BaseException, timeout: float) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return f"no answer within {timeout:.0f}s"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def s3_endpoint(repository: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an s3:http(s)://host[:port]/bucket repository; None for others.

    A bare s3:host/bucket (no scheme) means https.
    """
    if not repository.startswith("s3:"):
        return None
    location = repository.removeprefix("s3:")
    if "://" not in location:
        location = "https://" + location
    parsed = urlsplit(location)
    if not parsed.hostname:
        return None
    scheme = "http" if parsed.scheme == "http" else "https"
    return scheme, parsed.hostname, parsed.port or (80 if scheme == "http" else 443)


def _snapshot(record: dict[str, Any]) -> Snapshot:
    summary = record.get("summary") or {}
    size = summary.get("total_bytes_processed")
    return Snapshot(
        id=record["id"],
        time=parse_time(record["time"]),
        hostname=record.get("hostname", ""),
        paths=tuple(record.get("paths") or ()),
        tags=tuple(record.get("tags") or ()),
        size_bytes=int(size) if size is not None else None,
    )


def parse_time(text: str) -> datetime:
    """restic's RFC 3339 times carry nanoseconds, which datetime does not take."""
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not match:
        raise SourceError(f"restic printed an unreadable snapshot time {text!r}")
    base, fraction, zone = match.groups()
    fraction = (fraction or ".0")[:7]
    return datetime.fromisoformat(f"{base}{fraction}{'+00:00' if zone == 'Z' else zone}")

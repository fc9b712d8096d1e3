"""restic, driven through the subprocess gateway.

Works with restic 0.14 (Debian bookworm) to 0.18 (Debian trixie). Their outputs and exit codes
differ, and 0.14 exits 0 or 1 for nearly everything, so outcomes are read from what restic says,
not from its exit code alone. Read-only commands run with --no-lock: an interrupted restore can
then never leave a stale lock, and read-only credentials are enough.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from restore_tests import execute
from restore_tests.errors import (
    CommandFailed,
    DamagedBackup,
    EnvironmentUnusable,
    ObjectiveMissed,
    SourceError,
)
from restore_tests.scenario import ResticSource, SnapshotFilter
from restore_tests.sources import secrets
from restore_tests.timing import format_duration

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
# Fragments of restic's messages, oldest and newest versions, mapped to one-line reasons.
_WRONG_PASSWORD = ("wrong password", "no key found")
_NO_REPOSITORY = (
    "repository does not exist",
    "is there a repository at the following location",
    "nosuchbucket",
    "specified bucket does not exist",
)
_NO_BUCKET = ("nosuchbucket", "specified bucket does not exist")
_NO_CONFIG = ("unable to open config file: stat /",)
_REFUSED = (
    "signaturedoesnotmatch",
    "signature we calculated does not match",
    "invalidaccesskeyid",
    "access key id you provided does not exist",
    "access denied",
    "forbidden",
)
_UNREACHABLE = (
    "connection refused",
    "no such host",
    "i/o timeout",
    "network is unreachable",
    "no route to host",
    "connection reset",
    "context deadline exceeded",
)
_LOCKED = ("already locked", "repository is locked")
_DAMAGE = (
    "ciphertext verification failed",
    "checksum mismatch",
    "invalid data returned",
    "unexpected content",
    "invalid file size",
    "no such file or directory",
    "not found",
    "load(<data/",
    "is damaged",
    "decrypting blob",
)
_IGNORING = re.compile(r"ignoring error for (/.*?): (.*)$")
_VERIFY_PROBLEM = re.compile(r"(?:Unexpected content in|Invalid file size for) (/.*?)(?::|$)")
_VERSION = re.compile(r"restic (\d+)\.(\d+)\.(\d+)")


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


@dataclass
class RestoreOutcome:
    """What restic said while restoring: the paths it could not restore, and why."""

    damaged: dict[str, str] = field(default_factory=dict)
    files_restored: int | None = None
    bytes_restored: int | None = None


def display_location(repository: str) -> str:
    """The repository as it may be shown: credentials embedded in a URL are removed."""
    return re.sub(r"//[^/]*@", "//", repository)  # userinfo ends at the last @ before a /


class Restic:
    """One restic repository, as seen by one scenario run."""

    def __init__(self, source: ResticSource, cache_dir: Path | None) -> None:
        self.source = source
        self.location = display_location(source.repository)
        self.cache_dir = cache_dir
        self.binary = self._find_binary()
        self._environment: dict[str, str] | None = None
        self._version: tuple[int, int, int] | None = None

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
        completed = execute.run(
            [self.binary, *self._global_flags(), *arguments],
            env=self.environment(),
            secrets=self.secret_values(),
            timeout=timeout,
            check=False,
            give_up_when=is_hopeless_retry,
            **options,
        )
        if completed.returncode != 0 or completed.gave_up or "Fatal:" in completed.stderr:
            raise self.explain(completed)
        return completed

    def explain(self, completed: execute.Completed) -> SourceError | DamagedBackup:
        """One line saying why restic failed, from its exit code and its words.

        Credentials and reachability come before "no repository": restic adds "Is there a
        repository at the following location?" to every failure to open the config file.
        """
        text = completed.stderr.lower()
        code = completed.returncode
        location = self.location
        if code == 12 or _mentions(text, _WRONG_PASSWORD):
            return SourceError(f"restic: wrong password for repository {location}")
        if _mentions(text, _REFUSED):
            return SourceError(f"restic: the S3 server refused the credentials for {location}")
        if _mentions(text, _UNREACHABLE):
            reason = _first_line_with(completed.stderr, _UNREACHABLE)
            return SourceError(f"restic: cannot reach the repository {location} ({reason})")
        if code == 11 or _mentions(text, _LOCKED):
            return SourceError(
                f"restic: repository {location} is locked by another process "
                "(restic unlock removes stale locks)"
            )
        if code == 10 or _mentions(text, _NO_REPOSITORY) or _mentions(text, _NO_CONFIG):
            return SourceError(f"restic: no repository at {location}")
        if _mentions(text, _DAMAGE):
            fatal = _last_fatal(completed.stderr)
            return DamagedBackup(f"restic: the repository {location} is damaged: {fatal}")
        return SourceError(f"restic failed on {location}: {_last_fatal(completed.stderr)}")

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

    def snapshots(self, selector: SnapshotFilter | None = None) -> list[Snapshot]:
        arguments = ["snapshots", "--json"]
        if selector is not None:
            for tag in selector.tags:
                arguments += ["--tag", tag]
            if selector.host:
                arguments += ["--host", selector.host]
            if selector.path:
                arguments += ["--path", selector.path]
        output = self._run(arguments).stdout
        try:
            records = json.loads(output or "[]")
        except json.JSONDecodeError as error:
            raise SourceError(f"restic snapshots printed no JSON: {output[:120]!r}") from error
        return sorted((_snapshot(record) for record in records or []), key=lambda s: s.time)

    def select(self, selector: str | SnapshotFilter) -> Snapshot:
        """latest, an id or id prefix, or the newest snapshot matching a filter."""
        if isinstance(selector, SnapshotFilter):
            found = self.snapshots(selector)
            if not found:
                raise SourceError(f"no snapshot in {self.location} matches {_describe(selector)}")
            return found[-1]
        found = self.snapshots()
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
        """Bytes a full restore of the snapshot writes (restic stats, restore-size mode)."""
        if snapshot.size_bytes is not None:
            return snapshot.size_bytes
        output = self._run(["stats", "--json", "--mode", "restore-size", snapshot.id]).stdout
        try:
            return int(json.loads(output)["total_size"])
        except (ValueError, KeyError, TypeError):
            return None

    def restore(
        self,
        snapshot: Snapshot,
        target: Path,
        include: list[str],
        verify: bool,
        on_progress: Callable[[float], None] | None = None,
        timeout: float | None = None,
    ) -> RestoreOutcome:
        """Restore into target; per-file damage is collected, not raised (it is a verdict).

        A restore still running after timeout seconds is stopped (ObjectiveMissed): restic 0.14
        waits forever on a storage endpoint that stops answering.
        """
        arguments = ["restore", snapshot.id, "--target", str(target), "--json"]
        for path in include:
            arguments += ["--include", path]
        if verify:
            arguments.append("--verify")
        outcome = RestoreOutcome()

        def on_line(line: str) -> None:
            _read_restore_line(line, outcome, on_progress)

        try:
            completed = execute.run(
                [self.binary, *self._global_flags(), *arguments],
                # Off a terminal, 0.18 prints dozens of status lines a second unless told otherwise.
                env={**self.environment(), "RESTIC_PROGRESS_FPS": PROGRESS_FPS},
                secrets=self.secret_values(),
                timeout=timeout,
                check=False,
                on_stdout_line=on_line,
                on_stderr_line=on_line,
                give_up_when=is_hopeless_retry,
            )
        except CommandFailed as error:
            if error.returncode is not None:
                raise
            raise ObjectiveMissed(
                f"restore from {self.location} did not finish within "
                f"{format_duration(timeout)}: stopped"
            ) from error
        if completed.gave_up or (completed.returncode != 0 and not outcome.damaged):
            raise self.explain(completed)
        return outcome


def is_hopeless_retry(line: str) -> bool:
    """A retry notice for an error that retrying cannot heal (wrong credentials, no bucket,
    nothing listening): restic 0.18 would retry it for 15 minutes."""
    lowered = line.lower()
    return "retrying" in lowered and _mentions(lowered, _REFUSED + _UNREACHABLE + _NO_BUCKET)


def _mentions(text: str, fragments: tuple[str, ...]) -> bool:
    return any(fragment in text for fragment in fragments)


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


def _read_restore_line(
    line: str, outcome: RestoreOutcome, on_progress: Callable[[float], None] | None
) -> None:
    text = line.strip()
    if text.startswith("{"):
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            return
        kind = message.get("message_type")
        if kind == "status" and on_progress is not None:
            on_progress(float(message.get("percent_done") or 0.0))
        elif kind == "error":
            item = message.get("item") or ""
            reason = (message.get("error") or {}).get("message", "error")
            outcome.damaged.setdefault(item or "(repository)", reason)
        elif kind == "summary":
            outcome.files_restored = message.get("files_restored", outcome.files_restored)
            outcome.bytes_restored = message.get("bytes_restored", outcome.bytes_restored)
        return
    match = _IGNORING.search(text) or _VERIFY_PROBLEM.search(text)
    if match:
        outcome.damaged.setdefault(
            match[1],
            match.groups()[-1] if match.lastindex == 2 else "content differs from the repository",
        )


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


def _describe(selector: SnapshotFilter) -> str:
    parts = [f"tags {','.join(selector.tags)}"] if selector.tags else []
    parts += [f"host {selector.host}"] if selector.host else []
    parts += [f"path {selector.path}"] if selector.path else []
    return ", ".join(parts) or "any filter"


def _last_fatal(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith("Fatal:")]
    return (fatal or lines or ["no output"])[-1].removeprefix("Fatal: ")


def _first_line_with(stderr: str, fragments: tuple[str, ...]) -> str:
    for line in stderr.splitlines():
        if any(fragment in line.lower() for fragment in fragments):
            return line.strip()[-160:]
    return ""

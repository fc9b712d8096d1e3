"""restic repositories as a source: the scenario's settings, and the source's steps.

The restic command line itself is driven by restic_cli.py and its words read by
restic_output.py; this module turns a snapshot into a restore point, and a restore into the
source's own checks (restic's per-file errors, restic restore --verify).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from restore_tests.model import Size, SnapshotPath, StrictModel, VariableName
from restore_tests.results import Check, name_list
from restore_tests.sources.base import (
    SNAPSHOT_TIME,
    Fetched,
    FetchRequest,
    RestorePoint,
    Source,
    SourceSettings,
)
from restore_tests.sources.restic_cli import Restic, Snapshot
from restore_tests.sources.restic_output import RestoreOutcome

# restic repository locations that are not local paths (everything else is a local path).
REMOTE_REPOSITORY = re.compile(r"^(s3|sftp|rest|b2|azure|gs|swift|rclone):")


class SnapshotFilter(StrictModel):
    """Pick the newest snapshot that matches every given filter."""

    tags: list[str] = Field(
        default_factory=list, description="Snapshot has all these tags.", examples=[["nightly"]]
    )
    host: str | None = Field(
        None, description="Snapshot was taken on this host.", examples=["fs01"]
    )
    path: str | None = Field(
        None, description="Snapshot includes this backed-up path.", examples=["/srv/share"]
    )


def _snapshot_branch(value: Any) -> str:
    return "filter" if isinstance(value, dict) else "id"


SnapshotSelector = Annotated[
    Annotated[str, Tag("id")] | Annotated[SnapshotFilter, Tag("filter")],
    Discriminator(_snapshot_branch),
]


class ResticSettings(SourceSettings):
    """A restic repository on local disk or S3-compatible storage."""

    type: Literal["restic"]
    repository: str = Field(
        description="Repository location: a local path (relative to the scenario file's folder) "
        "or s3:http(s)://host[:port]/bucket/path.",
        examples=["/srv/restic/share", "s3:https://s3.example.net/acme-backups/fileshare"],
    )
    password_env: VariableName | None = Field(
        None,
        description="Name of the environment variable holding the repository password.",
        examples=["SHARE_RESTIC_PASSWORD"],
    )
    password_file: str | None = Field(
        None,
        description="File whose first line is the repository password (relative to the "
        "scenario file's folder).",
        examples=["/etc/restore-tests/share.pass"],
    )
    password_command: list[str] | None = Field(
        None,
        description="Program (argv list) that prints the password on stdout.",
        examples=[["pass", "show", "backups/share"]],
    )
    env_from: list[VariableName] = Field(
        default_factory=list,
        description="Environment variables passed to restic only (S3 "
        "credentials, for instance); never stored. For s3: repositories the standard AWS "
        "variables are passed when set, without being listed.",
        examples=[["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]],
    )
    snapshot: SnapshotSelector = Field(
        "latest",
        description="'latest', a snapshot id or id prefix, or a filter "
        "{tags, host, path} (the newest match).",
        examples=["latest", "4f2c1a9e", {"tags": ["nightly"], "host": "fs01"}],
    )
    include: list[SnapshotPath] = Field(
        default_factory=list,
        description="Restore only these paths of the snapshot (a sample), written as in the "
        "snapshot, starting with /; `..` is not allowed.",
        examples=[["/data/compta"]],
    )
    path: SnapshotPath | None = Field(
        None,
        description="Restore only this file or folder of the snapshot: what the kind reads "
        "(a database dump, a disk image), written as in the snapshot, starting with /.",
        examples=["/var/backups/billing.dump"],
    )
    limit_download: Size | None = Field(
        None,
        description="Cap restic's download rate (bytes per second), so that a drill does not "
        "saturate the link to production storage.",
        examples=["50m"],
    )
    restic_binary: str | None = Field(
        None,
        description="restic program to use (else $RESTIC_BINARY, else restic on PATH).",
        examples=["/usr/local/bin/restic-0.18"],
    )
    verify: bool = Field(
        False,
        description="Also run restic restore --verify: restic re-reads every restored file "
        "against the repository (a proof only when the restore wrote at least one byte).",
    )

    @model_validator(mode="after")
    def _one_password_reference(self) -> ResticSettings:
        given = [
            name
            for name in ("password_env", "password_file", "password_command")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of password_env, password_file, password_command"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.password_command is not None and not self.password_command:
            raise ValueError("password_command needs a program")
        if self.path is not None and self.include:
            raise ValueError("give path (one file or folder the kind reads) or include, not both")
        return self

    @property
    def paths(self) -> list[str]:
        """The snapshot paths to restore; empty for the whole snapshot."""
        return [self.path] if self.path is not None else list(self.include)

    @property
    def is_local(self) -> bool:
        return not REMOTE_REPOSITORY.match(self.repository)

    def resolved(self, folder: Path) -> ResticSettings:
        """Relative local paths (repository, password file, restic binary) resolve against the
        scenario file's folder, not the current directory."""
        changes: dict[str, Any] = {}
        if self.is_local:
            prefix = "local:" if self.repository.startswith("local:") else ""
            location = Path(self.repository.removeprefix(prefix)).expanduser()
            changes["repository"] = prefix + os.path.normpath(folder / location)
        if self.password_file:
            changes["password_file"] = os.path.normpath(
                folder / Path(self.password_file).expanduser()
            )
        if self.restic_binary and "/" in self.restic_binary:
            changes["restic_binary"] = os.path.normpath(
                folder / Path(self.restic_binary).expanduser()
            )
        return self.model_copy(update=changes) if changes else self


class ResticSource(Source):
    """A restic repository on local disk or S3-compatible storage."""

    name: ClassVar[str] = "restic"
    settings_model: ClassVar[type[SourceSettings]] = ResticSettings

    def __init__(self, settings: ResticSettings, scratch: Path, no_cache: bool = False) -> None:
        self.settings = settings
        # A warm cache hides a damaged index: local repositories are read without one, remote
        # ones with a fresh one per run.
        cache = None if no_cache or settings.is_local else scratch / "cache"
        self.restic = Restic(settings, cache)
        self.snapshot: Snapshot | None = None

    @property
    def location(self) -> str:
        return self.restic.location

    def version(self) -> str | None:
        return self.restic.version_text()

    def preflight(self) -> None:
        self.restic.environment()  # resolve the password now: a missing one is a preflight error
        self.restic.check_reachable()

    def select(self) -> RestorePoint:
        snapshot = self.snapshot = self.restic.select(self.settings.snapshot)
        return RestorePoint(
            id=snapshot.id,
            short_id=snapshot.short_id,
            time=snapshot.time,
            time_basis=SNAPSHOT_TIME,
            size_bytes=snapshot.size_bytes,
            description=f"snapshot {snapshot.short_id} ({snapshot.time:%Y-%m-%d %H:%M} UTC)",
            label=f"snapshot {snapshot.short_id}",
        )

    def space_needed(self, point: RestorePoint) -> int | None:
        """A full restore's size (restic stats on 0.14); a subset's is not known beforehand."""
        if self.settings.paths:
            return None
        return self.restic.restore_size(self._selected(point))

    def fetch(self, point: RestorePoint, request: FetchRequest) -> Fetched:
        snapshot = self._selected(point)
        include = self.settings.paths
        outcome = self.restic.restore(
            snapshot,
            request.target,
            include,
            self.settings.verify,
            request.progress,
            timeout=request.timeout,
        )
        checks = [restore_errors_check(outcome, snapshot)]
        if self.settings.verify and not outcome.damaged_count:
            checks.append(
                Check.passed(
                    "restic --verify",
                    proves_data=True,
                    observed="restic re-read every restored file: it matches the repository",
                )
            )
        if self.settings.path is not None:
            empty = f"path {self.settings.path} is not in the snapshot"
        else:
            empty = f"include {', '.join(include)} matched nothing" if include else ""
        return Fetched(request.target, checks, empty_reason=empty)

    def _selected(self, point: RestorePoint) -> Snapshot:
        assert self.snapshot is not None and self.snapshot.id == point.id, "select() first"
        return self.snapshot


def restore_errors_check(outcome: RestoreOutcome, snapshot: Snapshot) -> Check:
    """restic's own word on the restore: files it could not restore are a failure."""
    if not outcome.damaged:
        return Check.passed("restic restore", observed="no errors")
    paths = sorted(outcome.damaged)  # the first few restic named
    count = max(outcome.damaged_count, len(paths))
    counted = f"{count:,}" if outcome.damaged_count_exact else f"at least {count:,}"
    return Check.failed(
        "restic restore",
        f"restic could not restore {counted} file{'s' if count != 1 else ''} "
        f"(damaged data): {name_list(paths, total=count)} (snapshot {snapshot.short_id})",
        expected="no errors",
        observed=f"{counted} damaged",
        detail=f"first error: {outcome.damaged[paths[0]]}",
    )

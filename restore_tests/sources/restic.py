"""restic repositories as a source: the scenario's settings, and the source's steps.

The restic command line itself is driven by restic_cli.py and its words read by
restic_output.py; this module turns a snapshot into a restore point, and a restore into the
source's own checks (restic's per-file errors, restic restore --verify).
"""

from __future__ import annotations

import os
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import Discriminator, Field, Tag, model_validator

from restore_tests.errors import RestoreTestsError, SourceError
from restore_tests.model import Duration, Size, SnapshotPath, StrictModel, VariableName
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
from restore_tests.timing import format_duration

# restic repository locations that are not local paths (everything else is a local path).
REMOTE_REPOSITORY = re.compile(r"^(s3|sftp|rest|b2|azure|gs|swift|rclone):")
# Seeds the draw of `random_within:`, so that a drill (or a test) can be replayed.
SEED_VARIABLE = "RESTORE_TESTS_SEED"


class SnapshotFilter(StrictModel):
    """Pick the newest snapshot that matches every given filter (or, with random_within, one
    at random among the recent matches)."""

    tags: list[str] = Field(
        default_factory=list, description="Snapshot has all these tags.", examples=[["nightly"]]
    )
    host: str | None = Field(
        None, description="Snapshot was taken on this host.", examples=["fs01"]
    )
    path: str | None = Field(
        None, description="Snapshot includes this backed-up path.", examples=["/srv/share"]
    )
    random_within: Duration | None = Field(
        None,
        description="Draw a snapshot at random among the matches taken at most this long "
        "before the drill, so that older restore points get drilled too. The RPO is still "
        "judged on the newest match; no match within the window is an ERROR. Set "
        f"{SEED_VARIABLE} to make the draw repeatable.",
        examples=["30d"],
    )

    def describe(self) -> str:
        """'tags nightly, host fs01' as a reason names the filter; empty for no filter."""
        parts = [f"tags {','.join(self.tags)}"] if self.tags else []
        parts += [f"host {self.host}"] if self.host else []
        parts += [f"path {self.path}"] if self.path else []
        return ", ".join(parts)


class Drawn(NamedTuple):
    snapshot: Snapshot
    among: int  # how many snapshots were within the window


def draw_snapshot(
    snapshots: list[Snapshot], within_seconds: float, now: datetime, chooser: random.Random
) -> Drawn | None:
    """One snapshot at random among those taken at most within_seconds before now (one dated
    after now, by a skewed clock, is within); None when no snapshot is. The candidates are
    ordered by time and id, so a seeded chooser draws the same one whatever restic's order."""
    earliest = now - timedelta(seconds=within_seconds)
    candidates = sorted(
        (snapshot for snapshot in snapshots if snapshot.time >= earliest),
        key=lambda snapshot: (snapshot.time, snapshot.id),
    )
    return Drawn(chooser.choice(candidates), len(candidates)) if candidates else None


def seeded_random() -> random.Random:
    """Random draws, repeatable when RESTORE_TESTS_SEED is set (a test, a replayed drill)."""
    return random.Random(os.environ.get(SEED_VARIABLE))


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
        "{tags, host, path} (the newest match; with random_within, a random recent match).",
        examples=[
            "latest",
            "4f2c1a9e",
            {"tags": ["nightly"], "host": "fs01"},
            {"tags": ["nightly"], "random_within": "30d"},
        ],
    )
    include: list[SnapshotPath] = Field(
        default_factory=list,
        description="Restore only these paths of the snapshot (a sample), written as in the "
        "snapshot, starting with /; `..` is not allowed. The result keeps the throughput and "
        "the full restore's RTO projected from the snapshot's total size (see "
        "objectives.rto_applies_to).",
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
        self.chooser = seeded_random()  # draws random_within: snapshots
        self.drawn: Check | None = None  # says which snapshot was drawn, and the RPO's basis

    @property
    def location(self) -> str:
        return self.restic.location

    @classmethod
    def prepare(cls, settings: ResticSettings) -> None:
        """A local repository's listing starts at once. Not a remote one, which preflight
        first checks reachable (restic 0.18 retries a dead endpoint for 14 minutes), nor with a
        password command, which would then run twice."""
        if not settings.is_local or settings.password_command is not None:
            return
        try:
            # a path: restore asks no size; a full restore or include: does
            Restic(settings, None).start_listing(settings.snapshot, sized=settings.path is None)
        except RestoreTestsError:
            return  # preflight says what is wrong, in its place

    def version(self) -> str | None:
        return self.restic.version_text()

    def preflight(self) -> None:
        self.restic.environment()  # resolve the password now: a missing one is a preflight error
        self.restic.check_reachable()

    def select(self) -> RestorePoint:
        selector = self.settings.snapshot
        if isinstance(selector, SnapshotFilter) and selector.random_within is not None:
            return self._draw(selector, selector.random_within)
        self.snapshot = self.restic.select(selector)
        return self._point(self.snapshot)

    def _draw(self, selector: SnapshotFilter, within: float) -> RestorePoint:
        """A random match taken within the window; the RPO is judged on the newest match."""
        matching = self.restic.matching(selector)
        newest, now = matching[-1], datetime.now(UTC)
        drawn = draw_snapshot(matching, within, now, self.chooser)
        window = format_duration(within)
        if drawn is None:
            age = format_duration(max((now - newest.time).total_seconds(), 0.0))
            matching_text = f" matching {selector.describe()}" if selector.describe() else ""
            raise SourceError(
                f"no snapshot in {self.location}{matching_text} was taken within {window}: "
                f"the newest, {newest.short_id}, is {age} old"
            )
        snapshot = self.snapshot = drawn.snapshot
        older = snapshot.id != newest.id
        basis = f"the newest, {_shown(newest)}" if older else "it, the newest"
        self.drawn = Check.passed(
            "random snapshot",
            observed=f"{_shown(snapshot)} drawn at random among {drawn.among} snapshots taken "
            f"within {window}; the RPO is judged on {basis}",
        )
        return self._point(
            snapshot, f", drawn at random within {window}", newest if older else None
        )

    def _point(
        self, snapshot: Snapshot, drawn: str = "", newest: Snapshot | None = None
    ) -> RestorePoint:
        """The snapshot as a restore point; for a subset (include:) with the full size, the
        basis of the RTO projection (restic stats on 0.14: one call, only for a subset)."""
        include = bool(self.settings.include)
        return RestorePoint(
            id=snapshot.id,
            short_id=snapshot.short_id,
            time=snapshot.time,
            time_basis=SNAPSHOT_TIME,
            size_bytes=snapshot.size_bytes,
            description=_shown(snapshot, drawn),
            label=f"snapshot {snapshot.short_id}",
            partial=include,
            full_bytes=self.restic.restore_size(snapshot) if include else None,
            newest_time=None if newest is None else newest.time,
        )

    def space_needed(self, point: RestorePoint) -> int | None:
        """A full restore's size (restic stats on 0.14); a subset's is not known beforehand
        (the point's full_bytes is the whole snapshot's, not what the subset writes)."""
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
            on_restored_file=request.on_restored_file,
        )
        checks = [restore_errors_check(outcome, snapshot)]
        if self.drawn is not None:
            checks.insert(0, self.drawn)
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


def _shown(snapshot: Snapshot, note: str = "") -> str:
    """'snapshot 1a2b3c4d (2026-11-23 03:00 UTC)', a note added inside the brackets."""
    return f"snapshot {snapshot.short_id} ({snapshot.time:%Y-%m-%d %H:%M} UTC{note})"


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

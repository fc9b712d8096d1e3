"""The source interface: where a backup comes from (restic, local files, S3 objects).

The pipeline knows only this: a source checks it can be reached, selects a restore point (what
will be restored, from when, how big), and fetches it into a private staging folder, returning
its own checks (restic's per-file errors, a digest comparison). A source never asks which kind
will read the data; a kind never asks which source fed it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from restore_tests.model import StrictModel
from restore_tests.results import Check

# What a restore point's time is based on: the RPO's basis in the history.
SNAPSHOT_TIME = "snapshot_time"
OBJECT_LAST_MODIFIED = "object_last_modified"
FILE_MTIME = "file_mtime"


class SourceSettings(StrictModel):
    """The scenario's `source:` section of one source type (each source defines its own)."""

    type: str

    def resolved(self, folder: Path) -> SourceSettings:
        """A copy with relative local paths resolved against the scenario file's folder."""
        return self


@dataclass(frozen=True)
class RestorePoint:
    """What one run restores: a snapshot, an object version, a file."""

    id: str  # restic snapshot id; s3 key (with ?versionId=); local file path
    short_id: str  # as shown in a reason: 1a2b3c4d, a key, a file name
    time: datetime | None  # when the backup was taken (aware, UTC); None when unknown
    time_basis: str  # SNAPSHOT_TIME, OBJECT_LAST_MODIFIED or FILE_MTIME
    size_bytes: int | None = None  # bytes the fetch will write to disk, when known
    description: str = ""  # for progress: "snapshot 1a2b3c4d (2026-11-23 03:00 UTC)"
    label: str = ""  # in a reason: "snapshot 1a2b3c4d", "object nightly/erp.tar.zst"
    # A fetch of only part of the point (restic include:) is timed and its RTO projected to
    # the whole point, whose size is full_bytes (None when unknown).
    partial: bool = False
    full_bytes: int | None = None
    # When an older point was drawn (restic random_within:), the time of the newest one that
    # could have been restored: the RPO is judged on it, not on this point's own age.
    newest_time: datetime | None = None

    @property
    def shown(self) -> str:
        """How a reason names the restore point."""
        return self.label or self.short_id

    @property
    def recovery_time(self) -> datetime | None:
        """The time the RPO is judged on: the newest restore point's (see newest_time)."""
        return self.newest_time or self.time


@dataclass(frozen=True)
class FetchProgress:
    """How far a fetch is: the bytes brought in so far, and in all when that is known."""

    done_bytes: int
    total_bytes: int | None = None


@dataclass(frozen=True)
class FetchRequest:
    """How to fetch: into which folder, for how long, watching for cancellation."""

    target: Path  # an empty private folder: the restored data goes below it
    scratch: Path  # a private folder for the source's own files (cache, downloads)
    timeout: float | None = None  # stop after this long: ObjectiveMissed (a FAIL)
    progress: Callable[[FetchProgress], None] = lambda progress: None
    cancelled: Callable[[], bool] = lambda: False  # Ctrl-C/SIGTERM: raise Interrupted
    # Told each snapshot path whose file the source has finished writing, when the source can
    # tell (restic 0.17+), so that it is hashed while the rest is fetched (prehash.py).
    on_restored_file: Callable[[str], None] | None = None


@dataclass
class Fetched:
    """The fetched data and the source's own word on it."""

    root: Path  # the folder holding the restored data (request.target, or read in place)
    checks: list[Check] = field(default_factory=list)
    empty_reason: str = ""  # what it means when nothing was fetched ("include X matched nothing")


class Source(ABC):
    """One place backups come from. Constructed per scenario run, before preflight."""

    name: ClassVar[str]  # the scenario's source.type
    settings_model: ClassVar[type[SourceSettings]]

    @abstractmethod
    def __init__(self, settings: Any, scratch: Path, no_cache: bool = False) -> None:
        """settings: this source's settings model; scratch: a private folder for the source's
        own files (a cache, a download); no_cache: the user asked for no cache (--no-cache)."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the backups are, as it may be shown (no credentials)."""

    @classmethod
    def prepare(cls, settings: Any) -> None:
        """Start, in the background, what selection will ask for and can safely begin before
        the run (a local restic repository's listing, while the tool still loads); nothing by
        default. Never raises: preflight reports what is wrong."""
        return None

    def version(self) -> str | None:
        """The version of the tool that reads the source (restic 0.18.0), for the history."""
        return None

    @abstractmethod
    def preflight(self) -> None:
        """Tools present, credentials resolvable, the source reachable; raise otherwise
        (SourceError, EnvironmentUnusable) with a one-line reason."""

    @abstractmethod
    def select(self) -> RestorePoint:
        """The restore point the scenario asks for; SourceError when there is none."""

    def space_needed(self, point: RestorePoint) -> int | None:
        """Bytes the fetch will write to staging, when knowable (the disk check); None when
        it cannot be known or nothing is written (data read in place)."""
        return point.size_bytes

    @abstractmethod
    def fetch(self, point: RestorePoint, request: FetchRequest) -> Fetched:
        """Bring the restore point into request.target (or point at it in place).

        Damage found while fetching is reported in the returned checks (a FAIL), not raised;
        a failure of the host raises HostError; a source that cannot be read raises SourceError.
        """

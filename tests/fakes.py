"""A fake source, a fake runner and fake sandboxes: the pipeline tested in-process, without
restic or Docker, through the same interfaces the real ones implement.

They are registered only inside a test (the `fake_registries` fixture), never in the product.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from restore_tests.errors import SourceError
from restore_tests.model import StrictModel
from restore_tests.results import Check
from restore_tests.sandbox import SandboxSpec
from restore_tests.sources.base import (
    FILE_MTIME,
    Fetched,
    FetchRequest,
    RestorePoint,
    Source,
    SourceSettings,
)
from runners.base import RunContext, Runner, SandboxNeeds


class FakeSettings(SourceSettings):
    """A source that writes the files it is given."""

    type: Literal["fake"]
    files: dict[str, str] = Field(default_factory=dict, description="Path -> content.")
    age_hours: float = Field(1.0, description="How old the restore point is.")
    unreachable: bool = False
    damaged: bool = False  # its own check fails
    space_seconds: float = 0.0  # how long the disk check takes (waiting for removals)
    select_seconds: float = 0.0  # how long selection takes (a restic listing)
    select_error: str = ""  # selection fails with this SourceError
    fetch_seconds: float = 0.0  # how long the fetch takes at least
    partial: bool = False  # the files are a subset of the restore point (an include:)
    full_bytes: int | None = None  # the whole restore point's size, when partial


class FakeSource(Source):
    name: ClassVar[str] = "fake"
    settings_model: ClassVar[type[SourceSettings]] = FakeSettings

    def __init__(self, settings: FakeSettings, scratch: Path, no_cache: bool = False) -> None:
        self.settings = settings

    @property
    def location(self) -> str:
        return "fake:here"

    def preflight(self) -> None:
        if self.settings.unreachable:
            raise SourceError("fake: cannot reach fake:here (the test said so)")

    def select(self) -> RestorePoint:
        time.sleep(self.settings.select_seconds)
        if self.settings.select_error:
            raise SourceError(self.settings.select_error)
        return RestorePoint(
            id="fake-1",
            short_id="fake-1",
            time=datetime.now(UTC) - timedelta(hours=self.settings.age_hours),
            time_basis=FILE_MTIME,
            size_bytes=sum(len(content) for content in self.settings.files.values()),
            label="fake point fake-1",
            partial=self.settings.partial,
            full_bytes=self.settings.full_bytes,
        )

    def space_needed(self, point: RestorePoint) -> int | None:
        time.sleep(self.settings.space_seconds)
        return point.size_bytes

    def fetch(self, point: RestorePoint, request: FetchRequest) -> Fetched:
        time.sleep(self.settings.fetch_seconds)
        for name, content in self.settings.files.items():
            path = request.target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        if self.settings.damaged:
            return Fetched(request.target, [Check.failed("fake digest", "fake digest differs")])
        return Fetched(request.target, [Check.passed("fake digest", proves_data=True)])


class FakeVerify(StrictModel):
    expect_files: int = 0


class FakeRunner(Runner):
    """A kind that counts the restored files and needs a ready sandbox."""

    kind: ClassVar[str] = "fake-kind"
    verify_model = FakeVerify

    def sandbox_needs(self, scenario: Any, point: Any) -> SandboxNeeds:
        return SandboxNeeds(
            user="999:999",
            environment={"FAKE": "1"},
            start_command=["start"],
            ready_command=["ready"],
        )

    def load(self, context: RunContext) -> list[Check]:
        return [Check.passed("fake load")]

    def verify(self, context: RunContext) -> list[Check]:
        expected = context.verify.expect_files
        count = context.tree.file_count
        context.files, context.bytes = count, context.tree.bytes
        if count != expected:
            return [Check.failed("fake count", f"{count} files, expected {expected}")]
        return [Check.passed("fake count", proves_data=expected > 0)]


@dataclass
class FakeSandbox:
    spec: SandboxSpec
    name: str = "fake-sandbox"
    readiness: list[tuple[list[str], float]] = field(default_factory=list)
    started: list[list[str]] = field(default_factory=list)
    stopped: bool = False
    closed: bool = False  # its context was left: the sandbox was removed

    def start(self, argv: list[str], timeout: float) -> None:
        self.started.append(argv)

    def stop(self) -> None:
        self.stopped = True

    def wait_ready(self, argv: list[str], timeout: float) -> None:
        self.readiness.append((argv, timeout))


@dataclass
class FakeSandboxes:
    """Sandboxes that exist only in this process; what was asked of them is kept."""

    opened: list[FakeSandbox] = field(default_factory=list)

    def check_image(self, image: str) -> None:
        pass

    def open(
        self, spec: SandboxSpec, keep: bool, hand_off: Callable[[str], bool] | None
    ) -> AbstractContextManager[Any]:
        return self._open(spec)

    @contextmanager
    def _open(self, spec: SandboxSpec) -> Iterator[FakeSandbox]:
        box = FakeSandbox(spec)
        self.opened.append(box)
        try:
            yield box
        finally:
            box.closed = True

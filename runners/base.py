"""The Runner interface and the steps every kind shares."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from restore_tests.model import StrictModel
from restore_tests.restored import RestoredTree
from restore_tests.results import Check
from restore_tests.sandbox import RESTORE_MOUNT, CountFailed, Sandbox
from restore_tests.scenario import ScenarioBase
from restore_tests.sources.restic import Snapshot
from restore_tests.sources.restic_output import RestoreOutcome

DEFAULT_IMAGE = "restore-tests/sandbox:bookworm"
FIRST_NAMES = 5
COUNT_TIMEOUT_SECONDS = 600.0


@dataclass
class RunContext:
    """Everything a runner sees of one scenario run."""

    scenario: ScenarioBase
    restore_root: Path  # the snapshot's paths restored below this folder
    snapshot: Snapshot
    restore_outcome: RestoreOutcome
    sandbox: Sandbox
    progress: Callable[[str], None]
    tree: RestoredTree  # the restored tree, walked once (contained lookups, safe to open)
    files: int | None = None  # restored tree, as the runner measured it
    bytes: int | None = None
    hashed_files: int | None = None
    hashed_bytes: int | None = None

    @property
    def verify(self) -> Any:
        return self.scenario.verify  # type: ignore[attr-defined]


class Runner(ABC):
    """One restore kind: its verify section, its sandbox image, its checks."""

    kind: ClassVar[str]
    verify_model: ClassVar[type[StrictModel]]
    default_image: ClassVar[str] = DEFAULT_IMAGE

    def wants_restic_verify(self, scenario: ScenarioBase) -> bool:
        return False

    def load(self, context: RunContext) -> list[Check]:
        """Kind-specific loading inside the sandbox (a database import); nothing by default."""
        return []

    @abstractmethod
    def verify(self, context: RunContext) -> list[Check]:
        """The kind's checks on the restored data."""


def timed(check: Callable[..., Check], *arguments: Any) -> Check:
    """Run a check function and record how long it took."""
    started = time.monotonic()
    result = check(*arguments)
    result.seconds = time.monotonic() - started
    return result


def name_list(names: list[str], limit: int = FIRST_NAMES, total: int | None = None) -> str:
    """'a, b, c' or 'a, b, c, ... (+12 more)'; total when names holds only the first few."""
    shown = ", ".join(names[:limit])
    more = (len(names) if total is None else total) - min(limit, len(names))
    return shown + (f", ... (+{more:,} more)" if more > 0 else "")


def restore_check(outcome: RestoreOutcome, snapshot: Snapshot) -> Check:
    """restic's own word on the restore: files it could not restore are a failure."""
    if not outcome.damaged:
        return Check.passed("restic restore", observed="no errors")
    paths = sorted(outcome.damaged)  # the first few restic named, in the order it met them
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


def sandbox_command_checks(
    context: RunContext,
    commands: list[list[str]],
    timeout: float,
) -> list[Check]:
    """The scenario's own checks, run inside the sandbox; each must exit 0.

    Their output is untrusted and may be endless: the reason is one bounded line, the detail
    a bounded head and tail (see ExecResult).
    """
    checks = []
    for argv in commands:
        name = "sandbox: " + " ".join(argv)[:200]
        context.progress(f"running {name}")
        result = context.sandbox.exec(argv, timeout)
        fields = {
            "expected": "exit 0",
            "observed": f"exit {result.exit_code}",
            "detail": result.detail(),
            "seconds": result.seconds,
        }
        if result.exit_code == 0:
            checks.append(Check.passed(name, **fields))
        else:
            checks.append(Check.failed(name, result.reason(argv[0]), **fields))
    return checks


def sandbox_count_check(context: RunContext, host_files: int) -> Check:
    """The sandbox must see as many regular files as the host restored.

    Directories only their owner may enter (0700 home folders) are counted as their owner,
    never with a capability (see Sandbox.count_files).
    """
    name = "sandbox file count"
    context.progress("counting files inside the sandbox")
    try:
        seen = context.sandbox.count_files(RESTORE_MOUNT, COUNT_TIMEOUT_SECONDS)
    except CountFailed as error:
        return Check.error(name, f"could not count files inside the sandbox: {error}"[:300])
    if seen != host_files:
        return Check.failed(
            name,
            f"the sandbox sees {seen:,} files, the host restored {host_files:,}",
            expected=str(host_files),
            observed=str(seen),
        )
    return Check.passed(name, expected=str(host_files), observed=str(seen))

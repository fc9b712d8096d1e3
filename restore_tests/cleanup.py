"""Leftovers of killed or --keep runs: sandboxes (by label) and staging directories (by run id)."""

from __future__ import annotations

import re
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from restore_tests import execute, sandbox
from restore_tests.errors import EnvironmentUnusable

_STAGING = re.compile(r"^(\d{8}T\d{6}Z-[0-9a-f]{6})-")
REMOVING = ".removing"
REMOVAL_POLL_SECONDS = 0.5


def remove_later(folder: Path) -> None:
    """Remove a staging directory without waiting for the disk.

    Deleting a large restored tree waits for the disk to release its blocks (about 2 s per GiB
    measured here). The folder is renamed at once, so it is gone from where it was, and deleted
    by a detached process; resume_removals() restarts any deletion that a reboot interrupted.
    """
    target = folder.with_name(folder.name + REMOVING)
    try:
        folder.rename(target)
    except FileNotFoundError:
        return
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return
    try:
        execute.spawn_detached(["rm", "-rf", "--", str(target)])
    except EnvironmentUnusable:
        shutil.rmtree(target, ignore_errors=True)


def pending_removals(work_dir: Path) -> list[Path]:
    return sorted(work_dir.glob(f"*{REMOVING}")) if work_dir.is_dir() else []


def resume_removals(work_dir: Path) -> None:
    for folder in pending_removals(work_dir):
        execute.spawn_detached(["rm", "-rf", "--", str(folder)])


def wait_for_removals(work_dir: Path, timeout: float) -> None:
    """Wait (bounded) until the removals under way in work_dir are done: their space is needed."""
    deadline = time.monotonic() + timeout
    while pending_removals(work_dir) and time.monotonic() < deadline:
        time.sleep(REMOVAL_POLL_SECONDS)


def prune_leftovers(
    work_dir: Path, everything: bool = False, run_id: str | None = None, dry_run: bool = False
) -> list[str]:
    """Remove what is past its expiry (everything, or one run's, when asked). Returns its names."""
    client = sandbox.connect()
    removed = [
        f"{leftover.kind} {leftover.name} (run {leftover.run_id})"
        for leftover in sandbox.prune(client, everything, dry_run, run_id)
    ]
    for folder in _staging_dirs(work_dir, everything, run_id):
        removed.append(f"staging {folder}")
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
    return removed


def _staging_dirs(work_dir: Path, everything: bool, run_id: str | None) -> list[Path]:
    if not work_dir.is_dir():
        return []
    found = []
    oldest = datetime.now(UTC) - sandbox.DEFAULT_TTL
    for folder in sorted(work_dir.iterdir()):
        match = _STAGING.match(folder.name)
        if not match or not folder.is_dir():
            continue
        started = datetime.strptime(match[1][:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if (run_id and match[1] == run_id) or (not run_id and (everything or started < oldest)):
            found.append(folder)
    return found

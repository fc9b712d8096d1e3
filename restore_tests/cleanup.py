"""Leftovers of killed or --keep runs: sandboxes (by label) and staging directories (by run id)."""

from __future__ import annotations

import re
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from restore_tests import execute, sandbox
from restore_tests.errors import EnvironmentUnusable

_STAGING = re.compile(r"^(\d{8}T\d{6}Z-[0-9a-f]{6})-")
REMOVING = ".removing"
REMOVAL_POLL_SECONDS = 0.5


def dispose(staging: Path, container_id: str | None = None) -> bool:
    """Remove a run's staging directory (and its sandbox) without making the run wait.

    Deleting a large restored tree waits for the disk to release its blocks (about 2 s per GiB
    here), and removing a container makes the engine sync the filesystem, which first writes
    back every restored byte not yet deleted. So the directory is renamed at once and a detached
    reaper deletes it, then the container. Returns False when no reaper could be started: the
    caller removes the container itself. resume_removals() finishes what a reboot interrupted.
    """
    target = staging.with_name(staging.name + REMOVING)
    try:
        staging.rename(target)
    except FileNotFoundError:
        if container_id is None:
            return True  # already handed to a reaper
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return False
    arguments = [sys.executable, "-m", "restore_tests.reaper", str(target)]
    try:
        execute.spawn_detached(
            arguments + ([container_id] if container_id else []),
            env=sandbox.docker_environment(),
        )
    except EnvironmentUnusable:
        shutil.rmtree(target, ignore_errors=True)
        return False
    return True


def pending_removals(work_dir: Path) -> list[Path]:
    return sorted(work_dir.glob(f"*{REMOVING}")) if work_dir.is_dir() else []


def resume_removals(work_dir: Path) -> None:
    for folder in pending_removals(work_dir):
        execute.spawn_detached([sys.executable, "-m", "restore_tests.reaper", str(folder)])


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

"""Leftovers of killed or --keep runs: sandboxes (by label) and staging directories (by run id).

A run writes WORK_DIR/RUN_ID.owner naming its process (host, pid, boot, start time) and removes
it when it ends. An owner file whose process has ended is a killed run: `prune` removes what it
left at once, instead of waiting for the 6 h expiry; so does a run the history records as
abandoned on this host. Everything else is removed only past its expiry (or when told).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import stat
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import docker

from restore_tests import execute, sandbox
from restore_tests.errors import EnvironmentUnusable
from restore_tests.history.processes import ProcessIdentity
from restore_tests.history.store import HistoryStore

log = logging.getLogger(__name__)
_STAGING = re.compile(r"^(\d{8}T\d{6}Z-[0-9a-f]{6})-")
REMOVING = ".removing"
OWNER = ".owner"
OWNER_FILE_LIMIT = 4096
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


def claim_run(work_dir: Path, run_id: str, owner: ProcessIdentity) -> None:
    """Write the run's owner file. Best effort: without it, prune still has the history and
    the expiry; a work dir that is not ours is left to the staging checks to refuse."""
    path = work_dir / f"{run_id}{OWNER}"
    try:
        _own_folder(work_dir)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as error:
        log.info("no owner file for run %s in %s: %s", run_id, work_dir, error)
        return
    try:
        with os.fdopen(descriptor, "w") as stream:
            json.dump(owner.to_dict(), stream)
    except OSError as error:  # a full disk: a partial file would name no process
        log.info("no owner file for run %s in %s: %s", run_id, work_dir, error)
        release_run(work_dir, run_id)


def release_run(work_dir: Path, run_id: str) -> None:
    try:
        (work_dir / f"{run_id}{OWNER}").unlink(missing_ok=True)
    except OSError as error:
        log.info("could not remove the owner file of run %s: %s", run_id, error)


def _own_folder(folder: Path) -> None:
    """Create folder (0700, its parent must exist); OSError unless it is a folder of this user."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    status = os.lstat(folder)
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.geteuid():
        raise PermissionError(f"{folder} is not a folder of this user")


def ended_runs(work_dir: Path) -> dict[str, Path]:
    """The runs of this host whose owner file names a process that has ended: run id -> file."""
    if not work_dir.is_dir():
        return {}
    ended = {}
    for path in sorted(work_dir.glob(f"*{OWNER}")):
        try:
            with open(path, "rb") as stream:
                owner = ProcessIdentity.from_dict(json.loads(stream.read(OWNER_FILE_LIMIT)))
        except (OSError, ValueError) as error:  # JSONDecodeError is a ValueError
            log.info("owner file %s is unreadable: %s", path, error)
            continue
        if owner.on_this_host() and owner.has_ended():
            ended[path.name.removesuffix(OWNER)] = path
    return ended


@dataclass
class PruneReport:
    removed: list[str] = field(default_factory=list)  # what was (or would be) removed
    problems: list[str] = field(default_factory=list)  # what could not be checked


def prune_leftovers(
    work_dir: Path,
    everything: bool = False,
    run_id: str | None = None,
    dry_run: bool = False,
    history_url: str | None = None,
) -> PruneReport:
    """Remove what is past its expiry (everything, or one run's, when asked) and, without
    --run, what runs that were killed left. The history, when given and present, gets its
    abandoned drills marked (not on a dry run) and names killed runs too."""
    client = sandbox.connect()
    report = PruneReport()
    owner_files = {} if run_id else ended_runs(work_dir)
    ended = set(owner_files)
    if history_url and not run_id:
        ended |= _abandoned_in_history(client, work_dir, history_url, dry_run, report)
    leftovers = list(sandbox.prune(client, everything, dry_run, run_id))
    for dead_run in sorted(ended):
        leftovers.extend(sandbox.prune(client, dry_run=dry_run, run_id=dead_run))
    lines = [f"{item.kind} {item.name} (run {item.run_id})" for item in leftovers]
    report.removed.extend(dict.fromkeys(lines))  # a dead run's expired sandbox is listed once
    for folder in _staging_dirs(work_dir, everything, run_id, ended):
        report.removed.append(f"staging {folder}")
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
    if not dry_run:
        for path in owner_files.values():
            path.unlink(missing_ok=True)
    return report


def _abandoned_in_history(
    client: docker.DockerClient, work_dir: Path, url: str, dry_run: bool, report: PruneReport
) -> set[str]:
    """Runs with leftovers that the history knows were abandoned on this host."""
    try:
        store = HistoryStore.open_existing(url)
        if store is None:
            return set()  # no history there yet: nothing to mark
        newly = store.mark_abandoned(dry_run)
        candidates = {item.run_id for item in sandbox.prune(client, True, dry_run=True)}
        candidates |= {run for run, _ in _staging_runs(work_dir)}
        return (set(newly) | store.abandoned_runs(candidates)) & candidates
    except EnvironmentUnusable as error:
        report.problems.append(f"{error} (abandoned runs were not checked in the history)")
        return set()


def _staging_runs(work_dir: Path) -> list[tuple[str, Path]]:
    """(run id, folder) for every folder of the work dir named after a run."""
    if not work_dir.is_dir():
        return []
    found = []
    for folder in sorted(work_dir.iterdir()):
        match = _STAGING.match(folder.name)
        if match and folder.is_dir() and not folder.is_symlink():
            found.append((match[1], folder))
    return found


def _staging_dirs(
    work_dir: Path, everything: bool, run_id: str | None, ended: set[str]
) -> list[Path]:
    found = []
    oldest = datetime.now(UTC) - sandbox.DEFAULT_TTL
    for folder_run, folder in _staging_runs(work_dir):
        started = datetime.strptime(folder_run[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if run_id:
            wanted = folder_run == run_id
        else:
            wanted = everything or folder_run in ended or started < oldest
        if wanted:
            found.append(folder)
    return found

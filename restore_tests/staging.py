"""The work dir and the staging folders in it: private to the user running the drill.

restic runs as root and restores what the backup holds, setuid binaries included, so a staging
folder that another local user can reach, or swap for a symbolic link while the restore runs,
would hand them root. The work dir is therefore a real folder (never a link), owned by the
running user, mode 0700, in a parent that others cannot rename it out of; each staging folder
is made with mkdir (which never follows a link) inside it. Folder names come from the run id and
a random part, never from a user-chosen scenario name.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from restore_tests.errors import EnvironmentUnusable

log = logging.getLogger(__name__)
PRIVATE = 0o700


def prepare_work_dir(work_dir: Path) -> None:
    """Create the work dir (0700) or check an existing one; EnvironmentUnusable when unsafe."""
    work_dir = Path(os.path.abspath(work_dir))
    _check_parent(work_dir.parent)
    try:
        os.mkdir(work_dir, PRIVATE)
    except FileExistsError:
        pass
    except OSError as error:
        raise EnvironmentUnusable(
            f"work dir {work_dir}: cannot create it ({error.strerror})"
        ) from error
    status = os.lstat(work_dir)
    if stat.S_ISLNK(status.st_mode) or not stat.S_ISDIR(status.st_mode):
        raise EnvironmentUnusable(
            f"work dir {work_dir} is not a plain folder (a symbolic link or a file): refusing "
            "to restore there; remove it or choose another with --work-dir"
        )
    if status.st_uid != os.geteuid():
        raise EnvironmentUnusable(
            f"work dir {work_dir} belongs to uid {status.st_uid}, not to this user "
            f"(uid {os.geteuid()}): another user could reach restored files; remove it or "
            "choose another with --work-dir"
        )
    if stat.S_IMODE(status.st_mode) & 0o077:
        # Ours, so tightening it is safe (an older version made it 0755).
        log.info("work dir %s: mode %o tightened to 0700", work_dir, stat.S_IMODE(status.st_mode))
        os.chmod(work_dir, PRIVATE)


def _check_parent(parent: Path) -> None:
    """A parent that others may write to must be sticky (/tmp), or they could rename the work
    dir away and put their own in its place."""
    try:
        status = os.stat(parent)
    except OSError as error:
        raise EnvironmentUnusable(
            f"work dir parent {parent} is unusable ({error.strerror})"
        ) from error
    writable_by_others = status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    trusted_owner = status.st_uid in (0, os.geteuid())
    if (writable_by_others and not status.st_mode & stat.S_ISVTX) or not trusted_owner:
        raise EnvironmentUnusable(
            f"work dir parent {parent} can be changed by other users "
            f"(mode {stat.S_IMODE(status.st_mode):o}, owner uid {status.st_uid}): choose a "
            "work dir whose parent only you or root can write to, with --work-dir"
        )


def create_staging(work_dir: Path, run_id: str) -> Path:
    """A new private folder for one scenario run, named by the run id (never by the scenario)."""
    prepare_work_dir(work_dir)
    staging = work_dir / f"{run_id}-{secrets.token_hex(4)}"
    try:
        os.mkdir(staging, PRIVATE)  # fails on anything already there, a link included
    except OSError as error:
        raise EnvironmentUnusable(
            f"cannot create the staging folder {staging}: {error.strerror}"
        ) from error
    return staging

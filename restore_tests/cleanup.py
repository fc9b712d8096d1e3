"""Leftovers of killed or --keep runs: sandboxes (by label) and staging directories (by run id)."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from restore_tests import sandbox

_STAGING = re.compile(r"^(\d{8}T\d{6}Z-[0-9a-f]{6})-")


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

"""The Runner interface (one restore kind) and the steps every kind shares.

A runner never asks which source fed it: it gets the restore point and the staged data. It
declares what its sandbox needs, loads the data in the sandbox if the kind needs it (a database
import), and verifies it.
"""

from __future__ import annotations

import os
import posixpath
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from restore_tests.background import Background
from restore_tests.model import StrictModel
from restore_tests.prehash import EarlyDigests
from restore_tests.restored import DIRECTORY, MISSING, REGULAR, RestoredTree
from restore_tests.results import Check, name_list
from restore_tests.sandbox import RESTORE_MOUNT, CountFailed, Sandbox
from restore_tests.sources.base import RestorePoint

if TYPE_CHECKING:  # scenario.py builds each kind's model from this registry
    from restore_tests.scenario import ScenarioBase

DEFAULT_IMAGE = "restore-tests/sandbox:bookworm"
COUNT_TIMEOUT_SECONDS = 600.0


@dataclass
class RunContext:
    """Everything a runner sees of one scenario run."""

    scenario: ScenarioBase
    data_root: Path  # the restored data: the snapshot's or archive's paths below this folder
    restore_point: RestorePoint
    sandbox: Sandbox
    progress: Callable[[str], None]
    tree: RestoredTree  # the restored tree, walked once (contained lookups, safe to open)
    files: int | None = None  # restored tree, as the runner measured it
    bytes: int | None = None
    early: EarlyDigests | None = None  # files hashed while they were fetched (prehash.py)

    @property
    def verify(self) -> Any:
        return self.scenario.verify  # type: ignore[attr-defined]


@dataclass(frozen=True)
class SandboxNeeds:
    """What a kind needs from its sandbox, beyond the scenario's own limits."""

    scratch_bytes: int = 256 * 1024**2  # writable space at /scratch (a database's files)
    # False: /scratch is a tmpfs (memory) of scratch_bytes. True: a folder in the private
    # staging folder, on disk, whose scratch_bytes are checked free before the sandbox starts
    # and watched while the kind loads (a database's files, larger than memory).
    scratch_on_disk: bool = False
    # The watch's bound on disk: scratch_bytes, or, when the size was not set by the scenario,
    # this many times the restored data at the most (a compressible dump expands far beyond
    # what was checked free; a hostile one is still stopped).
    scratch_growth_factor: int | None = None
    user: str | None = None  # "UID:GID" or a name known to the image; root otherwise
    environment: dict[str, str] = field(default_factory=dict)
    start_command: list[str] | None = None  # run once when the sandbox is up (start a server)
    ready_command: list[str] | None = None  # polled until it exits 0 (a server answering)
    ready_timeout: float = 60.0
    log_file: str | None = None  # the server's log, whose last lines explain its failures


class Runner(ABC):
    """One restore kind: its verify section, its sandbox, its checks."""

    kind: ClassVar[str]
    verify_model: ClassVar[type[StrictModel]]
    default_image: ClassVar[str] = DEFAULT_IMAGE
    # The kind's own top-level sections of a scenario (a database's `database:`), as pydantic
    # field definitions: name -> (type, Field(...)).
    sections: ClassVar[dict[str, tuple[Any, Any]]] = {}

    # True when the sandbox's needs depend on the restore point (a database's scratch space is
    # sized from the dump): the sandbox then starts after selection, not while it runs.
    sandbox_sized_by_point: ClassVar[bool] = False

    def sandbox_needs(self, scenario: ScenarioBase, point: RestorePoint | None) -> SandboxNeeds:
        """What the sandbox must offer, knowing what will be restored (its size, when known;
        point is None when asked before selection, for a kind not sized by the point)."""
        return SandboxNeeds()

    def hashes_below(self, scenario: ScenarioBase) -> str | None:
        """The snapshot folder whose files the kind will hash ('/' for all), so that they are
        hashed as they are fetched; None (the default) when it hashes none."""
        return None

    def load(self, context: RunContext) -> list[Check]:
        """Kind-specific loading inside the sandbox (a database import); nothing by default."""
        return []

    @abstractmethod
    def verify(self, context: RunContext) -> list[Check]:
        """The kind's checks on the restored data."""

    def boots(self, scenario: ScenarioBase) -> bool:
        """Whether the scenario asks to start what was restored (a VM's boot check): its own
        step and phase after verify, part of the measured RTO."""
        return False

    def boot(self, context: RunContext) -> list[Check]:
        """Start what was restored, isolated, and say whether it came up."""
        return []

    def data_time(self, context: RunContext) -> datetime | None:
        """The time of the newest data inside the restored content (a database's newest row),
        when the kind can tell: the RPO then also holds for the content. None by default."""
        return None


@dataclass(frozen=True)
class Located:
    """The restored file (or folder) a kind reads, and where a sandbox command reads it."""

    path: str  # as in the snapshot: "/var/backups/billing.dump"
    host_path: Path
    folder_inside: str  # its folder inside the sandbox (a command's working directory)
    name: str  # its name in that folder
    owner: str  # "UID:GID" of its owner: the user that can read it


def locate(
    context: RunContext, declared: str | None, what: str, field_name: str, folder_marker: str = ""
) -> Located | Check:
    """What the kind reads: the declared path, else the only file restored, else the folder
    holding every file when it holds folder_marker (a pg_dump directory's toc.dat); a FAIL
    check named `what` otherwise."""
    tree = context.tree
    if declared is not None:
        found = tree.lookup(declared)
        if found.kind not in (REGULAR, DIRECTORY):
            kind = "is not in the restored data" if found.kind == MISSING else found.kind
            return Check.failed(what, f"{what} {declared} {kind} ({context.restore_point.shown})")
        return located(context, found.path)
    files = sorted(tree.files)
    if not files:
        return Check.failed(what, f"the restored data holds no file: there is no {what} to read")
    if len(files) == 1:
        return located(context, files[0])
    folder = posixpath.commonpath(files) if files else ""
    if files and folder_marker and f"{folder}/{folder_marker}" in tree.files:
        return located(context, folder)
    return Check.failed(
        what,
        f"the restored data holds {len(files):,} files ({name_list(files)}): name the {what} "
        f"with {field_name}",
    )


def located(context: RunContext, path: str) -> Located:
    """A path of the restored tree, made reachable by its owner, who reads it in the sandbox:
    restored files are never made readable to anyone else, and the original (a local source
    may hard-link it) is never touched."""
    host_path = context.data_root / path
    status = os.stat(host_path, follow_symlinks=False)
    folder, name = posixpath.split(path)
    _traversable(context.data_root, folder)
    return Located(
        path="/" + path,
        host_path=host_path,
        folder_inside=posixpath.join(RESTORE_MOUNT, folder) if folder else RESTORE_MOUNT,
        name=name,
        owner=f"{status.st_uid}:{status.st_gid}",
    )


def _traversable(root: Path, folder: str) -> None:
    """The folders leading to a path get the search bit for others (never the read bit, never
    a file's mode; the staging folder around them stays private to the drill's user). Links are
    not followed: the folders are the tree's own."""
    current = root
    for part in ["", *(folder.split("/") if folder else [])]:
        current = current / part if part else current
        descriptor = os.open(current, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            mode = os.fstat(descriptor).st_mode
            os.fchmod(descriptor, (mode & 0o7777) | 0o001)
        finally:
            os.close(descriptor)


def timed(check: Callable[..., Check], *arguments: Any) -> Check:
    """Run a check function and record how long it took."""
    started = time.monotonic()
    result = check(*arguments)
    result.seconds = time.monotonic() - started
    return result


def in_background(check: Callable[..., Check], *arguments: Any) -> Callable[[], Check]:
    """Run a timed check in a thread (a count inside the sandbox while the host hashes); the
    call returned waits for its result, or raises what the check raised."""
    return Background(lambda: timed(check, *arguments), check.__name__).result


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

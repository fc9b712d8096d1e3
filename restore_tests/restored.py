"""The restored tree, walked once: an index of what was restored, and a sweep of what is unsafe.

Restored data is untrusted (ARCHITECTURE.md, "Threat model"). The walk never follows a link.
Every later lookup of a path named by a scenario or a manifest is resolved over this index, as
openat2's RESOLVE_IN_ROOT would: links are followed only inside the restored tree (an absolute
target means the restored machine's root), and a `..` that climbs above it is refused, so
nothing outside the restore root is ever opened. The sweep removes setuid/setgid bits and
deletes device nodes, and says how many there were: that is evidence about the backup.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from restore_tests.errors import Interrupted

REGULAR = "regular file"
DIRECTORY = "folder"
MISSING = "missing"
OUTSIDE = "leads outside the restored data"
LINK_LOOP = "too many levels of symbolic links"
MAX_LINK_HOPS = 40  # as Linux's path resolution
FIRST_NAMES = 20  # names kept per kind of special file (the counts are exact)
CANCEL_EVERY = 1000  # entries between two looks at the cancel flag
_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)
_DEVICES = ("character device", "block device")


@dataclass(frozen=True)
class Found:
    """What a path leads to: its kind and, when it is in the tree, its resolved path."""

    kind: str
    path: str


@dataclass
class NameSample:
    """A count and the first few names: bounded, however hostile the backup."""

    count: int = 0
    names: list[str] = field(default_factory=list)

    def add(self, name: str) -> None:
        self.count += 1
        if len(self.names) < FIRST_NAMES:
            self.names.append(name)


@dataclass
class SpecialFiles:
    """Restored entries that could grant privilege or block a reader."""

    setuid: NameSample = field(default_factory=NameSample)  # bits removed
    devices: NameSample = field(default_factory=NameSample)  # deleted
    fifos_and_sockets: NameSample = field(default_factory=NameSample)  # kept, never opened

    def summary(self) -> str:
        parts = []
        for sample, singular, plural, done in (
            (self.setuid, "setuid/setgid file", "setuid/setgid files", " (bits removed)"),
            (self.devices, "device node", "device nodes", " (removed)"),
            (self.fifos_and_sockets, "FIFO or socket", "FIFOs or sockets", " (never opened)"),
        ):
            if sample.count:
                parts.append(f"{sample.count:,} {singular if sample.count == 1 else plural}{done}")
        return ", ".join(parts)


@dataclass
class RestoredTree:
    """Every entry below root, by relative path ('a/b.txt'), as restored; links not followed."""

    root: Path
    files: dict[str, int] = field(default_factory=dict)  # regular file -> size
    directories: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)  # symbolic link -> its target
    others: dict[str, str] = field(default_factory=dict)  # FIFO, socket, device -> its kind
    special: SpecialFiles = field(default_factory=SpecialFiles)
    unreadable_folders: NameSample = field(default_factory=NameSample)
    bytes: int = 0

    @property
    def file_count(self) -> int:
        return len(self.files)

    def lookup(self, path: str) -> Found:
        """Resolve a path (snapshot-absolute or relative to root) inside the tree only."""
        parts = [part for part in path.split("/") if part not in ("", ".")]
        plain = "/".join(parts)
        if plain in self.files and ".." not in parts:
            # The walk indexed only entries below real folders, never through a link: a
            # path it holds as a file has no link anywhere along it.
            return Found(REGULAR, plain)
        pending = list(reversed(path.split("/")))
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    return Found(OUTSIDE, path)
                resolved.pop()
                continue
            candidate = "/".join([*resolved, part])
            target = self.links.get(candidate)
            if target is None:
                if pending and candidate not in self.directories:
                    return Found(MISSING, candidate)
                resolved.append(part)
                continue
            hops += 1
            if hops > MAX_LINK_HOPS:
                return Found(LINK_LOOP, path)
            if target.startswith("/"):
                resolved = []  # the restored machine's root is the restore root
            pending.extend(reversed(target.split("/")))
        return Found(self._kind("/".join(resolved)), "/".join(resolved))

    def _kind(self, relative: str) -> str:
        if relative == "" or relative in self.directories:
            return DIRECTORY
        if relative in self.files:
            return REGULAR
        return self.others.get(relative, MISSING)

    def files_below(self, folder: str) -> Iterator[str]:
        """Regular files below a folder of the tree ('' for all), as relative paths."""
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        return (path for path in self.files if path.startswith(prefix))


def walk(root: Path, cancelled: Callable[[], bool] = bool) -> RestoredTree:
    """Index the tree below root and make it safe: no setuid/setgid bit, no device node left.

    Raises Interrupted when cancelled.
    """
    tree = RestoredTree(root)
    stack = [(str(root), "")]
    seen = 0
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as error:
            tree.unreadable_folders.add(f"{prefix or '/'} ({error.strerror or error})")
            continue
        for entry in entries:
            seen += 1
            if seen % CANCEL_EVERY == 0 and cancelled():
                raise Interrupted()
            _index(tree, entry, prefix + entry.name, stack)
    return tree


def _index(
    tree: RestoredTree, entry: os.DirEntry[str], relative: str, stack: list[tuple[str, str]]
) -> None:
    if entry.is_dir(follow_symlinks=False):
        tree.directories.add(relative)
        stack.append((entry.path, relative + "/"))
    elif entry.is_symlink():
        tree.links[relative] = os.readlink(entry.path)
    else:
        status = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(status.st_mode):
            tree.files[relative] = status.st_size
            tree.bytes += status.st_size
            if status.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(entry.path, stat.S_IMODE(status.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
                tree.special.setuid.add(relative)
        else:
            _sweep_special(tree, entry.path, relative, status.st_mode)


def _sweep_special(tree: RestoredTree, path: str, relative: str, mode: int) -> None:
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "special file")
    tree.others[relative] = kind
    if kind in _DEVICES:
        os.unlink(path)  # a device node in staging would be a door to the host's hardware
        tree.special.devices.add(relative)
    else:
        tree.special.fifos_and_sockets.add(relative)


# Restored files are opened without following a final link and without blocking on a FIFO.
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def read_bounded(path: Path, limit: int) -> str:
    """A restored regular file's text, refused past limit bytes (ValueError); never a FIFO's or
    a device's (OSError), never through a final link."""
    descriptor = os.open(path, OPEN_FLAGS)
    with open(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(f"{path} is not a regular file")
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} is larger than {limit} bytes")
    return data.decode("utf-8", errors="surrogateescape")

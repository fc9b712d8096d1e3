"""Writing below the staging folder for unpack.py: the writer that never follows a link, the
rules for entry names and link targets, the refusal reasons, and the limits and exceptions that
unpack_formats.py shares."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from restore_tests.errors import HostError, Interrupted
from restore_tests.timing import format_size

if TYPE_CHECKING:  # unpack.py imports this module
    from restore_tests.unpack import Unpacked

MAX_ENTRIES = 10_000_000
MAX_NAME_BYTES = 4095  # PATH_MAX - 1
MAX_PART_BYTES = 255  # NAME_MAX
CHUNK_BYTES = 1024**2
CANCEL_EVERY = 1000  # entries between two looks at the cancel flag
_FOLDER_CACHE = 256  # open folder descriptors kept between entries
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# What an entry meets in the way when it is not a folder: a refusal, not a fault of the host.
_IN_THE_WAY = {errno.ELOOP, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG}

LEADS_OUTSIDE = "leads outside"
ABSOLUTE_NAME = "absolute name"
DEVICE = "device file"
FIFO = "FIFO"
NOT_PLAIN = "not a plain file"
ABSOLUTE_LINK = "symbolic link to an absolute path"
LINK_OUTSIDE = "symbolic link leading outside"
HARD_LINK_OUTSIDE = "hard link leading outside"
HARD_LINK_UNKNOWN = "hard link to a file not extracted before"
THROUGH_LINK = "through a symbolic link"
NAME_TOO_LONG = "name too long"
INVALID_NAME = "invalid name"
UNEXPECTED_END = "unexpected end of data"


# -- what may stop unpacking ------------------------------------------------------------------


class Refused(Exception):
    """One entry is not written."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class Damaged(Exception):
    """The archive cannot be read on: truncated or corrupt."""

    def __init__(self, reason: str, at_offset: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.at_offset = at_offset  # "after 1.2 MiB" says something for a stream, not a zip


class Stopped(Exception):
    """A limit was reached: the byte limit (a bomb) or the entry limit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StreamFailed(Exception):
    """The stream being read failed (network, source disk): raised again as it came, once out
    of the decompressors and tarfile, which must not mistake it for damage."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def over_limit(limit_bytes: int) -> Stopped:
    return Stopped(f"unpacks to more than {size_text(limit_bytes)} (max_unpacked): stopped")


def size_text(size: int) -> str:
    """A size as people write it: 4 GiB, 1.2 MiB, 512 B."""
    return format_size(size).replace(".0 ", " ")


# -- names ------------------------------------------------------------------------------------


def entry_parts(name: str) -> tuple[str, ...]:
    """An entry's name as path parts below the target; Refused when it could lead outside."""
    if name.startswith("/"):
        raise Refused(ABSOLUTE_NAME)
    try:
        encoded = os.fsencode(name)
    except UnicodeError:
        raise Refused(INVALID_NAME) from None
    if b"\0" in encoded:
        raise Refused(INVALID_NAME)
    if len(encoded) > MAX_NAME_BYTES:
        raise Refused(NAME_TOO_LONG)
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise Refused(LEADS_OUTSIDE)
    if any(len(os.fsencode(part)) > MAX_PART_BYTES for part in parts):
        raise Refused(NAME_TOO_LONG)
    return parts


def link_refusal(parts: tuple[str, ...], target: str) -> str | None:
    """Why a symbolic link at parts pointing to target is refused (None: it stays inside)."""
    if target.startswith("/"):
        return ABSOLUTE_LINK
    try:
        encoded = os.fsencode(target)
    except UnicodeError:
        return INVALID_NAME
    if not encoded or b"\0" in encoded or len(encoded) > MAX_NAME_BYTES:
        return NOT_PLAIN
    depth = len(parts) - 1
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return LINK_OUTSIDE
        elif part not in ("", "."):
            depth += 1
    return None


def _set_mtime(descriptor: int, mtime: float) -> None:
    """The archive's modification time, when the kernel can hold it (a hostile one may not)."""
    with contextlib.suppress(OverflowError, ValueError):
        os.utime(descriptor, (mtime, mtime))


# -- writing below the target -----------------------------------------------------------------


class Writer:
    """The target folder, written through folder descriptors opened one part at a time with
    O_NOFOLLOW: no link, whoever placed it, is ever followed."""

    def __init__(
        self,
        target: Path,
        unpacked: Unpacked,
        limit_bytes: int | None,
        cancelled: Callable[[], bool],
    ) -> None:
        self.target = target
        self.unpacked = unpacked
        self.limit_bytes = limit_bytes
        self.cancelled = cancelled
        self.entries = 0
        self.created_links: list[tuple[str, ...]] = []
        try:
            root = os.open(target, _DIRECTORY_FLAGS)
        except OSError as error:
            raise self._host_error(error, "") from error
        self.folders: dict[tuple[str, ...], int] = {(): root}

    def close(self) -> None:
        for descriptor in self.folders.values():
            os.close(descriptor)
        self.folders.clear()

    def begin_entry(self) -> None:
        """Count the entry (bounded), look at the cancel flag, keep few descriptors open."""
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise Stopped(f"holds more than {MAX_ENTRIES:,} entries: stopped")
        if self.entries % CANCEL_EVERY == 0 and self.cancelled():
            raise Interrupted()
        if len(self.folders) > _FOLDER_CACHE:
            root = self.folders.pop(())
            self.close()
            self.folders[()] = root

    def folder(self, parts: tuple[str, ...], create: bool = True) -> int:
        """The descriptor of the folder at parts, created as needed (0700), never through a
        link: Refused when a link or a file is in the way (or it is missing, not to create)."""
        known = len(parts)
        while parts[:known] not in self.folders:
            known -= 1
        descriptor = self.folders[parts[:known]]
        for index in range(known, len(parts)):
            opened = self._open_folder(descriptor, parts, index, create)
            if index > known:
                os.close(descriptor)
            descriptor = opened
        if len(parts) > known:
            self.folders[parts] = descriptor
        return descriptor

    def _open_folder(self, parent: int, parts: tuple[str, ...], index: int, create: bool) -> int:
        name = parts[index]
        try:
            try:
                return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise Refused(f"{'/'.join(parts[: index + 1])} is missing") from None
                os.mkdir(name, 0o700, dir_fd=parent)
                return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
        except OSError as error:
            if error.errno not in _IN_THE_WAY:
                raise self._host_error(error, "/".join(parts[: index + 1])) from error
            shown = "/".join(parts[: index + 1])
            if self._is_link(parent, name):
                raise Refused(f"{THROUGH_LINK} ({shown})") from error
            raise Refused(f"{shown} is not a folder") from error

    @staticmethod
    def _is_link(parent: int, name: str) -> bool:
        try:
            return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
        except OSError:
            return False

    def make_folder(self, parts: tuple[str, ...], mode: int) -> None:
        if not parts:
            return  # the archive's own root ("./"): the target already is
        descriptor = self.folder(parts)
        try:
            os.fchmod(descriptor, (mode & 0o777) | 0o700)  # the owner must be able to clean up
        except OSError as error:
            raise self._host_error(error, "/".join(parts)) from error
        self.unpacked.folders += 1

    def write_file(
        self,
        parts: tuple[str, ...],
        mode: int,
        mtime: float | None,
        read: Callable[[int], bytes | memoryview],
        limited: bool = True,
    ) -> int:
        """A new regular file (O_EXCL, O_NOFOLLOW) holding what read() gives; bytes written."""
        if not parts:
            raise Refused("no name")
        parent = self._replaceable(parts)
        try:
            descriptor = os.open(parts[-1], _NEW_FILE_FLAGS, 0o600, dir_fd=parent)
        except OSError as error:
            raise self._host_error(error, "/".join(parts)) from error
        try:
            written = self._copy(read, descriptor, parts, limited)
            if mode & 0o6000:
                self.unpacked.setuid_dropped += 1
            os.fchmod(descriptor, (mode & 0o777) | 0o400)  # the host must be able to hash it
            if mtime is not None:
                _set_mtime(descriptor, mtime)
        except OSError as error:
            raise self._host_error(error, "/".join(parts)) from error
        finally:
            os.close(descriptor)
        return written

    def _copy(
        self,
        read: Callable[[int], bytes | memoryview],
        descriptor: int,
        parts: tuple[str, ...],
        limited: bool,
    ) -> int:
        written = 0
        while chunk := read(CHUNK_BYTES):
            total = self.unpacked.bytes_written + len(chunk)
            if limited and self.limit_bytes is not None and total > self.limit_bytes:
                raise over_limit(self.limit_bytes)
            view = memoryview(chunk)
            while view:
                view = view[os.write(descriptor, view) :]
            written += len(chunk)
            self.unpacked.bytes_written = total
        return written

    def symlink(self, parts: tuple[str, ...], target: str) -> None:
        why = link_refusal(parts, target) if parts else "no name"
        if why:
            raise Refused(why)
        parent = self._replaceable(parts)
        try:
            os.symlink(target, parts[-1], dir_fd=parent)
        except OSError as error:
            raise self._host_error(error, "/".join(parts)) from error
        self.created_links.append(parts)
        self.unpacked.links += 1

    def hard_link(self, parts: tuple[str, ...], source_name: str) -> None:
        """A hard link, only to a regular file this archive already placed below the target."""
        try:
            source = entry_parts(source_name)
        except Refused as refusal:
            raise Refused(HARD_LINK_OUTSIDE) from refusal
        if not parts or not source:
            raise Refused(HARD_LINK_UNKNOWN)
        if source == parts:
            self.unpacked.files += 1
            return
        try:
            source_folder = self.folder(source[:-1], create=False)
            status = os.stat(source[-1], dir_fd=source_folder, follow_symlinks=False)
        except (OSError, Refused) as error:
            raise Refused(HARD_LINK_UNKNOWN) from error
        if not stat.S_ISREG(status.st_mode):
            raise Refused(HARD_LINK_UNKNOWN)
        parent = self._replaceable(parts)  # both folders stay open until the next entry
        try:
            os.link(
                source[-1],
                parts[-1],
                src_dir_fd=source_folder,
                dst_dir_fd=parent,
                follow_symlinks=False,
            )
        except OSError as error:
            raise self._host_error(error, "/".join(parts)) from error
        self.unpacked.files += 1

    def _replaceable(self, parts: tuple[str, ...]) -> int:
        """The parent folder of parts, with any earlier entry of that name removed (a later
        entry replaces an earlier one, as tar does), unless it is a folder."""
        parent = self.folder(parts[:-1])
        try:
            status = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return parent
        except OSError as error:
            raise self._host_error(error, "/".join(parts)) from error
        if stat.S_ISDIR(status.st_mode):
            raise Refused("a folder of that name was extracted before")
        try:
            os.unlink(parts[-1], dir_fd=parent)
        except OSError as error:
            raise self._host_error(error, "/".join(parts)) from error
        return parent

    def sweep_links(self) -> None:
        """Links are checked again once all are placed: a link that looked inside when it was
        made may lead outside through one placed later. Such a link is removed and refused."""
        root = os.path.realpath(self.target)
        for parts in self.created_links:
            path = os.path.join(self.target, *parts)
            if not os.path.islink(path):
                continue
            resolved = os.path.realpath(path)
            if resolved == root or resolved.startswith(root + os.sep):
                continue
            try:
                os.unlink(parts[-1], dir_fd=self.folder(parts[:-1]))
            except (OSError, Refused):
                continue
            self.unpacked.links -= 1
            self.unpacked.refuse("/".join(parts), LINK_OUTSIDE)
        self.created_links.clear()

    def _host_error(self, error: OSError, name: str) -> HostError:
        where = f"{name} in the staging folder {self.target}" if name else str(self.target)
        return HostError(f"cannot write {where}: {error.strerror or error}")

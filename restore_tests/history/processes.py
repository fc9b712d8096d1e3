"""Which process a run belongs to, and whether that process has ended.

A drill row and a run's owner file name their process by host, pid, boot id and the process's
start time in clock ticks since boot (/proc/PID/stat field 22): a pid alone is reused by later
processes, and after a reboot every pid belongs to another process. Where /proc says nothing
(not Linux, or another user's process hidden by hidepid), only the pid's existence is checked,
and a process that cannot be ruled out is taken as alive: a live run is never called abandoned.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
BOOT_ID = PROC / "sys/kernel/random/boot_id"
ENDED_STATES = ("Z", "X")  # a zombie (killed, not yet reaped) or dead task has ended
START_TIME_FIELD = 19  # field 22 of /proc/PID/stat, counted from field 3 (after the name)


@dataclass(frozen=True)
class ProcessIdentity:
    host: str
    pid: int
    boot_id: str | None = None
    start_ticks: int | None = None

    @classmethod
    def current(cls) -> ProcessIdentity:
        return cls.of(os.getpid())

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity:
        """The identity of a running process of this host (start time None if /proc hides it)."""
        stat = _process_stat(pid)
        return cls(socket.gethostname(), pid, current_boot_id(), stat[1] if stat else None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessIdentity:
        """From to_dict()'s output; ValueError when it is not that."""
        try:
            host, pid = str(data["host"]), int(data["pid"])
            boot_id, ticks = data.get("boot_id"), data.get("start_ticks")
            return cls(
                host,
                pid,
                None if boot_id is None else str(boot_id),
                None if ticks is None else int(ticks),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a process identity: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def has_ended(self) -> bool:
        """True when this process is known to run no more (ask only on its own host)."""
        booted = current_boot_id()
        if self.boot_id and booted and booted != self.boot_id:
            return True  # the machine was restarted since
        if not _pid_exists(self.pid):
            return True
        stat = _process_stat(self.pid)
        if stat is None:
            return False  # exists, but /proc does not show it: cannot be ruled out
        state, ticks = stat
        if state in ENDED_STATES:
            return True
        return self.start_ticks is not None and ticks != self.start_ticks  # the pid was reused


def current_boot_id() -> str | None:
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def _pid_exists(pid: int) -> bool:
    if pid <= 0:  # 0 and negative numbers name process groups, never one process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _process_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in ticks since boot) from /proc/PID/stat, None when unreadable."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The name (field 2) is in parentheses and may itself hold spaces and parentheses.
    fields = text[text.rfind(")") + 1 :].split()
    try:
        return fields[0], int(fields[START_TIME_FIELD])
    except (IndexError, ValueError):
        return None

"""What a sandbox command leaves behind: bounded output, how it ended, and find's file records.

Pure logic, no Docker (restore_tests/sandbox.py runs the commands). Output of a command is
untrusted and may be endless: only a head and a tail of each stream are kept, with the count of
what was cut, and text shown to a person holds no control characters.
"""

from __future__ import annotations

import re
import signal
import struct
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass

from restore_tests.results import DETAIL_LIMIT
from restore_tests.timing import format_duration, format_size

# Kept of each output stream of a command: its head and its tail. Both streams, cut, with their
# markers, fit in a check's detail.
OUTPUT_HEAD_BYTES = DETAIL_LIMIT // 4 - 64
OUTPUT_TAIL_BYTES = DETAIL_LIMIT // 4 - 64
LINE_CHARACTERS = 200  # the last output line, as quoted in a reason
REASON_CHARACTERS = 300

SIGKILL_EXIT = 128 + signal.SIGKILL

# Control characters of output shown to a person (terminal escapes), except newline and tab.
_CONTROL = {
    code: "\ufffd" for code in [*range(32), 127, *range(0x80, 0xA0)] if chr(code) not in "\n\t"
}


@dataclass(frozen=True)
class Output:
    """What was kept of one output stream: its head, its tail, and how long it really was."""

    head: bytes = b""
    tail: bytes = b""
    total: int = 0

    @property
    def cut(self) -> int:
        """How many bytes between head and tail were not kept."""
        return self.total - len(self.head) - len(self.tail)

    def text(self) -> str:
        if not self.cut:
            return printable(self.head + self.tail)
        marker = f"\n[... {self.cut:,} bytes cut ...]\n"
        return printable(self.head) + marker + printable(self.tail)

    def last_line(self) -> str:
        """The last non-empty line (cut when it is longer than a reason can quote)."""
        kept = self.tail if self.cut else self.head + self.tail
        for line in reversed(printable(kept).splitlines()):
            if line.strip():
                line = line.strip()
                return line if len(line) <= LINE_CHARACTERS else line[:LINE_CHARACTERS] + "..."
        return ""


class BoundedOutput:
    """Keeps the first and the last bytes of a stream, and counts the rest."""

    def __init__(self, head: int = OUTPUT_HEAD_BYTES, tail: int = OUTPUT_TAIL_BYTES) -> None:
        self._head_limit, self._tail_limit = head, tail
        self._head, self._tail = bytearray(), bytearray()
        self._total = 0

    def feed(self, data: bytes) -> None:
        self._total += len(data)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data[-self._tail_limit :]
            if len(self._tail) > 2 * self._tail_limit:
                del self._tail[: -self._tail_limit]

    def output(self) -> Output:
        return Output(bytes(self._head), bytes(self._tail[-self._tail_limit :]), self._total)


@dataclass(frozen=True)
class ExecResult:
    """A finished command: its exit code, its bounded output, and what ended it."""

    exit_code: int
    stdout_output: Output
    stderr_output: Output
    seconds: float
    time_limit: int  # seconds, as given to `timeout`
    memory_limit: int  # bytes, the sandbox's
    oom_killed: bool | None = None  # the engine counted an OOM kill during it (None: unknown)

    @property
    def stdout(self) -> str:
        return self.stdout_output.text()

    @property
    def stderr(self) -> str:
        return self.stderr_output.text()

    @property
    def output_cut(self) -> bool:
        return bool(self.stdout_output.cut or self.stderr_output.cut)

    @property
    def timed_out(self) -> bool:
        return self.exit_code == SIGKILL_EXIT and self.seconds >= self.time_limit

    def last_line(self) -> str:
        """The last non-empty line of stderr, else of stdout; '' when there was no output."""
        return self.stderr_output.last_line() or self.stdout_output.last_line()

    def detail(self) -> str:
        """stdout then stderr, each at most a head, a tail and how much was cut between them."""
        return "\n".join(text for text in (self.stdout.strip(), self.stderr.strip()) if text)

    def reason(self, program: str) -> str:
        """One line of at most REASON_CHARACTERS: the exit, what killed it, the last line."""
        ending = f" ({self.ending()})" if self.ending() else ""
        program = printable(program).replace("\n", " ")
        last = self.last_line() or "no output"
        text = f"sandbox command {program} exited {self.exit_code}{ending}: {last}"
        return text if len(text) <= REASON_CHARACTERS else text[: REASON_CHARACTERS - 3] + "..."

    def ending(self) -> str:
        """'' for a plain exit, else what killed it: 'killed: time limit 5s' and the like."""
        memory = f"limit {memory_text(self.memory_limit)}"
        if self.timed_out:
            return f"killed: time limit {seconds_text(self.time_limit)}"
        if self.oom_killed and self.exit_code == SIGKILL_EXIT:
            return f"killed: out of memory, {memory}"
        if self.oom_killed:
            return f"a process was killed: out of memory, {memory}"
        name = signal_name(self.exit_code)
        return f"killed by {name}" if name else ""


# The engine's output of a command without a TTY: frames of a header (stream number, three zero
# bytes, payload length, big-endian) and a payload. stdin is 0; 3 carries the engine's own error.
FRAME_HEADER = struct.Struct(">B3sL")
STDOUT_STREAM, STDERR_STREAM, ENGINE_ERROR_STREAM = 1, 2, 3
FRAME_READ_BYTES = 64 * 1024  # a payload is read in parts, whatever length its header claims


class OutputCut(Exception):
    """The engine's output stream of a command ended inside a frame, or is not in its format."""


def read_frames(read: Callable[[int], bytes]) -> Iterator[tuple[int, bytes]]:
    """(stream, data) pieces of the engine's output of a command, as they arrive.

    read(n) returns at most n bytes, b"" at the end. The stream may only end between frames:
    an end inside one, a header that is not one, or an error of the engine raises OutputCut.
    """
    while True:
        header = _read_exactly(read, FRAME_HEADER.size)
        if not header:
            return
        stream, padding, length = FRAME_HEADER.unpack(header)
        if stream == ENGINE_ERROR_STREAM:
            message = _read_exactly(read, min(length, LINE_CHARACTERS))
            raise OutputCut(f"the engine reported: {printable(message).strip() or 'an error'}")
        if stream not in (STDOUT_STREAM, STDERR_STREAM) or padding != bytes(3):
            raise OutputCut(f"a frame header that is not one: {header!r}")
        while length:
            data = read(min(length, FRAME_READ_BYTES))
            if not data:
                raise OutputCut(f"it ended {length:,} bytes before the end of a frame")
            length -= len(data)
            yield stream, data


def _read_exactly(read: Callable[[int], bytes], size: int) -> bytes:
    """size bytes, or b"" at the end of the stream; an end after some of them raises OutputCut."""
    data = b""
    while len(data) < size:
        more = read(size - len(data))
        if not more:
            if data:
                raise OutputCut(f"it ended {size - len(data)} bytes before the end of a frame")
            return b""
        data += more
    return data


BARRIERS_MAXIMUM = 1000  # directories one find run may hand over to their owners
RECORD_BYTES_MAXIMUM = 64 * 1024  # a path that long in find's output is not a path


# The count's first and last records: a count whose output lost its start (an output stream read
# from the wrong buffer) or its end must fail, never read as fewer files.
COUNT_BEGINS, COUNT_ENDS = b"s", b"e"
COUNT_END_PATH = "/dev/null"  # a last starting point for find: the engine gives every container one


def count_command(start: str) -> list[str]:
    """find: 'f' for each regular file; 'dUID:GID:MODE:PATH' (mode in octal) for each directory
    it cannot read or search, and does not enter; 's' first (find starts with start) and 'e'
    last (the starting point after it). Records end with NUL, the only byte a name cannot hold."""
    return [
        "find", start, COUNT_END_PATH,
        "(", "-path", _wildcards_escaped(start), "-printf", r"s\0", ")", ",",
        "(", "-type", "d", "(", "!", "-readable", "-o", "!", "-executable", ")",
        "-printf", r"d%U:%G:%m:%P\0", "-prune", ")",
        "-o", "-type", "f", "-printf", r"f\0",
        "-o", "-path", COUNT_END_PATH, "-printf", r"e\0",
    ]  # fmt: skip


def _wildcards_escaped(path: str) -> str:
    """path as a pattern of find -path that only path matches."""
    return re.sub(r"([*?\[\\])", r"\\\1", path)


class CountRecords:
    """Reads find's records as they stream: counts files, keeps the barriers (bounded)."""

    def __init__(self) -> None:
        self.files = 0
        self.barriers: list[Barrier] = []
        self.problem = ""
        self._partial = b""
        self._records = 0
        self._first = b""
        self._end_at: int | None = None  # the position of find's last record, once it came

    def feed(self, data: bytes) -> None:
        *records, self._partial = (self._partial + data).split(b"\0")
        if len(self._partial) > RECORD_BYTES_MAXIMUM:
            self.problem, self._partial = "find printed a record longer than any path", b""
        if records and not self._records:
            self._first = records[0]
        if self._end_at is None and COUNT_ENDS in records:
            self._end_at = self._records + records.index(COUNT_ENDS)
        self._records += len(records)
        self.files += records.count(b"f")
        for record in records:
            if record not in (b"f", COUNT_BEGINS, COUNT_ENDS):
                self._barrier(record)

    def incomplete(self) -> str:
        """Why the records read are not all that find printed ('' when they are): its first or
        its last record is missing, or the output stopped inside a record."""
        if self._first != COUNT_BEGINS:
            return "its first record is missing: the start of its output was lost"
        if self._end_at is None or self._partial:
            return "its last record is missing: its output was cut"
        if self._end_at != self._records - 1:
            return f"{self._records - 1 - self._end_at:,} records came after its last one"
        return ""

    def _barrier(self, record: bytes) -> None:
        uid, gid, mode, path = [*record[1:].split(b":", 3), b"", b"", b""][:4]
        numbers = (uid, gid, mode)
        if not record.startswith(b"d") or not all(number.isdigit() for number in numbers):
            self.problem = self.problem or f"find printed an unexpected record: {record[:80]!r}"
        elif len(self.barriers) >= BARRIERS_MAXIMUM:
            self.problem = (
                f"more than {BARRIERS_MAXIMUM} directories can only be read as their owners"
            )
        else:
            self.barriers.append(Barrier(int(uid), int(gid), int(mode, 8), path))


@dataclass(frozen=True)
class Barrier:
    """A directory find could not read or search, as it reported it."""

    uid: int
    gid: int
    mode: int
    path: bytes  # relative to find's starting point ('' for the starting point itself)

    @property
    def owner_may_enter(self) -> bool:
        return self.mode & 0o500 == 0o500


def printable(data: bytes | str) -> str:
    """Output as text a terminal cannot be fooled by: no control characters but \\n and \\t."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    return text.replace("\r\n", "\n").replace("\r", "\n").translate(_CONTROL)


def signal_name(exit_code: int) -> str:
    """SIGKILL for 137 and the like: a shell's way of saying that a signal ended the process."""
    with suppress(ValueError):
        if 128 < exit_code < 128 + 65:
            return signal.Signals(exit_code - 128).name
    return ""


def seconds_text(seconds: int) -> str:
    return f"{seconds}s" if seconds < 60 else format_duration(seconds)


def memory_text(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2)):
        if size % factor == 0:
            return f"{size // factor} {unit}"
    return format_size(size)

"""restic's words, read as untrusted data: one-line sentences, damage, and faults of the host.

restic's output is untrusted (a hostile repository chooses file names and can make restic print
without end): it is turned into one-line sentences without JSON, Go stack frames or terminal
control sequences, and only a bounded part of it is kept. Both restic 0.14 and 0.18 are read:
their messages and exit codes differ. A failure of the host (no space left, permission denied
in staging) is a HostError, never a verdict on the backup.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from restore_tests.errors import DamagedBackup, HostError, RestoreTestsError, SourceError
from restore_tests.sources.base import FetchProgress

# Fragments of restic's messages, oldest and newest versions, mapped to one-line reasons.
_WRONG_PASSWORD = ("wrong password", "no key found")
_NO_REPOSITORY = (
    "repository does not exist",
    "is there a repository at the following location",
    "nosuchbucket",
    "specified bucket does not exist",
)
_NO_BUCKET = ("nosuchbucket", "specified bucket does not exist")
_NO_CONFIG = ("unable to open config file: stat /",)
_REFUSED = (
    "signaturedoesnotmatch",
    "signature we calculated does not match",
    "invalidaccesskeyid",
    "access key id you provided does not exist",
    "access denied",
    "forbidden",
)
_UNREACHABLE = (
    "connection refused",
    "no such host",
    "i/o timeout",
    "network is unreachable",
    "no route to host",
    "connection reset",
    "context deadline exceeded",
)
_LOCKED = ("already locked", "repository is locked")
_PERMISSION = ("permission denied", "operation not permitted")
# Failures of the host wherever they happen (restic only reads the repository, with --no-lock)...
_HOST_CAUSES = (
    "no space left on device",
    "disk quota exceeded",
    "too many open files",
    "read-only file system",
    "cannot allocate memory",
)
# ...and those that are the host's only when they happen in restore-tests' own folders (a
# repository file that cannot be read is a problem of the source).
_HOST_CAUSES_IN_STAGING = (*_PERMISSION, "input/output error")
_DAMAGE = (
    "unknown blob",
    "not found in index",
    "could not be loaded",
    "ciphertext verification failed",
    "checksum mismatch",
    "invalid data returned",
    "unexpected content",
    "invalid file size",
    "no such file or directory",
    "not found",
    "load(<data/",
    "is damaged",
    "decrypting blob",
)
_IGNORING = re.compile(r"ignoring error for (/.*?): (.*)$")
_UNREADABLE_SNAPSHOT = re.compile(r"(?:could not|failed to) load snapshot ([0-9a-f]+): (.*)")
_ERROR_COUNT = re.compile(r"^Fatal: There were \d+ errors?$")
_ABORT = re.compile(r"^(?:panic: |Unknown blob )")
_HINTS = ("Is there a repository at the following location?",)
_GO_SOURCE = re.compile(r"^\S+\.(?:go|s):\d+(?: \+0x[0-9a-f]+)?$")
_GO_RUNTIME = re.compile(
    r"^(?:goroutine \d+ \[.*\]:|created by \S+.*|\[signal .*\]|exit status \d+)$"
)
# Terminal escape sequences (CSI, OSC, others) and control characters: restic echoes names chosen
# by whoever made the backup, and a reason is printed on the operator's terminal.
_CONTROL = re.compile(
    r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]"
    r"|[\x00-\x08\x0b-\x1f\x7f\u0080-\u009f]"
)
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f\u0080-\u009f]")
_JSON_MESSAGE = re.compile(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)')
_FULL_ID = re.compile(r"(?<![/\w])([0-9a-f]{8})[0-9a-f]{56}(?![\w])")
_REPOSITORY_FILE = re.compile(
    r"(?:load|loadraw|readfull)\(? ?<(data|index|snapshot|key|lock|config)/([0-9a-f]+)>"
    r"(?:, \d+, \d+)?\)?(?: returned error| failed)?: (.*)",
    re.IGNORECASE,
)
_REPOSITORY_FILE_NAMES = {
    "data": "pack",
    "index": "index file",
    "snapshot": "snapshot file",
    "key": "key file",
    "lock": "lock file",
    "config": "config file",
}
_CORRUPT_BLOB = re.compile(
    r"decrypting blob <?(?:(data|tree)/)?([0-9a-f]{8})[0-9a-f]*>?(?: from ([0-9a-f]{8})[0-9a-f]*)?"
    r" failed: (.*)"
)
_REWRITES = (
    (re.compile(r"^\S+\(.*?\) (?:returned error|failed), retrying after [0-9.]+\w*: "), ""),
    (
        re.compile(r"unknown blob ([0-9a-f]{8})[0-9a-f]*", re.IGNORECASE),
        r"blob \1 is missing from the index",
    ),
    (
        re.compile(r"blob ([0-9a-f]{8})[0-9a-f]* not found in index"),
        r"blob \1 is missing from the index",
    ),
    (
        re.compile(r"tree ([0-9a-f]{8})[0-9a-f]* (?:could not be loaded|not found)"),
        r"tree \1 could not be loaded",
    ),
    (
        re.compile(r"\bid ([0-9a-f]{8})[0-9a-f]* not found in repository"),
        r"blob \1 is missing from the repository",
    ),
)
REASON_LIMIT = 300  # characters of a reason: one line, readable in a table and a history row
WORDS_LIMIT = 200  # characters of restic's own words inside a reason
PATH_LIMIT = 1024  # characters of a restored path kept (a hostile snapshot's names are long)
DAMAGED_KEPT = 100  # damaged paths kept with their reason; the rest are only counted
DAMAGED_COUNTED = 100_000  # distinct damaged paths counted exactly; beyond, a lower bound
_VERIFY_PROBLEM = re.compile(r"(?:Unexpected content in|Invalid file size for) (/.*?)(?::|$)")


@dataclass
class RestoreOutcome:
    """What restic said while restoring: the paths it could not restore (the first DAMAGED_KEPT
    with their reason, and how many in all), and a failure of the host if there was one.

    A hostile repository can damage millions of files: memory stays bounded, so beyond
    DAMAGED_COUNTED distinct paths damaged_count is a lower bound (damaged_count_exact false).
    """

    damaged: dict[str, str] = field(default_factory=dict)
    damaged_count: int = 0
    damaged_count_exact: bool = True
    files_restored: int | None = None
    bytes_restored: int | None = None
    host_problem: str | None = None  # one line; the restore proves nothing about the backup
    _seen: set[bytes] = field(default_factory=set, repr=False)

    def add_damage(self, path: str, reason: str) -> None:
        """Record a path restic could not restore (the first reason given for it is kept).

        The path is kept as it may be shown: control characters (a hostile file name can hold
        terminal escape sequences) become "?".
        """
        path = shown_path(path)
        digest = hashlib.blake2b(path.encode("utf-8", "replace"), digest_size=16).digest()
        if digest in self._seen:
            return
        if len(self._seen) >= DAMAGED_COUNTED:
            self.damaged_count_exact = False
            return
        self._seen.add(digest)
        self.damaged_count += 1
        if len(self.damaged) < DAMAGED_KEPT:
            self.damaged[path] = reason


class RestoreReader:
    """Reads restore's output line by line: progress, per-file errors, the summary.

    Per-file errors are damage unless their cause is the host (host_folders: restore-tests' own
    folders, named as a reason shows them); then the first one is kept and the rest ignored
    (a full disk makes every later file fail too).
    """

    def __init__(
        self,
        host_folders: dict[str, str],
        on_progress: Callable[[FetchProgress], None] | None = None,
        on_restored_file: Callable[[str], None] | None = None,
    ) -> None:
        self.outcome = RestoreOutcome()
        self.host_folders = host_folders
        self.on_progress = on_progress
        self.on_restored_file = on_restored_file
        self._lock = threading.Lock()  # stdout and stderr are read by two threads

    def read(self, line: str) -> None:
        with self._lock:
            self._read(line.strip())

    def _read(self, text: str) -> None:
        if text.startswith("{"):
            self._read_json(text)
            return
        match = _IGNORING.search(text)
        if match:
            self._file_error(match[1], match[2])
            return
        match = _VERIFY_PROBLEM.search(text)
        if match:
            self.outcome.add_damage(match[1], "content differs from the repository")

    def should_stop(self, line: str) -> bool:
        """Stop restic once the host failed (nothing more can be learnt) or on a hopeless retry."""
        return self.outcome.host_problem is not None or is_hopeless_retry(line)

    def _read_json(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        kind = message.get("message_type")
        if kind == "verbose_status":
            item, told = message.get("item"), self.on_restored_file
            if message.get("action") == "restored" and isinstance(item, str) and told:
                told(item)
            return
        if kind in ("status", "summary") and self.on_progress is not None:
            done = _count(message, "bytes_restored") or 0
            self.on_progress(FetchProgress(done, _count(message, "total_bytes")))
        if kind == "error":
            item = message.get("item")
            self._file_error(item if isinstance(item, str) else "", _error_text(message))
        elif kind == "summary":
            self.outcome.files_restored = _count(message, "files_restored")
            self.outcome.bytes_restored = _count(message, "bytes_restored")

    def _file_error(self, item: str, message: str) -> None:
        words = _printable(message)
        problem = host_problem(words, self.host_folders, item)
        if problem is not None:
            if self.outcome.host_problem is None:
                self.outcome.host_problem = problem
            return
        if self.outcome.host_problem is None:
            self.outcome.add_damage(item or "(repository)", readable(words, WORDS_LIMIT))


def is_hopeless_retry(line: str) -> bool:
    """A retry notice for an error that retrying cannot heal (wrong credentials, no bucket,
    nothing listening): restic 0.18 would retry it for 15 minutes."""
    lowered = line.lower()
    return "retrying" in lowered and _mentions(lowered, _REFUSED + _UNREACHABLE + _NO_BUCKET)


def _mentions(text: str, fragments: tuple[str, ...]) -> bool:
    return any(fragment in text for fragment in fragments)


def explain_failure(
    stderr: str,
    returncode: int | None,
    location: str,
    snapshot_id: str | None = None,
    host_folders: dict[str, str] | None = None,
) -> RestoreTestsError:
    """One line saying why restic failed, from its exit code and its words.

    The host comes first (a full disk is never a verdict on the backup). Credentials and
    reachability come before "no repository": restic adds "Is there a repository at the
    following location?" to every failure to open the config file.
    """
    lines = restic_lines(stderr)
    text = "\n".join(lines).lower()
    for line in lines:
        problem = host_problem(line, host_folders or {})
        if problem is not None:
            return HostError(problem)
    if returncode == 12 or _mentions(text, _WRONG_PASSWORD):
        return SourceError(f"restic: wrong password for repository {location}")
    if _mentions(text, _REFUSED):
        return SourceError(f"restic: the S3 server refused the credentials for {location}")
    if _mentions(text, _UNREACHABLE):
        words = _first_line_with(lines, _UNREACHABLE)
        return SourceError(fitted(f"restic: cannot reach the repository {location} (", words, ")"))
    if returncode == 11 or _mentions(text, _LOCKED):
        return SourceError(
            f"restic: repository {location} is locked by another process "
            "(restic unlock removes stale locks)"
        )
    return _explain_repository_failure(lines, text, returncode, location, snapshot_id)


def _explain_repository_failure(
    lines: list[str], text: str, returncode: int | None, location: str, snapshot_id: str | None
) -> RestoreTestsError:
    if _mentions(text, _PERMISSION):
        words = _first_line_with(lines, _PERMISSION)
        prefix = f"restic: permission denied reading the repository {location} ("
        return SourceError(fitted(prefix, words, ")"))
    if returncode == 10 or _mentions(text, _NO_REPOSITORY) or _mentions(text, _NO_CONFIG):
        return SourceError(f"restic: no repository at {location}")
    if _mentions(text, _DAMAGE):
        suffix = f" (snapshot {snapshot_id})" if snapshot_id else ""
        prefix = f"restic: the repository {location} is damaged: "
        return DamagedBackup(fitted(prefix, _fatal_line(lines), suffix))
    return SourceError(fitted(f"restic failed on {location}: ", _fatal_line(lines)))


def host_problem(message: str, host_folders: dict[str, str], item: str = "") -> str | None:
    """The reason, when message (one of restic's) says the host failed, else None.

    "no space left on device" and its kind are the host's wherever they happen; "permission
    denied" only in restore-tests' own folders (reading a repository file is the source's).
    """
    lowered = message.lower()
    matching = [path for path in host_folders if path in message]
    folder = max(matching, key=len) if matching else None
    causes = _HOST_CAUSES + (_HOST_CAUSES_IN_STAGING if folder is not None else ())
    cause = next((cause for cause in causes if cause in lowered), None)
    if cause is None:
        return None
    where = f" in {host_folders[folder]} {folder}" if folder is not None else ""
    what = f" while restoring {_shortened(shown_path(item), 100)}" if item else ""
    return fitted(f"{cause}{where}{what} (restic: ", readable(message), ")")


def restic_lines(stderr: str) -> list[str]:
    """restic's stderr as its own words: JSON messages unwrapped (0.18's exit_error message
    becomes a "Fatal: " line, as 0.14 prints it), Go stack frames, terminal control sequences
    and blank lines removed."""
    lines: list[str] = []
    for raw in stderr.splitlines():
        lines.extend(_unwrapped(raw.strip()))
    printable = [_printable(line) for line in lines]
    return _without_stack([line for line in printable if line])


def readable(message: str, limit: int = WORDS_LIMIT) -> str:
    """restic's words as a short sentence: well-known damage said plainly, ids shortened."""
    text = message.removeprefix("Fatal: ")
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    text = _REPOSITORY_FILE.sub(_repository_file_sentence, text)
    text = _CORRUPT_BLOB.sub(_corrupt_blob_sentence, text)
    return _shortened(_FULL_ID.sub(r"\1", text), limit)


def fitted(prefix: str, words: str, suffix: str = "", limit: int = REASON_LIMIT) -> str:
    """prefix + words + suffix in at most limit characters (words are shortened, never the rest)."""
    room = max(limit - len(prefix) - len(suffix), 40)
    return f"{prefix}{_shortened(words, room)}{suffix}"


def _shortened(text: str, limit: int) -> str:
    """One line of at most limit characters; a longer one loses its middle (the end of an error
    says its cause: "no space left on device")."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    tail = (limit - 3) // 3
    return text[: limit - 3 - tail] + "..." + text[-tail:]


def _printable(text: str) -> str:
    return _CONTROL.sub("", text)


def shown_path(path: str) -> str:
    """A path of the snapshot as it may be shown: no control character, bounded."""
    return _CONTROL_CHARACTER.sub("?", path[:PATH_LIMIT])


def _unwrapped(line: str) -> list[str]:
    """A line of restic's stderr as lines of text; a JSON message gives its message's lines."""
    if not line.startswith("{"):
        return [line]
    try:
        message = json.loads(line)
    except json.JSONDecodeError:
        return _cut_json_message(line)
    if not isinstance(message, dict):
        return []
    kind = message.get("message_type")
    if kind == "exit_error":
        words = message.get("message")
        lines = words.splitlines() if isinstance(words, str) else []
        if lines and not lines[0].startswith("Fatal: "):
            lines[0] = "Fatal: " + lines[0]
        return lines
    if kind == "error":
        return _error_text(message).splitlines()
    return []


def _cut_json_message(line: str) -> list[str]:
    """The message of a JSON line that was cut (too long) or is malformed, if it shows one."""
    match = _JSON_MESSAGE.search(line)
    if not match:
        return []
    try:
        words = json.loads(f'"{match[1]}"')
    except json.JSONDecodeError:
        words = match[1]
    return str(words).splitlines()


def _error_text(message: dict[str, Any]) -> str:
    error = message.get("error")
    words = error.get("message") if isinstance(error, dict) else None
    return words if isinstance(words, str) else "error"


def _without_stack(lines: list[str]) -> list[str]:
    """Lines without Go stack frames: a function line is the one before a file.go:N line."""
    kept = []
    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if _GO_SOURCE.match(line) or _GO_SOURCE.match(following) or _GO_RUNTIME.match(line):
            continue
        kept.append(line)
    return kept


def _fatal_line(lines: list[str]) -> str:
    """The line that says why restic stopped: an abort (a panic, "Unknown blob"), else its
    last Fatal: line that is more than a count of earlier errors, else its last words."""
    aborts = [line for line in lines if _ABORT.match(line)]
    if aborts:
        return readable(aborts[-1].removeprefix("panic: "))
    fatal = [line for line in lines if line.startswith("Fatal: ")]
    meaningful = [line for line in fatal if not _ERROR_COUNT.match(line)]
    words = [line for line in lines if not line.startswith("Fatal: ") and line not in _HINTS]
    return readable((meaningful or words or fatal or ["no output"])[-1])


def _first_line_with(lines: list[str], fragments: tuple[str, ...]) -> str:
    for line in lines:
        if any(fragment in line.lower() for fragment in fragments):
            return readable(line)
    return ""


def says_fatal(stderr: str) -> bool:
    return "Fatal:" in stderr or '"exit_error"' in stderr


def ends_with_error_count(stderr: str) -> bool:
    """restic went through and then counted per-file errors (it did not abort)."""
    lines = restic_lines(stderr)
    fatal = [line for line in lines if line.startswith("Fatal: ")]
    aborted = any(_ABORT.match(line) for line in lines)
    return bool(fatal) and _ERROR_COUNT.match(fatal[-1]) is not None and not aborted


def refuse_unreadable_snapshots(stderr: str, location: str) -> None:
    """restic lists the snapshots it can read and exits 0: an unreadable one is damage (else
    "latest" would silently be an older snapshot)."""
    for line in restic_lines(stderr):
        match = _UNREADABLE_SNAPSHOT.search(line)
        if match:
            words = match[2].rsplit(": ", 1)[-1]  # the cause, after restic's "load <...>: "
            raise DamagedBackup(
                fitted(
                    f"restic: the repository {location} is damaged: snapshot {match[1][:8]} "
                    "cannot be read (",
                    words,
                    ")",
                )
            )


def _repository_file_sentence(match: re.Match[str]) -> str:
    name = _REPOSITORY_FILE_NAMES[match[1].lower()]
    return f"{name} {match[2][:10]} cannot be read ({match[3]})"


def _corrupt_blob_sentence(match: re.Match[str]) -> str:
    kind = f"{match[1]} blob" if match[1] else "blob"
    pack = f" in pack {match[3]}" if match[3] else ""
    return f"{kind} {match[2]}{pack} is corrupt ({match[4]})"


def _count(message: dict[str, Any], name: str) -> int | None:
    value = message.get(name)
    counted = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if counted else None

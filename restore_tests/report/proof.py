"""What a passing result proved, in a few words, read from its checks.

"1,204 files hashed (3.1 GiB), 2 commands passed", "3 queries passed, integrity checked",
"image checked, 2 files read in the guest, booted". Only passed checks count, and a word that
claims a comparison ("hashed", "matched", "checked") is said only of a check that proved data:
a manifest of empty files, an image format qemu-img cannot check or a query that proves nothing
never reads as a proof. The record is the dict of report/records.py (a fresh result or a history
row), so the terminal, the history and the HTML report say the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from restore_tests.timing import format_size

Checks = list[dict[str, Any]]
_HASHED = re.compile(r"^([\d,]+) match(?: \(([\d,]+) bytes hashed\))?")
_DIGEST_SIZE = re.compile(r"\(([\d,]+) bytes\)")


def proven(record: dict[str, Any]) -> str:
    """The phrase for a record's passed checks; what was restored when no check says more."""
    passed = [check for check in record.get("checks") or [] if check.get("status") == "passed"]
    phrases = [phrase for describe in _PHRASES if (phrase := describe(passed))]
    return ", ".join(phrases) or _restored(record)


def _proofs(checks: Checks, matches: Callable[[str], bool]) -> Checks:
    return [check for check in checks if check.get("proves_data") and matches(check["name"])]


def _counted(count: int, thing: str, plural: str = "") -> str:
    return f"{count:,} {thing if count == 1 else plural or thing + 's'}"


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _hashed(checks: Checks) -> str:
    """Files hashed on the host against a manifest or the scenario's checksums."""
    found = _proofs(checks, lambda name: name.startswith("manifest ") or name == "checksums")
    matches = [_HASHED.match(check.get("observed") or "") for check in found]
    counted = [match for match in matches if match]
    if not counted:
        return ""
    files = sum(_number(match[1]) for match in counted)
    sizes = [match[2] for match in counted]
    size = "" if None in sizes else f" ({format_size(sum(map(_number, sizes)))})"
    return f"{_counted(files, 'file')} hashed{size}"


def _digest(checks: Checks) -> str:
    """The fetched object or file against its declared sha256 (local and s3 sources)."""
    found = _proofs(checks, lambda name: name == "digest")
    if not found:
        return ""
    size = _DIGEST_SIZE.search(found[0].get("observed") or "")
    return "sha256 of the backup matched" + (f" ({format_size(_number(size[1]))})" if size else "")


def _restic_verify(checks: Checks) -> str:
    return "restic --verify passed" if _proofs(checks, lambda n: n == "restic --verify") else ""


def _image(checks: Checks) -> str:
    if _proofs(checks, lambda name: name.startswith("qemu-img check")):
        return "image checked"
    return "image opened" if any(check["name"] == "image" for check in checks) else ""


def _guest_files(checks: Checks) -> str:
    read = [check for check in checks if check["name"].startswith("guest file ")]
    if not read:
        return ""
    matched = [check for check in read if check.get("proves_data")]
    hashes = f" ({_counted(len(matched), 'sha256', 'sha256s')} matched)" if matched else ""
    return f"{_counted(len(read), 'file')} read in the guest{hashes}"


def _booted(checks: Checks) -> str:
    return "booted" if _proofs(checks, lambda name: name == "boot") else ""


def _queries(checks: Checks) -> str:
    count = sum(1 for check in checks if check["name"].startswith("query "))
    return f"{_counted(count, 'query', 'queries')} passed" if count else ""


def _integrity(checks: Checks) -> str:
    return "integrity checked" if _proofs(checks, lambda n: n.startswith("integrity")) else ""


def _tables(checks: Checks) -> str:
    found = _proofs(checks, lambda name: name == "tables")
    observed = (found[0].get("observed") or "") if found else ""
    return f"{_counted(_number(observed), 'table')} found" if observed.isdigit() else ""


def _expected(checks: Checks) -> str:
    """The scenario's expect: paths present, and minimums above zero."""
    phrases = []
    for check in checks:
        expected = (check.get("expected") or "").removeprefix(">= ")
        if check["name"] == "expected paths" and expected.isdigit():
            phrases.append(f"{_counted(int(expected), 'expected path')} present")
        elif check["name"] == "min files" and check.get("proves_data") and expected.isdigit():
            phrases.append(f"at least {_counted(int(expected), 'file')}")
        elif check["name"] == "min bytes" and check.get("proves_data") and expected.isdigit():
            phrases.append(f"at least {format_size(int(expected))}")
    return ", ".join(phrases)


def _commands(checks: Checks) -> str:
    count = sum(1 for check in checks if check["name"].startswith("sandbox: "))
    return f"{_counted(count, 'command')} passed" if count else ""


def _restored(record: dict[str, Any]) -> str:
    """What was restored, when no check says more (an older history row): no proof claimed."""
    files, size = record.get("files"), record.get("bytes")
    if files is None:
        return ""
    return _counted(files, "file") + " restored" + (f" ({format_size(size)})" if size else "")


_PHRASES: tuple[Callable[[Checks], str], ...] = (
    _hashed,
    _digest,
    _restic_verify,
    _image,
    _guest_files,
    _booted,
    _queries,
    _integrity,
    _tables,
    _expected,
    _commands,
)

"""The PASS line says what was proven, per kind, from the record's checks (report/proof.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from restore_tests.checksums import Verification
from restore_tests.report.proof import proven
from restore_tests.report.records import CHECK_FIELDS
from restore_tests.results import Check
from restore_tests.sources.plain import digest_check
from runners.files import _hash_check

GIB = 1024**3


def as_record(*checks: Check, **fields: Any) -> dict[str, Any]:
    """A record as report/records.py makes it, with these checks."""
    rendered = [{name: getattr(check, name) for name in CHECK_FIELDS} for check in checks]
    return {"status": "pass", "files": None, "bytes": None, "checks": rendered, **fields}


def hash_check(files: int, size: int, name: str = "manifest /data/SHA256SUMS") -> Check:
    """The files runner's own check, as it makes it after hashing."""
    context = SimpleNamespace(hashed_files=None, hashed_bytes=None)
    verification = Verification(checked=files, matched=files, bytes_hashed=size)
    return _hash_check(name, "SHA256SUMS", verification, context, [])  # type: ignore[arg-type]


def command(argv: str, passed: bool = True) -> Check:
    make = Check.passed if passed else Check.error
    return make("sandbox: " + argv, **({} if passed else {"reason": "exit 3"}))


def test_files_hashed_against_a_manifest_say_how_many_and_how_much() -> None:
    record = as_record(
        Check.passed("restic restore", observed="no errors"),
        Check.passed("restored files", observed="1,205 files, 3.1 GiB"),
        hash_check(1204, int(3.1 * GIB)),
        Check.passed("sandbox file count", expected="1205", observed="1205"),
        command("test -s /restore/data/ledger.db"),
        command("grep -q total /restore/data/report.csv"),
    )

    assert proven(record) == "1,204 files hashed (3.1 GiB), 2 commands passed"


def test_a_manifest_and_checksums_are_added_up() -> None:
    record = as_record(hash_check(10, 1024**2), hash_check(2, 1024**2, name="checksums"))

    assert proven(record) == "12 files hashed (2.0 MiB)"


def test_one_file_is_singular() -> None:
    assert proven(as_record(hash_check(1, 2048))) == "1 file hashed (2.0 KiB)"


def test_a_manifest_of_empty_files_is_not_said_to_be_hashed() -> None:
    record = as_record(hash_check(3, 0), command("true"), files=3, bytes=0)

    assert proven(record) == "1 command passed"
    assert "hash" not in proven(record)


def test_a_history_row_of_an_older_release_still_reads_its_count() -> None:
    old = Check.passed(
        "manifest /data/SHA256SUMS",
        expected="44 files match",
        observed="44 match",
        proves_data=True,
    )

    assert proven(as_record(old)) == "44 files hashed"


def test_a_backup_digest_says_it_matched_and_the_size_read() -> None:
    digest = digest_check("erp.tar.zst", "ab" * 32, "ab" * 32, 5 * 1024**2)
    unpack = Check.passed("unpack", observed="12 files, 5.0 MiB")

    assert proven(as_record(digest, unpack, hash_check(12, 1024))) == (
        "12 files hashed (1.0 KiB), sha256 of the backup matched (5.0 MiB)"
    )


def test_an_undeclared_digest_is_computed_but_proves_nothing() -> None:
    record = as_record(digest_check("erp.tar.zst", None, "ab" * 32, 100), files=1, bytes=100)

    assert proven(record) == "1 file restored (100 B)"


def test_restic_verify_is_named_only_when_it_proved_something() -> None:
    proving = Check.passed("restic --verify", observed="re-read", proves_data=True)
    empty = Check.passed("restic --verify", observed="(nothing restored: it proves nothing)")

    assert proven(as_record(proving)) == "restic --verify passed"
    assert proven(as_record(empty, files=0, bytes=0)) == "0 files restored"


def test_a_database_says_its_queries_and_integrity() -> None:
    record = as_record(
        Check.passed("server ready", observed="answered 0.90s after its container started"),
        Check.passed("load", observed="a pg_dump custom archive"),
        Check.passed("integrity (pg_amcheck)", observed="no corruption", proves_data=True),
        Check.passed("query 1: SELECT count(*) FROM invoices", observed="1204", proves_data=True),
        Check.passed("query 2: SELECT max(created) FROM invoices", proves_data=True),
        Check.passed("query 3: SELECT 1", detail=">= 0 proves nothing"),
    )

    assert proven(record) == "3 queries passed, integrity checked"


def test_a_table_count_is_said_with_its_number() -> None:
    tables = Check.passed("tables", expected=">= 3", observed="12", proves_data=True)

    assert proven(as_record(tables)) == "12 tables found"


def test_an_integrity_check_over_no_table_is_not_said_to_have_checked() -> None:
    empty = Check.passed("integrity (mariadb-check)", observed="0 tables OK")
    query = Check.passed("query 1: SELECT 1", proves_data=True)

    assert proven(as_record(empty, query)) == "1 query passed"


def test_a_vm_image_says_it_was_checked_read_and_booted() -> None:
    record = as_record(
        Check.passed("image", observed="qcow2, virtual size 32.0 MiB, 20.0 MiB allocated"),
        Check.passed("qemu-img check (qcow2)", observed="no corruption, no leak", proves_data=True),
        Check.passed("partitions", expected=">= 1", observed="1 (1: ext4)"),
        Check.passed("guest file /etc/hostname", expected="ab" * 32, proves_data=True),
        Check.passed("guest file /var/lib/erp/config.ini", observed="present in partition 1"),
        Check.passed("boot", observed="'login:' after 6.5s", proves_data=True),
    )

    assert proven(record) == ("image checked, 2 files read in the guest (1 sha256 matched), booted")


def test_a_raw_image_that_qemu_img_cannot_check_is_only_opened() -> None:
    record = as_record(
        Check.passed("image", observed="raw, virtual size 32.0 MiB"),
        Check.passed("qemu-img check (raw)", observed="a raw image has no metadata"),
        Check.passed("boot", observed="'login:' after 6.5s", proves_data=True),
    )

    assert proven(record) == "image opened, booted"


def test_expectations_of_the_files_kind_are_listed() -> None:
    record = as_record(
        Check.passed("expected paths", expected="3", observed="3"),
        Check.passed("min files", expected=">= 10", observed="1205", proves_data=True),
        Check.passed("min bytes", expected=">= 1048576", observed="99999999", proves_data=True),
    )

    assert proven(record) == "3 expected paths present, at least 10 files, at least 1.0 MiB"


def test_a_minimum_of_zero_proves_nothing_and_is_not_said() -> None:
    record = as_record(Check.passed("min files", expected=">= 0", observed="5"), files=5)

    assert proven(record) == "5 files restored"


def test_failed_checks_are_never_counted() -> None:
    record = as_record(
        hash_check(5, 5000),
        command("true"),
        command("false", passed=False),
    )

    assert proven(record) == "5 files hashed (4.9 KiB), 1 command passed"


def test_a_record_without_checks_or_counts_says_nothing() -> None:
    assert proven({"status": "pass", "checks": []}) == ""

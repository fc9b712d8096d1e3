"""Hashing restored files while the restore runs (prehash.EarlyDigests): only a head start,
never a verdict of its own (real files in tmp_path)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from restore_tests import checksums
from restore_tests.prehash import EarlyDigests
from restore_tests.restored import walk
from restore_tests.timing import PhaseClock


def put(root: Path, name: str, data: bytes) -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def hashed_early(root: Path, names: list[str], below: str = "/") -> EarlyDigests:
    """Tell an early hasher about each name, as restic's reader would, and wait for it."""
    with EarlyDigests(root, below, lambda: False) as early:
        for name in names:
            early.restored("/" + name)
        early.finish()
    return early


def test_files_named_by_the_source_are_hashed_and_matched_by_size_and_digest(tmp_path):
    digest = put(tmp_path, "data/a.txt", b"alpha")

    early = hashed_early(tmp_path, ["data/a.txt"])

    assert (early.files, early.bytes) == (1, 5)
    assert early.matches("data/a.txt", 5, digest)
    assert not early.matches("data/a.txt", 6, digest)
    assert not early.matches("data/a.txt", 5, "0" * 64)
    assert not early.matches("data/b.txt", 5, digest)


def test_only_files_below_the_kinds_folder_are_hashed(tmp_path):
    put(tmp_path, "data/a.txt", b"alpha")
    put(tmp_path, "other/b.txt", b"beta")

    early = hashed_early(tmp_path, ["data/a.txt", "other/b.txt"], below="/data")

    assert early.files == 1


def test_a_file_behind_a_linked_folder_is_not_hashed_early(tmp_path):
    outside = tmp_path / "outside"
    put(outside, "secret.txt", b"host data")
    root = tmp_path / "root"
    root.mkdir()
    (root / "data").symlink_to(outside)

    early = hashed_early(root, ["data/secret.txt"])

    assert early.files == 0


def test_a_link_a_fifo_or_a_folder_named_by_the_source_is_never_opened(tmp_path):
    put(tmp_path, "target.txt", b"t")
    (tmp_path / "link.txt").symlink_to(tmp_path / "target.txt")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()

    early = hashed_early(tmp_path, ["link.txt", "pipe", "folder", "../escape", "a/./b"])

    assert early.files == 0


def test_a_path_that_climbs_out_of_the_restore_root_is_never_opened_even_when_it_exists(tmp_path):
    put(tmp_path, "escape.txt", b"host data")
    root = tmp_path / "root"
    put(root, "sub/inside.txt", b"restored")

    early = hashed_early(root, ["../escape.txt", "sub/../../escape.txt", "sub/inside.txt"])

    assert early.files == 1  # only the file inside
    assert early.matches("sub/inside.txt", 8, hashlib.sha256(b"restored").hexdigest())
    assert not early.matches("../escape.txt", 9, hashlib.sha256(b"host data").hexdigest())


def test_a_path_named_twice_is_doubted_and_left_for_the_verification(tmp_path):
    digest = put(tmp_path, "a.txt", b"alpha")

    early = hashed_early(tmp_path, ["a.txt", "a.txt"])

    assert not early.matches("a.txt", 5, digest)


def test_an_early_digest_of_a_file_that_changed_since_is_hashed_again_not_called_a_difference(
    tmp_path,
):
    put(tmp_path, "a.txt", b"half")
    early = hashed_early(tmp_path, ["a.txt"])
    digest = put(tmp_path, "a.txt", b"whole file")

    result = checksums.verify(walk(tmp_path), [("a.txt", digest)], early=early)

    assert (result.ok, result.matched, result.matched_early, result.differing) == (True, 1, 0, [])


def test_a_damaged_file_hashed_early_is_still_a_difference(tmp_path):
    put(tmp_path, "a.txt", b"\0" * 8)
    early = hashed_early(tmp_path, ["a.txt"])

    result = checksums.verify(
        walk(tmp_path), [("a.txt", hashlib.sha256(b"original").hexdigest())], early=early
    )

    assert result.differing == ["a.txt"] and not result.ok


def test_early_digests_are_counted_as_hashed_bytes(tmp_path):
    digests = {f"d/{n}.txt": put(tmp_path, f"d/{n}.txt", b"x" * n) for n in range(1, 40)}
    early = hashed_early(tmp_path, list(digests))

    result = checksums.verify(walk(tmp_path), list(digests.items()), early=early)

    assert result.ok and result.matched_early == 39
    assert result.bytes_hashed == sum(range(1, 40))


def test_a_stopped_hasher_drains_what_it_is_told_without_hashing(tmp_path):
    put(tmp_path, "a.txt", b"alpha")
    with EarlyDigests(tmp_path, "/", lambda: True) as early:
        for _ in range(1000):
            early.restored("/a.txt")
    assert early.files == 0


def test_the_measured_rto_counts_overlapping_phases_once_and_not_the_gaps_between_them():
    clock = PhaseClock()
    clock.spans = {
        "sandbox": (0.1, 0.5),  # started while selecting
        "select": (0.1, 0.9),
        "space": (0.9, 2.0),  # waiting for disk space
        "fetch": (2.0, 5.0),
        "load": (5.0, 5.5),
        "verify": (5.5, 6.0),
    }

    assert clock.measured_rto() == pytest.approx(0.4 + 4.0)

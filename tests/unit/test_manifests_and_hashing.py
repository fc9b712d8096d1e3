"""sha256sum manifests and the hashing of restored files (real files in tmp_path)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from restore_tests import checksums
from restore_tests.checksums import ManifestEntry, Verification, parse_manifest
from restore_tests.errors import Interrupted
from restore_tests.restored import walk

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(root: Path, expected: list[tuple[str, str]], workers: int | None = None) -> Verification:
    """Hash as the runner does: over one walk of the restored tree."""
    return checksums.verify(walk(root), expected, workers)


def put(root: Path, name: str, data: bytes) -> str:
    """Write a file below root and return its sha256."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha256(data)


# -- parsing manifests ------------------------------------------------------------------------


def test_a_manifest_in_text_and_binary_form_is_parsed_with_line_numbers() -> None:
    manifest = parse_manifest(f"{DIGEST_A}  ledger.xlsx\n{DIGEST_B.upper()} *sub/photo.jpg\n")

    assert manifest.entries == [
        ManifestEntry("ledger.xlsx", DIGEST_A),
        ManifestEntry("sub/photo.jpg", DIGEST_B),
    ]
    assert manifest.malformed_lines == []


def test_a_name_with_spaces_is_kept_whole() -> None:
    manifest = parse_manifest(f"{DIGEST_A}  annual report 2024.pdf\n")

    assert [entry.path for entry in manifest.entries] == ["annual report 2024.pdf"]


def test_backslash_escaped_names_are_unescaped_as_sha256sum_writes_them() -> None:
    # sha256sum prefixes the line with a backslash and writes \\ for \ and \n for a newline.
    manifest = parse_manifest(f"\\{DIGEST_A}  back\\\\slash\\nnewline.txt\n")

    assert [entry.path for entry in manifest.entries] == ["back\\slash\nnewline.txt"]


def test_a_name_without_the_escape_prefix_keeps_its_backslashes() -> None:
    manifest = parse_manifest(f"{DIGEST_A}  dos\\path\\n.txt\n")

    assert [entry.path for entry in manifest.entries] == ["dos\\path\\n.txt"]


def test_a_carriage_return_escaped_by_sha256sum_is_unescaped() -> None:
    manifest = parse_manifest(f"\\{DIGEST_A}  a\\rb.txt\n")

    assert [entry.path for entry in manifest.entries] == ["a\rb.txt"]


def test_only_newlines_end_a_manifest_line() -> None:
    manifest = parse_manifest(f"{DIGEST_A}  a\fb.txt\n{DIGEST_B}  c.txt\n")

    assert manifest.entries == [
        ManifestEntry("a\fb.txt", DIGEST_A),
        ManifestEntry("c.txt", DIGEST_B),
    ]
    assert manifest.malformed_lines == []


def test_comments_and_blank_lines_are_skipped_without_shifting_line_numbers() -> None:
    manifest = parse_manifest(f"# made by the nightly job\n\n   \n{DIGEST_A}  ledger.xlsx\n")

    assert manifest.entries == [ManifestEntry("ledger.xlsx", DIGEST_A)]
    assert manifest.malformed_lines == []


def test_malformed_lines_are_reported_with_their_line_numbers() -> None:
    text = "\n".join(
        [
            f"{DIGEST_A}  good.txt",
            "not a checksum line",
            f"{DIGEST_A} single-space.txt",
            f"{DIGEST_A[:63]}  short-digest.txt",
            f"{'g' * 64}  not-hex.txt",
            f"{DIGEST_A}  ",
            f"{DIGEST_B}  also-good.txt",
        ]
    )

    manifest = parse_manifest(text)

    assert [entry.path for entry in manifest.entries] == ["good.txt", "also-good.txt"]
    assert manifest.malformed_lines == [2, 3, 4, 5, 6]


def test_an_empty_manifest_has_no_entries() -> None:
    assert parse_manifest("") == parse_manifest("# nothing\n\n")
    assert parse_manifest("").entries == []


# -- verifying files --------------------------------------------------------------------------


def test_files_that_match_their_digests_verify(tmp_path: Path) -> None:
    expected = [
        ("ledger.xlsx", put(tmp_path, "ledger.xlsx", b"ledger\n" * 100)),
        ("sub/photo.jpg", put(tmp_path, "sub/photo.jpg", b"\xff\xd8" * 2000)),
    ]

    result = verify(tmp_path, expected)

    assert (result.checked, result.matched, result.bytes_hashed) == (2, 2, 700 + 4000)
    assert (result.missing, result.differing, result.unreadable) == ([], [], [])
    assert result.ok


def test_a_zeroed_file_of_the_same_size_is_detected_as_differing(tmp_path: Path) -> None:
    # restic restores a damaged blob as zeros: same size, same mtime, wrong content.
    digest = put(tmp_path, "ledger.xlsx", b"ledger line\n" * 1000)
    (tmp_path / "ledger.xlsx").write_bytes(bytes(12000))

    result = verify(tmp_path, [("ledger.xlsx", digest)])

    assert result.differing == ["ledger.xlsx"]
    assert result.matched == 0
    assert not result.ok


def test_a_missing_file_is_reported_as_missing(tmp_path: Path) -> None:
    present = put(tmp_path, "present.txt", b"here\n")

    result = verify(tmp_path, [("present.txt", present), ("sub/gone.txt", DIGEST_A)])

    assert result.missing == ["sub/gone.txt"]
    assert (result.checked, result.matched) == (2, 1)
    assert not result.ok


def test_a_directory_named_in_a_manifest_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()

    result = verify(tmp_path, [("folder", DIGEST_A)])

    assert result.unreadable == ["folder (folder)"]
    assert not result.ok


@pytest.mark.parametrize("name", ["../outside.txt", "sub/../../outside.txt"])
def test_a_path_leading_out_of_the_root_is_unreadable_and_never_read(
    tmp_path: Path, name: str
) -> None:
    root = tmp_path / "restore"
    (root / "sub").mkdir(parents=True)
    digest = put(tmp_path, "outside.txt", b"not restored data\n")

    result = verify(root, [(name, digest)])

    # The digest is right, so the file was not read: reading it would have matched it.
    assert result.unreadable == [f"{name} (leads outside the restored data)"]
    assert (result.matched, result.bytes_hashed) == (0, 0)
    assert not result.ok


def test_an_absolute_path_means_the_restored_root_never_the_hosts(tmp_path: Path) -> None:
    root = tmp_path / "restore"
    root.mkdir()
    outside = tmp_path / "outside.txt"
    digest = put(tmp_path, "outside.txt", b"not restored data\n")

    result = verify(root, [(str(outside), digest)])

    assert result.missing == [str(outside)]
    assert (result.matched, result.bytes_hashed) == (0, 0)


@pytest.mark.parametrize("link_name", ["escape.txt", "sub/escape.txt"])
def test_an_absolute_symlink_is_resolved_inside_the_restored_root_not_on_the_host(
    tmp_path: Path, link_name: str
) -> None:
    root = tmp_path / "restore"
    (root / "sub").mkdir(parents=True)
    digest = put(tmp_path, "secret.txt", b"host file\n")
    (root / link_name).symlink_to(tmp_path / "secret.txt")

    result = verify(root, [(link_name, digest)])

    assert result.missing == [link_name]
    assert (result.matched, result.bytes_hashed) == (0, 0)


def test_an_absolute_symlink_reaches_the_restored_copy_of_its_target(tmp_path: Path) -> None:
    root = tmp_path / "restore"
    digest = put(root, "srv/share/v2/ledger.xlsx", b"restored ledger\n")
    (root / "srv/share/current").symlink_to("/srv/share/v2", target_is_directory=True)

    result = verify(root, [("srv/share/current/ledger.xlsx", digest)])

    assert result.ok


@pytest.mark.parametrize("target", ["../secret.txt", "sub/../../secret.txt", "../../secret.txt"])
def test_a_relative_symlink_climbing_out_of_the_root_is_never_followed(
    tmp_path: Path, target: str
) -> None:
    root = tmp_path / "restore"
    (root / "sub").mkdir(parents=True)
    digest = put(tmp_path, "secret.txt", b"host file\n")
    (root / "escape.txt").symlink_to(target)

    result = verify(root, [("escape.txt", digest)])

    assert result.unreadable == ["escape.txt (leads outside the restored data)"]
    assert (result.matched, result.bytes_hashed) == (0, 0)


def test_a_symlinked_folder_leading_out_of_the_root_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "restore"
    root.mkdir()
    digest = put(tmp_path, "etc/passwd", b"root:x:0:0\n")
    (root / "etc").symlink_to(tmp_path / "etc", target_is_directory=True)
    (root / "up").symlink_to("..", target_is_directory=True)

    result = verify(root, [("etc/passwd", digest), ("up/etc/passwd", digest)])

    assert result.missing == ["etc/passwd"]
    assert result.unreadable == ["up/etc/passwd (leads outside the restored data)"]
    assert result.bytes_hashed == 0


def test_a_symlink_that_stays_inside_the_root_is_followed(tmp_path: Path) -> None:
    digest = put(tmp_path, "real.txt", b"content\n")
    (tmp_path / "alias.txt").symlink_to("real.txt")

    result = verify(tmp_path, [("alias.txt", digest)])

    assert result.ok


def test_a_symlink_loop_is_reported_not_followed_forever(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")

    result = verify(tmp_path, [("a", DIGEST_A)])

    assert result.unreadable == ["a (too many levels of symbolic links)"]


def test_a_fifo_named_in_a_manifest_fails_at_once_and_is_never_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")

    result = verify(tmp_path, [("pipe", DIGEST_A)])

    assert result.unreadable == ["pipe (FIFO)"]
    assert not result.ok


def test_hashing_stops_when_the_run_is_cancelled(tmp_path: Path) -> None:
    expected = [(f"f{index}", put(tmp_path, f"f{index}", b"x" * 1000)) for index in range(5)]

    with pytest.raises(Interrupted):
        checksums.verify(walk(tmp_path), expected, cancelled=lambda: True)


def test_a_file_the_host_cannot_read_is_a_host_error_not_a_difference(tmp_path: Path) -> None:
    digest = put(tmp_path, "locked.txt", b"data\n")
    tree = walk(tmp_path)
    (tmp_path / "locked.txt").unlink()
    os.symlink("/nonexistent", tmp_path / "locked.txt")  # changed behind the walk: O_NOFOLLOW

    result = checksums.verify(tree, [("locked.txt", digest)])

    assert result.host_errors == ["locked.txt (Too many levels of symbolic links)"]
    assert result.differing == [] and not result.ok


def test_a_root_named_as_a_prefix_of_a_sibling_does_not_admit_the_sibling(tmp_path: Path) -> None:
    root = tmp_path / "restore"
    root.mkdir()
    digest = put(tmp_path, "restore-other/file.txt", b"sibling\n")

    result = verify(root, [("../restore-other/file.txt", digest)])

    assert result.unreadable == ["../restore-other/file.txt (leads outside the restored data)"]


def test_an_empty_list_of_expected_files_does_not_verify(tmp_path: Path) -> None:
    put(tmp_path, "ledger.xlsx", b"ledger\n")

    result = verify(tmp_path, [])

    assert result.checked == 0
    assert not result.ok


def test_parallel_workers_find_the_same_as_one_worker_on_many_files(tmp_path: Path) -> None:
    expected = []
    for index in range(300):
        name = f"folder-{index % 7}/file-{index:03}.bin"
        digest = put(tmp_path, name, os.urandom(index * 37))
        expected.append((name, digest))
    for index in range(0, 300, 50):  # damaged: zeros of the same size
        name = expected[index][0]
        (tmp_path / name).write_bytes(bytes(index * 37))
    for index in range(25, 300, 50):
        (tmp_path / expected[index][0]).unlink()
    expected.append(("../outside.txt", DIGEST_A))

    alone = verify(tmp_path, expected, workers=1)
    together = verify(tmp_path, expected, workers=8)

    assert together == alone
    assert (alone.checked, alone.matched, len(alone.missing), len(alone.unreadable)) == (
        301,
        289,
        6,
        1,
    )
    # File 0 is empty, so its zeroed copy is identical; the five other damaged files differ.
    assert alone.differing == sorted(expected[index][0] for index in range(50, 300, 50))


def test_large_files_on_worker_threads_and_small_ones_inline_agree_with_one_worker(
    tmp_path: Path,
) -> None:
    large = checksums.INLINE_BELOW_BYTES + 1
    expected = [("big-0.bin", put(tmp_path, "big-0.bin", os.urandom(large)))]
    expected += [("small-0.txt", put(tmp_path, "small-0.txt", b""))]
    for index in range(1, 4):
        expected.append((f"big-{index}.bin", put(tmp_path, f"big-{index}.bin", bytes(large))))
        expected.append((f"small-{index}.txt", put(tmp_path, f"small-{index}.txt", b"t" * index)))
    (tmp_path / "big-2.bin").write_bytes(b"\x01" * large)  # damaged, same size
    (tmp_path / "small-2.txt").write_bytes(b"x" * 2)

    alone = verify(tmp_path, expected, workers=1)
    together = verify(tmp_path, expected, workers=4)

    assert together == alone
    assert alone.differing == ["big-2.bin", "small-2.txt"]
    assert (alone.matched, alone.bytes_hashed) == (6, 4 * large + 0 + 1 + 2 + 3)


# -- walking the restored tree ----------------------------------------------------------------


def test_the_walk_indexes_regular_files_with_sizes_and_does_not_follow_links(
    tmp_path: Path,
) -> None:
    root = tmp_path / "restore"
    put(root, "a.txt", b"12345")
    put(root, "sub/deeper/b.txt", b"123")
    (root / "empty").mkdir()
    put(tmp_path, "outside/big.bin", bytes(10_000))
    (root / "linked-folder").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "linked-file").symlink_to(tmp_path / "outside/big.bin")
    (root / "dangling").symlink_to(tmp_path / "nowhere")

    tree = walk(root)

    assert tree.files == {"a.txt": 5, "sub/deeper/b.txt": 3}
    assert (tree.file_count, tree.bytes) == (2, 8)
    assert tree.directories == {"empty", "sub", "sub/deeper"}
    assert set(tree.links) == {"linked-folder", "linked-file", "dangling"}


def test_the_walk_of_an_empty_folder_is_zero(tmp_path: Path) -> None:
    tree = walk(tmp_path)

    assert (tree.file_count, tree.bytes) == (0, 0)

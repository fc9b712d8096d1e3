"""The pure rules that keep hostile restored data contained: lookups, the sweep, bounded text,
the private work dir (real files in tmp_path; no restic, no Docker)."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from restore_tests.errors import EnvironmentUnusable
from restore_tests.restored import DIRECTORY, MISSING, OUTSIDE, REGULAR, read_bounded, walk
from restore_tests.results import Check, ScenarioResult
from restore_tests.sources.restic import restore_errors_check
from restore_tests.sources.restic_cli import Snapshot
from restore_tests.sources.restic_output import RestoreOutcome
from restore_tests.staging import create_staging, prepare_work_dir

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="device nodes need root")


def tree_with(tmp_path: Path) -> Path:
    root = tmp_path / "restore"
    (root / "data" / "share").mkdir(parents=True)
    (root / "data" / "share" / "a.txt").write_text("a\n")
    return root


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/data/share/a.txt", REGULAR),
        ("data/share/a.txt", REGULAR),
        ("/data/share", DIRECTORY),
        ("/", DIRECTORY),
        ("/data/share/../share/a.txt", REGULAR),
        ("/data/../../etc/passwd", OUTSIDE),
        ("/data/share/a.txt/more", MISSING),  # a file is not a folder
        ("/data/nothing", MISSING),
    ],
)
def test_a_lookup_resolves_inside_the_restored_tree_only(tmp_path, path, kind):
    assert walk(tree_with(tmp_path)).lookup(path).kind == kind


def test_a_link_to_a_host_folder_reaches_only_its_restored_copy(tmp_path):
    root = tree_with(tmp_path)
    (root / "data" / "etc").symlink_to("/etc", target_is_directory=True)
    (root / "data" / "up").symlink_to("../..", target_is_directory=True)
    tree = walk(root)

    assert tree.lookup("/data/etc/passwd").kind == MISSING  # /etc was not restored
    assert tree.lookup("/data/etc").kind == MISSING
    assert tree.lookup("/data/up/etc/passwd").kind == OUTSIDE


@as_root
def test_the_sweep_strips_setuid_and_setgid_bits_and_deletes_device_nodes(tmp_path):
    root = tree_with(tmp_path)
    tool = root / "data" / "tool"
    tool.write_bytes(b"#!/bin/sh\n")
    tool.chmod(0o6755)
    os.mknod(root / "data" / "sda", 0o660 | stat.S_IFBLK, os.makedev(8, 0))
    os.mkfifo(root / "data" / "pipe")

    tree = walk(root)

    assert stat.S_IMODE(tool.stat().st_mode) == 0o755
    assert not os.path.lexists(root / "data" / "sda")
    assert os.path.lexists(root / "data" / "pipe")
    assert tree.special.summary() == (
        "1 setuid/setgid file (bits removed), 1 device node (removed), "
        "1 FIFO or socket (never opened)"
    )
    assert tree.lookup("/data/sda").kind == "block device"
    assert tree.file_count == 2  # a.txt and tool; the FIFO is not a file


def test_the_names_kept_of_special_files_are_bounded_but_the_count_is_exact(tmp_path):
    root = tree_with(tmp_path)
    for index in range(50):
        os.mkfifo(root / f"pipe-{index}")

    tree = walk(root)

    assert tree.special.fifos_and_sockets.count == 50
    assert len(tree.special.fifos_and_sockets.names) == 20


def test_a_manifest_is_read_bounded_and_never_from_a_fifo(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 2000)
    os.mkfifo(tmp_path / "pipe")

    assert read_bounded(tmp_path / "big", 2000) == "x" * 2000
    with pytest.raises(ValueError):
        read_bounded(tmp_path / "big", 1999)
    with pytest.raises(OSError):
        read_bounded(tmp_path / "pipe", 1000)  # refused at once, never waits for a writer


def test_a_reason_is_one_bounded_line_and_a_detail_keeps_head_and_tail():
    flood = "first line\n" + "x" * 10_000_000 + "\nlast line"

    check = Check.failed("sandbox: yes", flood, detail=flood)

    assert "\n" not in check.reason and len(check.reason) <= 300
    assert check.reason.startswith("first line xxx") and check.reason.endswith("...")
    assert len(check.detail) <= 4096
    assert check.detail.startswith("first line") and check.detail.endswith("last line")
    assert "characters cut" in check.detail


def test_a_result_reason_set_from_anywhere_is_bounded():
    result = ScenarioResult("s", "files", "/s.yaml", "0" * 64, started_at=None)  # type: ignore[arg-type]

    result.reason = "\x1b[31m" + "y" * 5000

    assert len(result.reason) <= 300 and "\x1b" not in result.reason


def test_a_new_work_dir_is_private_and_staging_is_named_by_the_run(tmp_path):
    work = tmp_path / "work"

    staging = create_staging(work, "20261201T000000Z-abcdef")

    assert stat.S_IMODE(os.lstat(work).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(staging).st_mode) == 0o700
    assert staging.parent == work and staging.name.startswith("20261201T000000Z-abcdef-")


def test_a_work_dir_in_a_folder_others_can_write_without_sticky_bit_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)

    with pytest.raises(EnvironmentUnusable) as raised:
        prepare_work_dir(shared / "work")

    assert str(raised.value) == (
        f"work dir parent {shared} can be changed by other users (mode 777, owner uid "
        f"{os.geteuid()}): choose a work dir whose parent only you or root can write to, "
        "with --work-dir"
    )


def test_a_work_dir_in_a_sticky_folder_like_tmp_is_accepted(tmp_path):
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)

    prepare_work_dir(shared / "work")

    assert stat.S_IMODE(os.lstat(shared / "work").st_mode) == 0o700


def test_restics_damage_count_is_exact_although_only_the_first_paths_are_kept():
    outcome = RestoreOutcome()
    for index in range(150):
        outcome.add_damage(f"/data/file-{index:03}", "ciphertext verification failed")
    snapshot = Snapshot("ab" * 32, datetime(2026, 12, 1, tzinfo=UTC), "fs01", (), (), None)

    check = restore_errors_check(outcome, snapshot)

    assert len(outcome.damaged) == 100
    assert check.reason == (
        "restic could not restore 150 files (damaged data): /data/file-000, /data/file-001, "
        "/data/file-002, /data/file-003, /data/file-004, ... (+145 more) (snapshot abababab)"
    )
    assert check.observed == "150 damaged"

"""Real restic (both versions), real repositories: restic's damage reports read as sentences and
are a FAIL; a failure of the host (a full or read-only staging disk) is an ERROR of the host
(exit 3), never a verdict on the backup.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from restore_tests.errors import DamagedBackup, HostError
from restore_tests.sources.restic import ResticSettings
from restore_tests.sources.restic_cli import Restic
from restore_tests.sources.restic_output import REASON_LIMIT
from tests.conftest import (
    PASSWORD,
    PASSWORD_VARIABLE,
    Repository,
    history_rows,
    managed_containers,
    remaining,
    restic,
    restic_json,
    run_cli,
    sha256,
    write_scenario,
)

SMALL_DISK_SIZE = "4m"  # smaller than blob-0.bin (9 MiB)


@pytest.fixture
def source(repository: Repository, monkeypatch: pytest.MonkeyPatch) -> Restic:
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    monkeypatch.setenv("RESTIC_BINARY", repository.binary)
    settings = ResticSettings(
        type="restic", repository=str(repository.path), password_env=PASSWORD_VARIABLE
    )
    return Restic(settings, cache_dir=None)


def mounted_tmpfs(mount_point: Path, options: str) -> Iterator[Path]:
    mount_point.mkdir(mode=0o700)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount_point
    finally:
        remaining(mount_point)  # the detached reaper may still be deleting a staging folder
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (private, as a work dir must be)."""
    yield from mounted_tmpfs(tmp_path / "small-disk", f"size={SMALL_DISK_SIZE},mode=0700")


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    yield from mounted_tmpfs(tmp_path / "read-only-disk", "size=1m,mode=0700,ro")


def backup_folder(repository: Repository, root: Path) -> str:
    """Back up root/data into the repository; returns the new snapshot's id."""
    subprocess.run(
        [repository.binary, "--no-cache", "backup", "--host", "fs01", "data"],
        cwd=root,
        check=True,
        capture_output=True,
        env={
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_REPOSITORY": str(repository.path),
        },
    )
    snapshots = restic_json(repository, "snapshots", "--json")
    return str(max(snapshots, key=lambda snapshot: snapshot["time"])["id"])


def repair_index(repository: Repository) -> None:
    version = restic(repository.binary, str(repository.path), "version").stdout
    command = ["rebuild-index"] if "restic 0.14." in version else ["repair", "index"]
    restic(repository.binary, str(repository.path), *command)


def new_data_packs(repository: Repository, old_indexes: set[Path]) -> list[Path]:
    packs = []
    for index in set(repository.index_files()) - old_indexes:
        for pack in restic_json(repository, "cat", "index", index.name)["packs"]:
            if any(blob["type"] == "data" for blob in pack["blobs"]):
                packs.append(repository.path / "data" / pack["id"][:2] / pack["id"])
    return packs


def unindex_a_new_file(repository: Repository, tmp_path: Path) -> tuple[str, str]:
    """A second backup adds one small file (one data blob, whose id is its sha256); its pack is
    then left out of a rebuilt index and put back: the snapshot needs a blob no index lists.

    Returns (snapshot id, blob id).
    """
    root = tmp_path / "second"
    (root / "data" / "new").mkdir(parents=True)
    content = os.urandom(100 * 1024)  # below restic's smallest chunk: a single blob
    (root / "data" / "new" / "added.bin").write_bytes(content)
    old_indexes = set(repository.index_files())
    snapshot_id = backup_folder(repository, root)
    aside = tmp_path / "aside"
    aside.mkdir()
    packs = new_data_packs(repository, old_indexes)
    assert packs, "the second backup wrote no data pack"
    for pack in packs:
        shutil.move(pack, aside / pack.name)
    repair_index(repository)
    for pack in packs:
        shutil.move(aside / pack.name, pack)
    return snapshot_id, sha256(content)


# -- damage: a FAIL, said as a sentence ----------------------------------------------------------


@pytest.mark.integration
def test_a_blob_missing_from_the_index_is_damage_named_by_blob_and_snapshot(
    repository, source, tmp_path
):
    snapshot_id, blob_id = unindex_a_new_file(repository, tmp_path)
    target = tmp_path / "restored"
    target.mkdir()

    with pytest.raises(DamagedBackup) as raised:
        source.restore(source.select("latest"), target, [], False)

    assert source.select("latest").id == snapshot_id
    assert str(raised.value) == (
        f"restic: the repository {repository.path} is damaged: blob {blob_id[:8]} is missing "
        f"from the index (snapshot {snapshot_id[:8]})"
    )


@pytest.mark.sandbox
def test_a_blob_missing_from_the_index_fails_the_scenario_with_a_sentence(
    repository, tmp_path, history_url
):
    snapshot_id, blob_id = unindex_a_new_file(repository, tmp_path)
    scenario = write_scenario(
        tmp_path, "share", str(repository.path), verify="  expect: {min_files: 1}\n"
    )

    result = run_cli(
        "check",
        str(scenario),
        "--db",
        history_url,
        env={PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": repository.binary},
    )

    reason = (
        f"restic: the repository {repository.path} is damaged: blob {blob_id[:8]} is missing "
        f"from the index (snapshot {snapshot_id[:8]})"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == f"FAIL  share  {reason}"
    [row] = history_rows(history_url)
    assert row["status"] == "fail" and row["reason"] == reason


@pytest.mark.integration
def test_a_snapshot_whose_trees_are_in_no_index_names_its_root_as_not_restored(
    repository, source, tmp_path
):
    root = tmp_path / "second"
    (root / "data").mkdir(parents=True)
    (root / "data" / "note.txt").write_text("a second backup\n")
    old_indexes = set(repository.index_files())
    snapshot_id = backup_folder(repository, root)
    for index in set(repository.index_files()) - old_indexes:
        index.unlink()
    root_tree = restic_json(repository, "cat", "snapshot", snapshot_id)["tree"]
    target = tmp_path / "restored"
    target.mkdir()

    outcome = source.restore(source.select(snapshot_id[:8]), target, [], False)

    assert outcome.damaged == {"/": f"blob {root_tree[:8]} is missing from the repository"}
    assert outcome.damaged_count == 1


@pytest.mark.integration
def test_an_unreadable_snapshot_file_is_damage_not_a_silently_older_latest(
    repository, source, tmp_path
):
    root = tmp_path / "second"
    (root / "data").mkdir(parents=True)
    (root / "data" / "note.txt").write_text("a second backup\n")
    newest = backup_folder(repository, root)
    snapshot_file = repository.path / "snapshots" / newest
    content = bytearray(snapshot_file.read_bytes())
    content[len(content) // 2] ^= 0xFF
    snapshot_file.chmod(0o644)
    snapshot_file.write_bytes(bytes(content))

    with pytest.raises(DamagedBackup) as raised:
        source.select("latest")

    assert str(raised.value) == (
        f"restic: the repository {repository.path} is damaged: snapshot {newest[:8]} cannot be "
        "read (invalid data returned)"
    )


# -- the host: an ERROR of the environment, never damage ------------------------------------------


def assert_host_reason(reason: str, sentence: str, restic_words: str) -> None:
    """sentence (restic: restic_words), where restic's words lose their middle when the whole
    would pass REASON_LIMIT (test folders have long paths); their end is the cause."""
    assert len(reason) <= REASON_LIMIT, reason
    prefix = f"{sentence} (restic: "
    assert reason.startswith(prefix), reason
    shown = reason.removeprefix(prefix).removesuffix(")")
    if shown != restic_words:
        head, tail = shown.split("...")
        assert restic_words.startswith(head) and restic_words.endswith(tail), reason
        assert len(tail) > len(": no space left on device"), reason


@pytest.mark.integration
def test_a_full_staging_disk_is_a_host_error_naming_the_folder_and_the_file(source, small_disk):
    target = small_disk / "restore"
    target.mkdir()

    with pytest.raises(HostError) as raised:
        source.restore(source.select("latest"), target, ["/data/compta/blob-0.bin"], False)

    assert_host_reason(
        str(raised.value),
        f"no space left on device in the staging folder {target} while restoring "
        "/data/compta/blob-0.bin",
        f"write {target}/data/compta/blob-0.bin: no space left on device",
    )
    assert raised.value.exit_code == 3


@pytest.mark.integration
def test_a_read_only_staging_disk_is_a_host_error_not_damage(source, read_only_disk):
    target = read_only_disk

    with pytest.raises(HostError) as raised:
        source.restore(source.select("latest"), target, ["/data/compta/sub"], False)

    reason = str(raised.value)
    item = re.search(r" while restoring (/data[/\w.-]*) \(restic: ", reason)
    assert item, reason
    assert_host_reason(
        reason,
        f"read-only file system in the staging folder {target} while restoring {item[1]}",
        f"mkdir {target}/data: read-only file system",
    )


@pytest.mark.integration
def test_a_staging_folder_restic_cannot_create_is_a_host_error(source, read_only_disk):
    target = read_only_disk / "restore"

    with pytest.raises(HostError) as raised:
        source.restore(source.select("latest"), target, ["/data/compta/sub"], False)

    reason = str(raised.value)
    if "while restoring" in reason:  # 0.14 tries each file, 0.18 stops at once
        item = re.search(r" while restoring (/data[/\w.-]*) \(restic: ", reason)
        assert item, reason
        assert_host_reason(
            reason,
            f"read-only file system in the staging folder {target} while restoring {item[1]}",
            f"mkdir {target}: read-only file system",
        )
    else:
        assert_host_reason(
            reason,
            f"read-only file system in the staging folder {target}",
            f"cannot create target directory: mkdir {target}: read-only file system",
        )


@pytest.mark.sandbox
def test_a_full_work_dir_with_include_is_an_error_of_the_host_exiting_3_and_leaves_nothing(
    repository, tmp_path, history_url, small_disk
):
    blob = repository.source_root / "data" / "compta" / "blob-0.bin"
    scenario = write_scenario(
        tmp_path,
        "share",
        str(repository.path),
        source_extra="  include: [/data/compta/blob-0.bin]\n",
        verify=f"  checksums: {{/data/compta/blob-0.bin: {sha256(blob.read_bytes())}}}\n",
    )

    result = run_cli(
        "check",
        str(scenario),
        "--db",
        history_url,
        "--json",
        env={
            PASSWORD_VARIABLE: PASSWORD,
            "RESTIC_BINARY": repository.binary,
            "RESTORE_TESTS_WORK_DIR": str(small_disk),
        },
    )

    assert result.returncode == 3, result.stdout + result.stderr
    [verdict] = json.loads(result.stdout)["results"]
    assert verdict["status"] == "error"
    staging = re.match(r"no space left on device in the staging folder (\S+) ", verdict["reason"])
    assert staging and Path(staging[1]).parent.parent == small_disk, verdict["reason"]
    assert_host_reason(
        verdict["reason"],
        f"no space left on device in the staging folder {staging[1]} while restoring "
        "/data/compta/blob-0.bin",
        f"write {staging[1]}/data/compta/blob-0.bin: no space left on device",
    )
    [row] = history_rows(history_url)
    assert row["status"] == "error" and row["reason"] == verdict["reason"]
    assert remaining(small_disk) == []
    assert containers_left(small_disk) == []


def containers_left(work_dir: Path, timeout: float = 30.0) -> list[str]:
    """Sandboxes of runs in work_dir once the detached reaper is done (it removes them last)."""
    deadline = time.monotonic() + timeout
    while managed_containers(work_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    return managed_containers(work_dir)

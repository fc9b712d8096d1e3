"""The restic source on its own: real repositories of both restic versions, no Docker."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from restore_tests.errors import SourceError
from restore_tests.sources.base import FetchProgress
from restore_tests.sources.restic import ResticSettings, SnapshotFilter
from restore_tests.sources.restic_cli import Restic
from tests.conftest import (
    PASSWORD,
    PASSWORD_VARIABLE,
    Repository,
    damage_a_later_chunk_of_a_large_file,
    restic,
    sha256,
)

pytestmark = pytest.mark.integration

MakeRestic = Callable[..., Restic]


@pytest.fixture
def make_restic(repository: Repository, monkeypatch: pytest.MonkeyPatch) -> MakeRestic:
    """A Restic for the test's repository; the password reference defaults to PASSWORD_VARIABLE."""
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    monkeypatch.setenv("RESTIC_BINARY", repository.binary)

    def make(**password: object) -> Restic:
        reference = password or {"password_env": PASSWORD_VARIABLE}
        source = ResticSettings(type="restic", repository=str(repository.path), **reference)
        return Restic(source, cache_dir=None)

    return make


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): sha256(path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def backup(repository: Repository, folder: Path) -> None:
    subprocess.run(
        [repository.binary, "--no-cache", "backup", "--host", "fs02", "."],
        cwd=folder,
        check=True,
        capture_output=True,
        env={
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_REPOSITORY": str(repository.path),
        },
    )


def test_the_version_is_the_one_the_binary_reports(make_restic, repository):
    printed = subprocess.run(
        [repository.binary, "version"], capture_output=True, text=True, check=True
    ).stdout
    source = make_restic()
    assert printed.startswith(f"restic {source.version_text()} ")
    assert source.binary == repository.binary
    assert source.version()[:2] in ((0, 14), (0, 18))


def test_latest_selects_the_fixture_snapshot_with_its_metadata(make_restic, repository):
    snapshot = make_restic().select("latest")
    assert snapshot.id == repository.snapshot_id
    assert snapshot.short_id == repository.snapshot_id[:8]
    assert snapshot.hostname == "fs01" and snapshot.tags == ("nightly",)
    assert snapshot.paths == (str(repository.source_root / "data"),)
    assert snapshot.time.tzinfo is not None


def test_a_filter_selects_the_newest_match_and_no_match_is_a_source_error(make_restic, repository):
    source = make_restic()
    found = source.select(SnapshotFilter(tags=["nightly"], host="fs01"))
    assert found.id == repository.snapshot_id
    with pytest.raises(SourceError) as raised:
        source.select(SnapshotFilter(tags=["weekly"], host="fs01"))
    assert str(raised.value) == f"no snapshot in {repository.path} matches tags weekly, host fs01"
    with pytest.raises(SourceError) as raised:
        source.select(SnapshotFilter(path="/srv/elsewhere"))
    assert str(raised.value) == f"no snapshot in {repository.path} matches path /srv/elsewhere"


def test_an_id_prefix_selects_its_snapshot_and_an_unknown_id_is_a_source_error(
    make_restic, repository
):
    source = make_restic()
    assert source.select(repository.snapshot_id[:8]).id == repository.snapshot_id
    assert source.select(repository.snapshot_id.upper()[:12]).id == repository.snapshot_id
    with pytest.raises(SourceError) as raised:
        source.select("deadbeef")
    assert str(raised.value) == f"no snapshot 'deadbeef' in {repository.path}"


def test_an_ambiguous_id_prefix_is_a_source_error_counting_the_matches(
    make_restic, repository, tmp_path
):
    small = tmp_path / "small"
    small.mkdir()
    source = make_restic()
    # 17 snapshots share a first hex digit for sure; a few backups usually suffice.
    for attempt in range(16):
        (small / "note.txt").write_text(f"attempt {attempt}\n")
        backup(repository, small)
        ids = [snapshot.id for snapshot in source.snapshots()]
        firsts = [snapshot_id[0] for snapshot_id in ids]
        shared = next((first for first in firsts if firsts.count(first) > 1), None)
        if shared:
            break
    assert shared is not None
    with pytest.raises(SourceError) as raised:
        source.select(shared)
    assert str(raised.value) == (
        f"snapshot id {shared!r} is ambiguous in {repository.path} "
        f"({firsts.count(shared)} snapshots start with it)"
    )
    sharing = [snapshot_id for snapshot_id in ids if snapshot_id.startswith(shared)][:2]
    for snapshot_id in sharing:  # a longer prefix still picks exactly one
        assert source.select(snapshot_id[:16]).id == snapshot_id


def test_a_full_restore_is_byte_identical_to_the_backed_up_tree(make_restic, repository, tmp_path):
    source = make_restic()
    target = tmp_path / "restored"
    target.mkdir()
    progress: list[FetchProgress] = []
    outcome = source.restore(source.select("latest"), target, [], False, progress.append)
    assert outcome.damaged == {}
    assert [path.name for path in target.iterdir()] == ["data"]
    expected = tree_hashes(repository.source_root / "data")
    assert tree_hashes(target / "data") == expected
    files = [path for path in (repository.source_root / "data").rglob("*") if path.is_file()]
    total = sum(path.stat().st_size for path in files)
    assert outcome.bytes_restored in (None, total)  # 0.14 prints no JSON summary
    assert all(report.done_bytes >= 0 for report in progress)


def test_a_restore_reports_its_bytes_against_the_size_asked_before_with_either_version(
    repository, tmp_path, monkeypatch
):
    """0.18 says how far it is (JSON status); 0.14 says nothing, and the bytes it wrote are
    read while it runs. Either way the total is the snapshot's size asked for the disk check,
    which is not asked again. A download limit makes the restore last a few seconds."""
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    monkeypatch.setenv("RESTIC_BINARY", repository.binary)
    settings = ResticSettings(
        type="restic",
        repository=str(repository.path),
        password_env=PASSWORD_VARIABLE,
        limit_download=3 * 1024**2,
    )
    source = Restic(settings, cache_dir=None)
    snapshot = source.select("latest")
    size = source.restore_size(snapshot)
    asked: list[str] = []
    monkeypatch.setattr(source, "_run", lambda arguments, **options: asked.append(arguments))
    reports: list[tuple[float, FetchProgress]] = []
    target = tmp_path / "restored"
    target.mkdir()

    source.restore(snapshot, target, [], False, lambda p: reports.append((time.monotonic(), p)))

    assert asked == [] and source.restore_size(snapshot) == size
    files = [path for path in (repository.source_root / "data").rglob("*") if path.is_file()]
    assert size == sum(path.stat().st_size for path in files)
    progress = [report for _, report in reports]
    assert len(progress) >= 3, progress
    assert {report.total_bytes for report in progress} == {size}
    done = [report.done_bytes for report in progress]
    assert done == sorted(done) and 0 < done[-1] <= size * 1.01
    if source.version() < (0, 16, 0):  # the bytes written so far, read from /proc
        assert any(0 < report.done_bytes < size * 0.9 for report in progress), progress
    # 0.18 counts a pack's bytes once the whole pack is downloaded: with the sample's one or
    # two packs its status may say 0 until near the end, but it is heard while restic runs.
    assert reports[-1][0] - reports[0][0] >= 1.0  # reported while it ran, not only at its end


def test_an_include_restores_only_that_subtree(make_restic, repository, tmp_path):
    source = make_restic()
    target = tmp_path / "restored"
    target.mkdir()
    outcome = source.restore(source.select("latest"), target, ["/data/compta/sub"], False)
    assert outcome.damaged == {}
    restored_files = [path for path in target.rglob("*") if path.is_file()]
    assert restored_files, "nothing restored"
    assert all(path.is_relative_to(target / "data/compta/sub") for path in restored_files)
    expected = tree_hashes(repository.source_root / "data/compta/sub")
    assert tree_hashes(target / "data/compta/sub") == expected
    assert not (target / "data/outside.txt").exists()


def test_the_restore_size_is_the_size_of_the_backed_up_files(make_restic, repository):
    source = make_restic()
    size = source.restore_size(source.select("latest"))
    files = [path for path in (repository.source_root / "data").rglob("*") if path.is_file()]
    assert size is not None and size > 0
    assert size == sum(path.stat().st_size for path in files)


def test_a_bit_flip_in_a_pack_names_the_damaged_file_whose_size_and_mtime_look_fine(
    make_restic, repository, tmp_path
):
    damaged_path = damage_a_later_chunk_of_a_large_file(repository)
    source = make_restic()
    target = tmp_path / "restored"
    target.mkdir()
    outcome = source.restore(source.select("latest"), target, [], False)
    assert list(outcome.damaged) == [damaged_path], outcome.damaged
    assert "ciphertext verification failed" in outcome.damaged[damaged_path]
    restored = target / damaged_path.lstrip("/")
    original = repository.source_root / damaged_path.lstrip("/")
    # What a size-and-date comparison sees is fine; only the content tells.
    assert restored.stat().st_size == original.stat().st_size
    assert int(restored.stat().st_mtime) == int(original.stat().st_mtime)
    assert sha256(restored.read_bytes()) != sha256(original.read_bytes())
    restored_hashes = tree_hashes(target / "data")
    expected = tree_hashes(repository.source_root / "data")
    differing = sorted(name for name in expected if restored_hashes.get(name) != expected[name])
    assert differing == [damaged_path.removeprefix("/data/")]


def test_a_wrong_password_is_a_source_error_naming_the_repository(
    make_restic, repository, monkeypatch
):
    monkeypatch.setenv(PASSWORD_VARIABLE, "not the password")
    with pytest.raises(SourceError) as raised:
        make_restic().select("latest")
    assert str(raised.value) == f"restic: wrong password for repository {repository.path}"


def test_a_password_file_opens_the_repository(make_restic, repository, tmp_path):
    secret_file = tmp_path / "restic.pass"
    secret_file.write_text(PASSWORD + "\n")
    source = make_restic(password_file=str(secret_file))
    assert source.select("latest").id == repository.snapshot_id


def test_a_password_file_that_restic_itself_accepts_opens_the_repository(
    make_restic, repository, tmp_path
):
    secret_file = tmp_path / "restic.pass"
    secret_file.write_text(PASSWORD + " \n")
    accepted = subprocess.run(
        [repository.binary, "--no-cache", "--password-file", str(secret_file), "snapshots"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "RESTIC_REPOSITORY": str(repository.path)},
    )
    assert accepted.returncode == 0, accepted.stderr
    source = make_restic(password_file=str(secret_file))
    assert source.select("latest").id == repository.snapshot_id


@pytest.mark.parametrize("kind", ["cat", "printf"])
def test_a_password_command_opens_the_repository(make_restic, repository, tmp_path, kind):
    secret_file = tmp_path / "restic.pass"
    secret_file.write_text(PASSWORD + "\n")
    command = {
        "cat": ["sh", "-c", f"cat {secret_file}"],
        "printf": ["printf", "%s", PASSWORD],
    }[kind]
    source = make_restic(password_command=command)
    assert source.select("latest").id == repository.snapshot_id


def test_a_failing_password_command_is_a_source_error_naming_the_field(make_restic):
    failing = make_restic(password_command=["sh", "-c", "echo vault is sealed >&2; exit 3"])
    with pytest.raises(SourceError) as raised:
        failing.select("latest")
    assert str(raised.value) == (
        "source.password_command: sh exited 3 (its output is not shown: it may hold the secret)"
    )
    missing = make_restic(password_command=["/nonexistent/pass-helper", "show"])
    with pytest.raises(SourceError) as raised:
        missing.select("latest")
    assert str(raised.value) == (
        "source.password_command: /nonexistent/pass-helper: program not found"
    )
    silent = make_restic(password_command=["true"])
    with pytest.raises(SourceError) as raised:
        silent.select("latest")
    assert str(raised.value) == "source.password_command: true printed nothing"


class LockWatcher:
    """Lists the repository's locks folder every few milliseconds while a restore runs."""

    def __init__(self, locks: Path) -> None:
        self.locks = locks
        self.seen: set[str] = set()
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            if self.locks.is_dir():
                self.seen.update(path.name for path in self.locks.iterdir())
            self.polls += 1
            self._stop.wait(0.002)

    def __enter__(self) -> LockWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_restore_takes_no_lock_on_the_repository(make_restic, repository, tmp_path):
    locks = repository.path / "locks"
    # The watcher does see the lock a plain restic restore takes (so it can see one).
    with LockWatcher(locks) as control:
        restic(
            repository.binary,
            str(repository.path),
            "restore",
            "latest",
            "--target",
            str(tmp_path / "control"),
        )
    assert control.seen, "the watcher saw no lock from a plain restic restore"
    source = make_restic()
    snapshot = source.select("latest")
    target = tmp_path / "restored"
    target.mkdir()
    with LockWatcher(locks) as watcher:
        outcome = source.restore(snapshot, target, [], False)
    assert outcome.damaged == {}
    assert watcher.polls > 10
    assert watcher.seen == set()
    assert list(locks.iterdir()) == []


def listings_run(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        1
        for record in caplog.records
        if record.getMessage().startswith("run: ") and " snapshots --json" in record.getMessage()
    )


def test_a_listing_started_before_the_run_is_the_one_selection_uses(
    make_restic, repository, caplog
):
    caplog.set_level("DEBUG", logger="restore_tests.execute")
    make_restic().start_listing(SnapshotFilter(tags=["nightly"]))

    found = make_restic().select(SnapshotFilter(tags=["nightly"]))

    assert found.id == repository.snapshot_id
    assert listings_run(caplog) == 1
    make_restic().select(SnapshotFilter(tags=["nightly"]))  # used once: a new listing
    assert listings_run(caplog) == 2


def test_a_listing_started_for_another_password_or_filter_is_not_taken(
    make_restic, repository, monkeypatch, caplog
):
    caplog.set_level("DEBUG", logger="restore_tests.execute")
    monkeypatch.setenv("OTHER_PASSWORD", "not the password")
    make_restic(password_env="OTHER_PASSWORD").start_listing("latest")
    make_restic().start_listing(SnapshotFilter(tags=["weekly"]))

    assert make_restic().select("latest").id == repository.snapshot_id
    assert listings_run(caplog) == 3
    with pytest.raises(SourceError) as raised:
        make_restic(password_env="OTHER_PASSWORD").select("latest")
    assert str(raised.value) == f"restic: wrong password for repository {repository.path}"
    assert listings_run(caplog) == 3  # the early listing's failure, reported when used
    with pytest.raises(SourceError):
        make_restic().select(SnapshotFilter(tags=["weekly"]))


def test_an_early_listing_starts_the_size_of_the_snapshot_it_selects_when_there_is_no_summary(
    make_restic, repository, caplog
):
    caplog.set_level("DEBUG", logger="restore_tests.execute")
    make_restic().start_listing("latest")

    restic = make_restic()
    snapshot = restic.select("latest")
    size = restic.restore_size(snapshot)

    assert size == restic.restore_size(snapshot) and size and size > 0
    stats = [
        r
        for r in caplog.records
        if r.getMessage().startswith("run: ") and " stats " in r.getMessage()
    ]
    # restic 0.17+ has the size in the snapshot's summary: no stats at all; 0.14 runs it once,
    # started by the early listing for the very snapshot it lists as the newest.
    assert len(stats) == (0 if snapshot.size_bytes is not None else 1)
    assert listings_run(caplog) == 1

"""Restored content is hostile: a backup made by an attacker must not yield a false PASS, reach
host files, hang the drill, or give a local user anything (real restic, real Docker)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import (
    PASSWORD,
    PASSWORD_VARIABLE,
    assert_no_leftovers,
    history_rows,
    restic,
    run_cli,
    write_scenario,
)

pytestmark = pytest.mark.sandbox
NOBODY = 65534


@dataclass
class HostileBackup:
    repository: Path
    binary: str


@pytest.fixture(scope="module")
def hostile_backup(
    restic_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileBackup]:
    """A backup, made as root, of what an attacker controlling the machine could leave."""
    base = tmp_path_factory.mktemp("hostile")
    data = base / "source" / "data"
    for folder in ("compta", "bin", "dev", "fifo", "devices"):
        (data / folder).mkdir(parents=True)
    ledger = b"grand livre 2026\n" * 100
    (data / "compta" / "ledger.txt").write_bytes(ledger)
    digest = hashlib.sha256(ledger).hexdigest()
    (data / "compta" / "SHA256SUMS").write_text(f"{digest}  ledger.txt\n")
    (data / "etc").symlink_to("/etc", target_is_directory=True)  # host files, once restored
    shutil.copy("/usr/bin/id", data / "bin" / "id")
    os.chmod(data / "bin" / "id", 0o4755)  # setuid root
    os.mknod(data / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mkfifo(data / "fifo" / "pipe")
    (data / "fifo" / "SHA256SUMS").write_text(f"{digest}  pipe\n")  # reading it would hang
    os.mknod(data / "devices" / "zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    (data / "devices" / "SHA256SUMS").write_text(f"{digest}  zero\n")  # endless zeros
    repository = base / "repo"
    restic(restic_binary, str(repository), "init")
    subprocess.run(
        [restic_binary, "--no-cache", "backup", "--host", "attacker", "data"],
        cwd=data.parent,
        env={**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": str(repository)},
        check=True,
        capture_output=True,
    )
    yield HostileBackup(repository, restic_binary)


def check(
    backup: HostileBackup, scenario: Path, history_url: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(  # type: ignore[return-value]
        "check",
        str(scenario),
        "--db",
        history_url,
        "--json",
        *args,
        env={PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": backup.binary, **env},
    )


def only_result(output: str) -> dict[str, object]:
    [result] = json.loads(output)["results"]
    return result


def snapshot_path(backup: HostileBackup, path: str) -> str:
    """A path as restic shows it in this backup (restic ls): the backed-up folder is /data."""
    return "/data" + path


def test_restic_verify_alone_does_not_pass_when_an_include_restores_nothing(
    hostile_backup, tmp_path, history_url
):
    missing = snapshot_path(hostile_backup, "/no-such-folder")
    scenario = write_scenario(
        tmp_path,
        "typo",
        str(hostile_backup.repository),
        source_extra=f"  include: [{missing}]\n  verify: true\n",
        verify="  {}\n",
    )

    result = check(hostile_backup, scenario, history_url)

    assert result.returncode == 1, result.stderr
    record = only_result(result.stdout)
    assert record["status"] == "fail"
    assert record["reason"] == (
        f"the restore produced no files (snapshot {str(record['snapshot_id'])[:8]}; "
        f"include {missing} matched nothing)"
    )
    verify_check = next(c for c in record["checks"] if c["name"] == "restic --verify")
    assert verify_check["proves_data"] is False
    assert verify_check["observed"].endswith("(nothing restored: it proves nothing)")
    [row] = history_rows(history_url)
    assert row["status"] == "fail" and row["reason"] == record["reason"]
    assert_no_leftovers()


def test_restic_verify_alone_proves_data_when_bytes_were_restored(
    hostile_backup, tmp_path, history_url
):
    scenario = write_scenario(
        tmp_path,
        "verified",
        str(hostile_backup.repository),
        source_extra=f"  include: [{snapshot_path(hostile_backup, '/compta')}]\n  verify: true\n",
        verify="  {}\n",
    )

    result = check(hostile_backup, scenario, history_url)

    assert result.returncode == 0, result.stdout + result.stderr
    record = only_result(result.stdout)
    verify_check = next(c for c in record["checks"] if c["name"] == "restic --verify")
    assert verify_check["proves_data"] is True
    assert verify_check["observed"] == (
        "restic re-read every restored file: it matches the repository"
    )
    assert_no_leftovers()


def test_an_expected_path_behind_a_symlink_to_the_host_is_missing(
    hostile_backup, tmp_path, history_url
):
    passwd = snapshot_path(hostile_backup, "/etc/passwd")
    manifest = snapshot_path(hostile_backup, "/compta/SHA256SUMS")
    scenario = write_scenario(
        tmp_path,
        "symlinked",
        str(hostile_backup.repository),
        verify=f"  manifest: {manifest}\n  expect: {{paths: [{passwd}]}}\n",
    )

    result = check(hostile_backup, scenario, history_url)

    assert result.returncode == 1, result.stderr
    record = only_result(result.stdout)
    assert record["status"] == "fail"
    assert record["reason"] == f"1 expected path missing: {passwd}"
    assert_no_leftovers()


@pytest.mark.parametrize(
    ("folder", "entry", "kind"),
    [("fifo", "pipe", "FIFO"), ("devices", "zero", "character device")],
)
def test_a_fifo_or_device_named_in_the_manifest_fails_at_once_instead_of_hanging(
    hostile_backup, tmp_path, history_url, folder, entry, kind
):
    manifest = snapshot_path(hostile_backup, f"/{folder}/SHA256SUMS")
    scenario = write_scenario(
        tmp_path, "special", str(hostile_backup.repository), verify=f"  manifest: {manifest}\n"
    )
    started = time.monotonic()

    result = check(hostile_backup, scenario, history_url)

    assert time.monotonic() - started < 60
    assert result.returncode == 1, result.stderr
    record = only_result(result.stdout)
    restored = manifest.lstrip("/").rsplit("/", 1)[0] + f"/{entry}"
    assert record["reason"] == (
        f"1 not readable as files: {restored} ({kind}) (snapshot {str(record['snapshot_id'])[:8]})"
    )
    assert_no_leftovers()


def test_setuid_bits_and_device_nodes_are_neutralised_reported_and_out_of_reach(
    hostile_backup, tmp_path, history_url
):
    manifest = snapshot_path(hostile_backup, "/compta/SHA256SUMS")
    scenario = write_scenario(
        tmp_path, "setuid", str(hostile_backup.repository), verify=f"  manifest: {manifest}\n"
    )

    result = check(hostile_backup, scenario, history_url, "--keep")

    assert result.returncode == 0, result.stdout + result.stderr
    record = only_result(result.stdout)
    special = next(c for c in record["checks"] if c["name"] == "special files")
    assert special["observed"] == (
        "1 setuid/setgid file (bits removed), 2 device nodes (removed), "
        "1 FIFO or socket (never opened)"
    )
    run_id = json.loads(result.stdout)["run_id"]
    work = Path(os.environ["RESTORE_TESTS_WORK_DIR"])
    [staging] = work.glob(f"{run_id}-*")
    restored = staging / "restore" / snapshot_path(hostile_backup, "").lstrip("/")
    try:
        assert stat.S_IMODE(os.lstat(work).st_mode) == 0o700
        assert stat.S_IMODE(os.lstat(staging).st_mode) == 0o700
        assert not os.lstat(restored / "bin" / "id").st_mode & (stat.S_ISUID | stat.S_ISGID)
        assert not os.path.lexists(restored / "dev" / "null")
        reach = subprocess.run(
            ["stat", str(restored / "bin" / "id")], user=NOBODY, capture_output=True, text=True
        )
        assert reach.returncode != 0 and "Permission denied" in reach.stderr
    finally:
        assert run_cli("prune", "--run", run_id).returncode == 0
    assert_no_leftovers()


def test_a_work_dir_owned_by_another_user_is_refused_before_anything_is_restored(
    hostile_backup, tmp_path, history_url
):
    work = tmp_path / "shared-work"
    work.mkdir(mode=0o700)
    os.chown(work, NOBODY, NOBODY)
    scenario = write_scenario(
        tmp_path,
        "hijacked",
        str(hostile_backup.repository),
        verify=f"  manifest: {snapshot_path(hostile_backup, '/compta/SHA256SUMS')}\n",
    )

    result = check(hostile_backup, scenario, history_url, "--work-dir", str(work))

    assert result.returncode == 3, result.stdout + result.stderr
    assert only_result(result.stdout)["reason"] == (
        f"work dir {work} belongs to uid {NOBODY}, not to this user (uid 0): another user "
        "could reach restored files; remove it or choose another with --work-dir"
    )
    assert list(work.iterdir()) == []
    assert_no_leftovers()


def test_a_work_dir_that_is_a_symlink_is_refused(hostile_backup, tmp_path, history_url):
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    work = tmp_path / "work-link"
    work.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    scenario = write_scenario(tmp_path, "linked", str(hostile_backup.repository))

    result = check(hostile_backup, scenario, history_url, "--work-dir", str(work))

    assert result.returncode == 3, result.stdout + result.stderr
    assert only_result(result.stdout)["reason"].startswith(
        f"work dir {work} is not a plain folder (a symbolic link or a file)"
    )
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_an_open_work_dir_of_ours_is_made_private_and_used(hostile_backup, tmp_path, history_url):
    work = tmp_path / "old-work"
    work.mkdir()
    work.chmod(0o755)  # as an older version left it
    scenario = write_scenario(
        tmp_path,
        "tightened",
        str(hostile_backup.repository),
        verify=f"  manifest: {snapshot_path(hostile_backup, '/compta/SHA256SUMS')}\n",
    )

    result = check(hostile_backup, scenario, history_url, "--work-dir", str(work))

    assert result.returncode == 0, result.stdout + result.stderr
    assert stat.S_IMODE(os.lstat(work).st_mode) == 0o700


def test_a_scenario_named_like_a_removal_keeps_its_staging_from_other_runs(
    hostile_backup, tmp_path, history_url
):
    manifest = snapshot_path(hostile_backup, "/compta/SHA256SUMS")
    kept = write_scenario(
        tmp_path,
        "share.removing",
        str(hostile_backup.repository),
        verify=f"  manifest: {manifest}\n",
    )
    other = write_scenario(
        tmp_path, "other", str(hostile_backup.repository), verify=f"  manifest: {manifest}\n"
    )

    first = check(hostile_backup, kept, history_url, "--keep")
    assert first.returncode == 0, first.stdout + first.stderr
    run_id = json.loads(first.stdout)["run_id"]
    [staging] = Path(os.environ["RESTORE_TESTS_WORK_DIR"]).glob(f"{run_id}-*")
    second = check(hostile_backup, other, history_url)  # resumes pending removals first

    assert second.returncode == 0, second.stdout + second.stderr
    assert staging.is_dir() and not staging.name.endswith(".removing")
    assert run_cli("prune", "--run", run_id).returncode == 0
    assert_no_leftovers()

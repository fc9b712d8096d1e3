"""Home folders (0700, each owned by its user) are counted inside the sandbox as their owners,
never with a capability: a backup of /home can PASS (real restic, backups made as root)."""

from __future__ import annotations

import hashlib
import os
import subprocess
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


@dataclass
class HomeBackup:
    repository: Path
    binary: str
    files: int


def put(path: Path, content: bytes, owner: int, mode: int = 0o600) -> None:
    path.write_bytes(content)
    os.chown(path, owner, owner)
    os.chmod(path, mode)


def private_folder(path: Path, owner: int, mode: int = 0o700) -> Path:
    path.mkdir(parents=True)
    os.chown(path, owner, owner)
    os.chmod(path, mode)
    return path


def make_homes(source: Path, locked: bool) -> int:
    """/home/alice (uid 1000), /home/bob (1001) holding a folder of uid 1002, all 0700; with
    locked, /home/carol (1003) mode 0000: not even its owner may read it. Returns the files."""
    home = source / "home"
    home.mkdir(parents=True)
    contents = {
        private_folder(home / "alice", 1000) / "notes.txt": (b"alice's notes\n", 1000),
        private_folder(home / "bob", 1001) / "todo.txt": (b"bob's list\n", 1001),
        private_folder(home / "bob" / "shared", 1002) / "plan.txt": (b"the plan\n", 1002),
    }
    for path, (content, owner) in contents.items():
        put(path, content, owner)
    if locked:
        put(private_folder(home / "carol", 1003) / "secret.txt", b"carol\n", 1003)
        os.chmod(home / "carol", 0)
    lines = [
        f"{hashlib.sha256(content).hexdigest()}  {path.relative_to(home)}"
        for path, (content, _) in contents.items()
    ]
    (home / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return len(contents) + 1 + int(locked)


def back_up(binary: str, base: Path, locked: bool) -> HomeBackup:
    source = base / "source"
    files = make_homes(source, locked)
    repository = base / "repo"
    restic(binary, str(repository), "init")
    subprocess.run(
        [binary, "--no-cache", "backup", "home"],
        cwd=source,
        check=True,
        capture_output=True,
        env={
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/"),
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_REPOSITORY": str(repository),
        },
    )
    return HomeBackup(repository, binary, files)


def check(backup: HomeBackup, tmp_path: Path, name: str, history_url: str):
    scenario = write_scenario(
        tmp_path, name, str(backup.repository), verify="  manifest: /home/SHA256SUMS\n"
    )
    return run_cli(
        "check",
        str(scenario),
        "--db",
        history_url,
        env={PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": backup.binary},
    )


def count_check(history_url: str) -> dict[str, object]:
    [row] = history_rows(history_url)
    [found] = [check for check in row["checks"] if check["name"] == "sandbox file count"]
    return found


def test_a_backup_of_private_home_folders_passes_and_the_sandbox_sees_every_file(
    restic_binary, tmp_path, history_url
):
    backup = back_up(restic_binary, tmp_path / "backup", locked=False)
    result = check(backup, tmp_path, "homes", history_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PASS  homes  RTO ")
    counted = count_check(history_url)
    assert counted["status"] == "passed"
    assert counted["expected"] == counted["observed"] == str(backup.files) == "4"
    assert_no_leftovers()


def test_a_folder_its_own_owner_cannot_read_is_an_error_that_names_it(
    restic_binary, tmp_path, history_url
):
    backup = back_up(restic_binary, tmp_path / "backup", locked=True)
    result = check(backup, tmp_path, "locked-home", history_url)
    reason = (
        "could not count files inside the sandbox: "
        "home/carol cannot be read even by its owner (uid 1003)"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.strip() == f"ERROR locked-home  {reason}"
    counted = count_check(history_url)
    assert counted["status"] == "error" and counted["reason"] == reason
    assert_no_leftovers()

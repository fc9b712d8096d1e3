"""restic's output read as hostile: what restic 0.14 and 0.18 really printed (captured on this
machine, paths changed to /srv and /work) becomes one line without JSON, Go stack frames or
terminal control sequences, and the right kind of error: damage, the host, or the source.

Pure logic: no subprocess.
"""

from __future__ import annotations

import json

import pytest

from restore_tests.errors import DamagedBackup, HostError, SourceError
from restore_tests.sources.base import FetchProgress
from restore_tests.sources.restic_output import (
    DAMAGED_KEPT,
    REASON_LIMIT,
    RestoreReader,
    explain_failure,
    host_problem,
    restic_lines,
)

LOCATION = "/srv/restic/share"
STAGING = "/work/run-1a2b/restore"
HOST_FOLDERS = {STAGING: "the staging folder"}

# restic restore of a snapshot whose data blob is in a pack that no index lists (the index was
# rebuilt while the pack was away): both versions abort with a Go stack trace.
UNKNOWN_BLOB_014 = """\
Unknown blob 98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4
github.com/restic/restic/internal/restorer.(*fileRestorer).forEachBlob
\tgithub.com/restic/restic/internal/restorer/filerestorer.go:96
github.com/restic/restic/internal/restorer.(*fileRestorer).restoreFiles
\tgithub.com/restic/restic/internal/restorer/filerestorer.go:121
github.com/restic/restic/internal/restorer.(*Restorer).RestoreTo
\tgithub.com/restic/restic/internal/restorer/restorer.go:269
main.runRestore
\tgithub.com/restic/restic/cmd/restic/cmd_restore.go:216
main.glob..func22
\tgithub.com/restic/restic/cmd/restic/cmd_restore.go:33
github.com/spf13/cobra.(*Command).execute
\tgithub.com/spf13/cobra/command.go:916
github.com/spf13/cobra.(*Command).ExecuteC
\tgithub.com/spf13/cobra/command.go:1044
github.com/spf13/cobra.(*Command).Execute
\tgithub.com/spf13/cobra/command.go:968
main.main
\tgithub.com/restic/restic/cmd/restic/main.go:98
runtime.main
\truntime/proc.go:250
runtime.goexit
\truntime/asm_amd64.s:1594
"""
UNKNOWN_BLOB_018 = (
    '{"message_type":"exit_error","code":1,"message":"Unknown blob '
    "98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4\\n"
    "github.com/restic/restic/internal/restorer.(*fileRestorer).forEachBlob\\n"
    "\\tgithub.com/restic/restic/internal/restorer/filerestorer.go:114\\n"
    "github.com/restic/restic/internal/restorer.(*fileRestorer).restoreFiles\\n"
    "\\tgithub.com/restic/restic/internal/restorer/filerestorer.go:146\\n"
    "github.com/restic/restic/internal/restorer.(*Restorer).RestoreTo\\n"
    "\\tgithub.com/restic/restic/internal/restorer/restorer.go:429\\n"
    "main.runRestore\\n\\tgithub.com/restic/restic/cmd/restic/cmd_restore.go:246\\n"
    "main.newRestoreCommand.func1\\n\\tgithub.com/restic/restic/cmd/restic/cmd_restore.go:51\\n"
    "github.com/spf13/cobra.(*Command).execute\\n\\tgithub.com/spf13/cobra/command.go:985\\n"
    "github.com/spf13/cobra.(*Command).ExecuteC\\n\\tgithub.com/spf13/cobra/command.go:1117\\n"
    "github.com/spf13/cobra.(*Command).Execute\\n\\tgithub.com/spf13/cobra/command.go:1041\\n"
    "github.com/spf13/cobra.(*Command).ExecuteContext\\n"
    "\\tgithub.com/spf13/cobra/command.go:1034\\n"
    "main.main\\n\\tgithub.com/restic/restic/cmd/restic/main.go:172\\n"
    "runtime.main\\n\\truntime/proc.go:283\\n"
    'runtime.goexit\\n\\truntime/asm_amd64.s:1700"}\n'
)
LOCKED_014 = """\
unable to create lock in backend: repository is already locked exclusively by PID 18322 on vm \
by root (UID 0, GID 0)
lock was created at 2026-12-01 15:34:44 (397.845584ms ago)
storage ID c1914343
the `unlock` command can be used to remove stale locks
"""
LOCKED_018 = (
    '{"message_type":"exit_error","code":11,"message":"unable to create lock in backend: '
    "repository is already locked exclusively by PID 18394 on vm by root (UID 0, GID 0)\\n"
    "lock was created at 2026-12-01 15:34:45 (616.809406ms ago)\\nstorage ID 28cb84a4\\n"
    'the `unlock` command can be used to remove stale locks"}\n'
)
S3_REFUSED_018 = (
    "Stat(<config/>) returned error, retrying after 677.869679ms: Stat: The request signature "
    "we calculated does not match the signature you provided. Check your key and signing "
    "method.\n"
    "\x1b[2Ksignal interrupt received, cleaning up\n"
    '{"message_type":"exit_error","code":1,"message":"Fatal: unable to open config file: '
    "context canceled\\nIs there a repository at the following location?\\n"
    's3:http://127.0.0.1:18555/bucket/r"}\n'
)
S3_UNREACHABLE_018 = (
    'Stat(<config/>) returned error, retrying after 1.383082417s: Stat: Get "http://127.0.0.1'
    ':18556/bucket/?location=": dial tcp 127.0.0.1:18556: connect: connection refused\n'
    "\x1b[2Ksignal interrupt received, cleaning up\n"
    '{"message_type":"exit_error","code":1,"message":"Fatal: unable to open config file: '
    "context canceled\\nIs there a repository at the following location?\\n"
    's3:http://127.0.0.1:18556/bucket/r"}\n'
)
CANNOT_REACH = (
    f"restic: cannot reach the repository {LOCATION} (Stat: Get "
    '"http://127.0.0.1:18556/bucket/?location=": dial tcp 127.0.0.1:18556: connect: '
    "connection refused)"
)

# (case, restic version, stderr, exit code, error class, reason)
CAPTURED = [
    (
        "wrong password",
        "0.14",
        "Fatal: wrong password or no key found\n",
        1,
        SourceError,
        f"restic: wrong password for repository {LOCATION}",
    ),
    (
        "wrong password",
        "0.18",
        '{"message_type":"exit_error","code":12,"message":"Fatal: wrong password or no key '
        'found"}\n',
        12,
        SourceError,
        f"restic: wrong password for repository {LOCATION}",
    ),
    (
        "no repository",
        "0.14",
        f"Fatal: unable to open config file: stat {LOCATION}/config: no such file or directory\n"
        f"Is there a repository at the following location?\n{LOCATION}\n",
        1,
        SourceError,
        f"restic: no repository at {LOCATION}",
    ),
    (
        "no repository",
        "0.18",
        '{"message_type":"exit_error","code":10,"message":"Fatal: repository does not exist: '
        f"unable to open config file: stat {LOCATION}/config: no such file or directory\\n"
        f'Is there a repository at the following location?\\n{LOCATION}"}}\n',
        10,
        SourceError,
        f"restic: no repository at {LOCATION}",
    ),
    (
        "locked exclusively",
        "0.14",
        LOCKED_014,
        1,
        SourceError,
        f"restic: repository {LOCATION} is locked by another process "
        "(restic unlock removes stale locks)",
    ),
    (
        "locked exclusively",
        "0.18",
        LOCKED_018,
        11,
        SourceError,
        f"restic: repository {LOCATION} is locked by another process "
        "(restic unlock removes stale locks)",
    ),
    (
        "S3 signature refused",
        "0.14",
        "Fatal: unable to open config file: Stat: The request signature we calculated does not "
        "match the signature you provided. Check your key and signing method.\n"
        "Is there a repository at the following location?\ns3:http://127.0.0.1:18555/bucket/r\n",
        1,
        SourceError,
        f"restic: the S3 server refused the credentials for {LOCATION}",
    ),
    (
        "S3 signature refused (stopped at the first retry)",
        "0.18",
        S3_REFUSED_018,
        1,
        SourceError,
        f"restic: the S3 server refused the credentials for {LOCATION}",
    ),
    (
        "S3 bucket missing",
        "0.14",
        "Fatal: unable to open config file: Stat: The specified bucket does not exist\n"
        "Is there a repository at the following location?\ns3:http://127.0.0.1:18555/nobucket/r\n",
        1,
        SourceError,
        f"restic: no repository at {LOCATION}",
    ),
    (
        "S3 endpoint refusing connections",
        "0.14",
        'Fatal: unable to open config file: Stat: Get "http://127.0.0.1:18556/bucket/?location='
        '": dial tcp 127.0.0.1:18556: connect: connection refused\n'
        "Is there a repository at the following location?\ns3:http://127.0.0.1:18556/bucket/r\n",
        1,
        SourceError,
        f"restic: cannot reach the repository {LOCATION} (unable to open config file: Stat: Get "
        '"http://127.0.0.1:18556/bucket/?location=": dial tcp 127.0.0.1:18556: connect: '
        "connection refused)",
    ),
    (
        "S3 endpoint refusing connections (stopped at the first retry)",
        "0.18",
        S3_UNREACHABLE_018,
        1,
        SourceError,
        CANNOT_REACH,
    ),
    (
        "a blob missing from the index",
        "0.14",
        UNKNOWN_BLOB_014,
        1,
        DamagedBackup,
        f"restic: the repository {LOCATION} is damaged: blob 98ea6e4f is missing from the index "
        "(snapshot c0f26fd3)",
    ),
    (
        "a blob missing from the index",
        "0.18",
        UNKNOWN_BLOB_018,
        1,
        DamagedBackup,
        f"restic: the repository {LOCATION} is damaged: blob 98ea6e4f is missing from the index "
        "(snapshot c0f26fd3)",
    ),
    (
        "a corrupted index file",
        "0.14",
        "Fatal: load <index/113cd75125>: invalid data returned\n",
        1,
        DamagedBackup,
        f"restic: the repository {LOCATION} is damaged: index file 113cd75125 cannot be read "
        "(invalid data returned) (snapshot c0f26fd3)",
    ),
    (
        "a corrupted index file",
        "0.18",
        '{"message_type":"exit_error","code":1,"message":"LoadRaw(\\u003cindex/130dd49cc5'
        '\\u003e): invalid data returned"}\n',
        1,
        DamagedBackup,
        f"restic: the repository {LOCATION} is damaged: index file 130dd49cc5 cannot be read "
        "(invalid data returned) (snapshot c0f26fd3)",
    ),
    (
        "an unreadable repository folder",
        "0.14",
        f"Fatal: unable to open repository at {LOCATION}: ReadDir: open {LOCATION}/keys: "
        "permission denied\n",
        1,
        SourceError,
        f"restic: permission denied reading the repository {LOCATION} (unable to open "
        f"repository at {LOCATION}: ReadDir: open {LOCATION}/keys: permission denied)",
    ),
    (
        "an unreadable repository folder",
        "0.18",
        f"Stat(<config/>) failed: stat {LOCATION}/config: permission denied\n"
        '{"message_type":"exit_error","code":1,"message":"Fatal: unable to open config file: '
        f"stat {LOCATION}/config: permission denied\\nIs there a repository at the following "
        f'location?\\n{LOCATION}"}}\n',
        1,
        SourceError,
        f"restic: permission denied reading the repository {LOCATION} (Stat(<config/>) failed: "
        f"stat {LOCATION}/config: permission denied)",
    ),
    (
        "a staging folder it may not create",
        "0.18",
        '{"message_type":"exit_error","code":1,"message":"cannot create target directory: '
        f'mkdir {STAGING}: permission denied"}}\n',
        1,
        HostError,
        f"permission denied in the staging folder {STAGING} (restic: cannot create target "
        f"directory: mkdir {STAGING}: permission denied)",
    ),
    (
        "a read-only staging folder",
        "0.18",
        '{"message_type":"exit_error","code":1,"message":"cannot create target directory: '
        f'mkdir {STAGING}: read-only file system"}}\n',
        1,
        HostError,
        f"read-only file system in the staging folder {STAGING} (restic: cannot create target "
        f"directory: mkdir {STAGING}: read-only file system)",
    ),
]


@pytest.mark.parametrize(
    ("case", "version", "stderr", "code", "kind", "reason"),
    CAPTURED,
    ids=[f"{case} ({version})" for case, version, *_ in CAPTURED],
)
def test_what_restic_printed_becomes_one_line_of_the_right_kind(
    case, version, stderr, code, kind, reason
):
    error = explain_failure(stderr, code, LOCATION, "c0f26fd3", HOST_FOLDERS)

    assert type(error) is kind
    assert str(error) == reason
    assert_one_clean_line(str(error))


def assert_one_clean_line(reason: str) -> None:
    assert "\n" not in reason and "\x1b" not in reason
    assert len(reason) <= REASON_LIMIT
    for sign in ('{"', "message_type", ".go:", "asm_amd64", "goroutine", "github.com/"):
        assert sign not in reason, reason


def test_a_go_panic_is_said_without_its_stack_and_is_not_taken_for_damage():
    stderr = (
        "panic: runtime error: invalid memory address or nil pointer dereference\n"
        "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x5d1f2a]\n\n"
        "goroutine 1 [running]:\n"
        "github.com/restic/restic/internal/restorer.(*Restorer).RestoreTo(0xc0001, {0x1})\n"
        "\t/build/restic/internal/restorer/restorer.go:269 +0x1aa\n"
        "main.main()\n\t/build/restic/cmd/restic/main.go:98 +0x25\n"
    )

    error = explain_failure(stderr, 2, LOCATION)

    assert type(error) is SourceError
    assert str(error) == (
        f"restic failed on {LOCATION}: runtime error: invalid memory address or nil pointer "
        "dereference"
    )


def test_a_huge_hostile_message_is_cut_to_one_bounded_line():
    name = "A" * 5000
    stderr = json.dumps(
        {"message_type": "exit_error", "code": 1, "message": f"cannot open /{name}: bad\x07"}
    )

    error = explain_failure(stderr + "\n", 1, LOCATION)

    assert len(str(error)) <= REASON_LIMIT
    assert str(error).startswith(f"restic failed on {LOCATION}: cannot open /AAAA")
    assert "AAA...AAA" in str(error) and str(error).endswith("AAAA: bad")
    assert_one_clean_line(str(error))


def test_a_json_line_cut_by_the_gateway_still_gives_its_message_and_no_json():
    line = '{"message_type":"exit_error","code":1,"message":"Fatal: unable to open config file' + (
        ": x" * 30000
    )

    lines = restic_lines(line[:65536] + " [line cut]\n")

    assert lines[0].startswith("Fatal: unable to open config file: x: x")
    assert all("message_type" not in line for line in lines)


def test_terminal_control_sequences_are_removed_from_restic_words():
    assert restic_lines("\x1b[2Ksignal interrupt received\x07, cleaning up\x1b]0;pwned\x07\n") == [
        "signal interrupt received, cleaning up"
    ]


# -- per-file errors of a restore ---------------------------------------------------------------


def read_all(lines: list[str], folders: dict[str, str] | None = None) -> RestoreReader:
    reader = RestoreReader(HOST_FOLDERS if folders is None else folders)
    for line in lines:
        reader.read(line)
    return reader


def test_a_full_staging_disk_is_a_host_problem_not_damage_for_both_versions():
    write = f"write {STAGING}/data/compta/blob-0.bin: no space left on device"
    version_014 = [f"ignoring error for /data/compta/blob-0.bin: {write}\n"] * 5
    version_018 = [
        json.dumps(
            {
                "message_type": "error",
                "error": {"message": write},
                "during": "restore",
                "item": "/data/compta/blob-0.bin",
            }
        )
        + "\n"
    ] * 5

    for lines in (version_014, version_018):
        reader = read_all([*lines, "ignoring error for /data: UtimesNano: no such file\n"])

        assert reader.outcome.damaged == {} and reader.outcome.damaged_count == 0
        assert reader.outcome.host_problem == (
            f"no space left on device in the staging folder {STAGING} while restoring "
            f"/data/compta/blob-0.bin (restic: {write})"
        )
        assert reader.should_stop("any later line")


def test_permission_denied_is_the_hosts_only_in_its_own_folders():
    in_staging = f"ignoring error for /data/b: mkdir {STAGING}/data: permission denied\n"
    in_repository = "ignoring error for /data/b: open /srv/restic/share/data/2f/2f3a: permission "
    in_repository += "denied\n"

    assert read_all([in_staging]).outcome.host_problem == (
        f"permission denied in the staging folder {STAGING} while restoring /data/b "
        f"(restic: mkdir {STAGING}/data: permission denied)"
    )
    from_repository = read_all([in_repository]).outcome
    assert from_repository.host_problem is None
    assert from_repository.damaged == {
        "/data/b": "open /srv/restic/share/data/2f/2f3a: permission denied"
    }


@pytest.mark.parametrize(
    "cause",
    ["disk quota exceeded", "too many open files", "read-only file system"],
)
def test_every_host_cause_is_named_as_the_hosts(cause):
    message = f"open {STAGING}/data/a.txt: {cause}"

    assert host_problem(message, HOST_FOLDERS, "/data/a.txt") == (
        f"{cause} in the staging folder {STAGING} while restoring /data/a.txt (restic: {message})"
    )


def test_too_many_open_files_while_reading_the_repository_is_still_the_hosts():
    message = "open /srv/restic/share/data/2f/2f3a: too many open files"

    assert host_problem(message, HOST_FOLDERS, "/data/a.txt") == (
        f"too many open files while restoring /data/a.txt (restic: {message})"
    )


def test_a_corrupt_blob_is_damage_said_plainly_for_both_versions():
    version_014 = (
        "ignoring error for /data/b: decrypting blob ee110619e111040c70c0c16dd1ba78f989c737405d71"
        "ec4e23a5662944aa87ba failed: ciphertext verification failed\n"
    )
    version_018 = (
        '{"message_type":"error","error":{"message":"decrypting blob \\u003ctree/dfd0f9e0\\u003e '
        'from f1ae5c16 failed: ciphertext verification failed"},"during":"restore",'
        '"item":"/data/b"}\n'
    )

    assert read_all([version_014]).outcome.damaged == {
        "/data/b": "blob ee110619 is corrupt (ciphertext verification failed)"
    }
    assert read_all([version_018]).outcome.damaged == {
        "/data/b": "tree blob dfd0f9e0 in pack f1ae5c16 is corrupt (ciphertext verification failed)"
    }


def test_a_flood_of_damaged_files_keeps_the_first_paths_and_counts_up_to_a_bound():
    lines = [
        f"ignoring error for /data/file-{index}: StreamPack: open pack: no such file\n"
        for index in range(120_000)
    ]

    outcome = read_all(lines + lines[:10]).outcome

    assert outcome.damaged_count == 100_000
    assert outcome.damaged_count_exact is False
    assert len(outcome.damaged) == DAMAGED_KEPT
    assert list(outcome.damaged)[:2] == ["/data/file-0", "/data/file-1"]


def test_repeated_errors_for_one_file_count_it_once():
    line = "ignoring error for /data/a.bin: StreamPack: open pack: no such file or directory\n"

    outcome = read_all([line] * 5 + [line.replace("a.bin", "b.bin")]).outcome

    assert outcome.damaged_count == 2 and outcome.damaged_count_exact
    assert outcome.damaged == {
        "/data/a.bin": "StreamPack: open pack: no such file or directory",
        "/data/b.bin": "StreamPack: open pack: no such file or directory",
    }


def test_hostile_json_values_do_not_break_the_reader():
    lines = [
        '{"message_type":"status","percent_done":"lots"}\n',
        '{"message_type":"error","error":"not an object","item":7}\n',
        '{"message_type":"summary","files_restored":"many","bytes_restored":true}\n',
        "[1, 2, 3]\n",
        '{"message_type":"error", "error": {"message": "x"\n',
    ]
    progress: list[FetchProgress] = []
    reader = RestoreReader(HOST_FOLDERS, progress.append)

    for line in lines:
        reader.read(line)

    assert progress == [FetchProgress(0, None), FetchProgress(0, None)]
    assert reader.outcome.damaged == {"(repository)": "error"}
    assert reader.outcome.files_restored is None and reader.outcome.bytes_restored is None


def test_a_hostile_file_name_cannot_reach_the_terminal_through_a_reason():
    item = "/data/\x1b]0;owned\x07\x1b[2J.txt"
    line = json.dumps(
        {"message_type": "error", "error": {"message": "StreamPack: no such file"}, "item": item}
    )

    outcome = read_all([line + "\n"]).outcome

    assert outcome.damaged == {"/data/?]0;owned??[2J.txt": "StreamPack: no such file"}

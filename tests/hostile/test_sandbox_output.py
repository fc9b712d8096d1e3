"""A sandbox command's output is untrusted and may be endless: it is read as a stream and only
a bounded head and tail are kept, in the reason, the detail, the history and the harness's memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from restore_tests.results import DETAIL_LIMIT
from restore_tests.sandbox_output import (
    Barrier,
    BoundedOutput,
    CountRecords,
    ExecResult,
    Output,
    printable,
)
from tests.conftest import (
    PASSWORD,
    PASSWORD_VARIABLE,
    ROOT,
    assert_no_leftovers,
    history_rows,
    write_scenario,
)

ONE_RESTIC = pytest.mark.parametrize("restic_binary", ["0.18"], indirect=True)
HUGE = 300_000_000
KEPT = DETAIL_LIMIT // 4 - 64


def run_cli_measuring_memory(
    tmp_path: Path, *args: str, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], int]:
    """The real command line in a child process; also its own peak RSS in bytes."""
    rss_file = tmp_path / "peak-rss"
    program = (
        "import atexit, resource, runpy, sys\n"
        "def record():\n"
        f"    with open({str(rss_file)!r}, 'w') as stream:\n"
        "        stream.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
        "atexit.register(record)\n"
        f"sys.argv = [{str(ROOT / 'cli.py')!r}, *sys.argv[1:]]\n"
        f"runpy.run_path({str(ROOT / 'cli.py')!r}, run_name='__main__')\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", program, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    return completed, int(rss_file.read_text()) * 1024


@pytest.mark.sandbox
@ONE_RESTIC
def test_a_command_printing_300_mb_fails_with_a_bounded_reason_detail_history_and_memory(
    repository, tmp_path, history_url
):
    command = ["sh", "-c", f"head -c {HUGE} /dev/zero | tr '\\0' x; exit 1"]
    scenario = write_scenario(
        tmp_path,
        "chatty",
        str(repository.path),
        extra=f"sandbox:\n  commands:\n    - {json.dumps(command)}\n",
    )
    result, peak_rss = run_cli_measuring_memory(
        tmp_path,
        "check",
        str(scenario),
        "--db",
        history_url,
        env={PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": repository.binary},
    )
    reason = "sandbox command sh exited 1: " + "x" * 200 + "..."
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip() == f"FAIL  chatty  {reason}"
    [row] = history_rows(history_url)
    assert row["status"] == "fail" and row["reason"] == reason
    [check] = [check for check in row["checks"] if check["name"].startswith("sandbox: sh")]
    cut = f"{HUGE - 2 * KEPT:,}"
    assert check["detail"] == "x" * KEPT + f"\n[... {cut} bytes cut ...]\n" + "x" * KEPT
    assert check["observed"] == "exit 1"
    database = Path(history_url.removeprefix("sqlite:///"))
    assert database.stat().st_size < 1024 * 1024, "the history holds the output"
    assert peak_rss < 200 * 1024 * 1024, f"the harness peaked at {peak_rss / 1024**2:.0f} MiB"
    assert_no_leftovers()


@pytest.mark.sandbox
@ONE_RESTIC
def test_a_passing_command_that_prints_much_keeps_a_bounded_detail(
    repository, tmp_path, history_url
):
    command = ["sh", "-c", "seq 1 2000000; echo done >&2"]
    scenario = write_scenario(
        tmp_path,
        "counting",
        str(repository.path),
        extra=f"sandbox:\n  commands:\n    - {json.dumps(command)}\n",
    )
    result, _ = run_cli_measuring_memory(
        tmp_path,
        "check",
        str(scenario),
        "--db",
        history_url,
        env={PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": repository.binary},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [row] = history_rows(history_url)
    [check] = [check for check in row["checks"] if check["name"].startswith("sandbox: sh")]
    assert check["status"] == "passed"
    assert check["detail"].startswith("1\n2\n3\n")
    assert check["detail"].endswith("1999999\n2000000\ndone")
    assert " bytes cut ...]\n" in check["detail"]
    assert len(check["detail"]) <= DETAIL_LIMIT
    assert_no_leftovers()


def test_bounded_output_keeps_the_head_the_tail_and_the_length_of_a_stream():
    output = BoundedOutput(head=4, tail=3)
    for chunk in (b"ab", b"cdef", b"", b"ghij", b"k"):
        output.feed(chunk)
    kept = output.output()
    assert (kept.head, kept.tail, kept.total, kept.cut) == (b"abcd", b"ijk", 11, 4)
    assert kept.text() == "abcd\n[... 4 bytes cut ...]\nijk"


def test_a_short_stream_is_kept_whole_and_its_last_line_read_across_head_and_tail():
    output = BoundedOutput(head=4, tail=16)
    output.feed(b"one\ntwo\nthree\n\n")
    kept = output.output()
    assert kept.cut == 0 and kept.text() == "one\ntwo\nthree\n\n"
    assert kept.last_line() == "three"


def test_terminal_escapes_in_output_are_made_visible():
    assert printable(b"ok\x1b[2J\r\nnext\rover\x9b") == "ok\ufffd[2J\nnext\nover\ufffd"


def result_of(exit_code: int, seconds: float = 1.0, oom_killed: bool | None = False, **streams):
    stdout = Output(streams.get("stdout", b""), b"", len(streams.get("stdout", b"")))
    stderr = Output(streams.get("stderr", b""), b"", len(streams.get("stderr", b"")))
    return ExecResult(exit_code, stdout, stderr, seconds, 5, 64 * 1024**2, oom_killed)


def test_how_a_command_ended_is_told_from_the_engine_not_guessed_from_137():
    assert result_of(137, seconds=1.0, oom_killed=True).reason("sh") == (
        "sandbox command sh exited 137 (killed: out of memory, limit 64 MiB): no output"
    )
    assert result_of(137, seconds=5.2, oom_killed=False).reason("sleep") == (
        "sandbox command sleep exited 137 (killed: time limit 5s): no output"
    )
    assert result_of(137, seconds=1.0, oom_killed=False).reason("sh") == (
        "sandbox command sh exited 137 (killed by SIGKILL): no output"
    )
    assert result_of(1, oom_killed=True, stderr=b"sort: failed\n").reason("sh") == (
        "sandbox command sh exited 1 (a process was killed: out of memory, limit 64 MiB): "
        "sort: failed"
    )
    assert result_of(3, stdout=b"out\n", stderr=b"err\n").reason("sh") == (
        "sandbox command sh exited 3: err"
    )


def test_find_records_split_across_chunks_are_counted_and_barriers_kept():
    records = CountRecords()
    stream = b"f\0f\0d1000:1001:700:home/al:i\nce\0f\0d0:0:0:\0f\0"
    for index in range(0, len(stream), 3):
        records.feed(stream[index : index + 3])
    assert records.files == 4
    assert records.barriers == [
        Barrier(1000, 1001, 0o700, b"home/al:i\nce"),
        Barrier(0, 0, 0, b""),
    ]
    assert [barrier.owner_may_enter for barrier in records.barriers] == [True, False]
    assert records.problem == ""


def test_an_unexpected_find_record_is_a_problem_not_a_count():
    records = CountRecords()
    records.feed(b"f\0x\0")
    assert records.files == 1 and records.problem == "find printed an unexpected record: b'x'"

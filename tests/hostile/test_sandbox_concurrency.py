"""Counts in sandboxes that share one Docker client, run from concurrent threads, are right every
time; output that cannot be read whole is an error, never a smaller count.

docker-py read an exec's output from the socket beneath the buffer http.client had read the
response headers through: when a busy thread read them late, the quick output of find was
already in that buffer and lost, and a drill saw "the sandbox sees 0 files, the host restored 44".
"""

from __future__ import annotations

import http.client
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from restore_tests import sandbox
from restore_tests.sandbox_output import CountRecords, OutputCut, count_command, read_frames

pytestmark = pytest.mark.sandbox

SANDBOX_IMAGE = "restore-tests/sandbox:bookworm"
FILES = 44
STRESS_SECONDS = 15.0
SWITCH_SECONDS = 0.02  # the interpreter's thread switch interval, 4 times its default


def spec_for(name: str, folder: Path) -> sandbox.SandboxSpec:
    run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.urandom(3).hex()}"
    return sandbox.SandboxSpec(
        SANDBOX_IMAGE,
        run_id,
        name,
        memory_bytes=128 * 1024**2,
        pids=64,
        cpus=1,
        read_only_mounts={str(folder): sandbox.RESTORE_MOUNT},
    )


def fill(folder: Path) -> None:
    """FILES files, a third of them in a subfolder, written once the sandbox runs (as restic)."""
    (folder / "sub").mkdir()
    for number in range(FILES):
        place = folder / "sub" if number % 3 else folder
        (place / f"file-{number}").write_bytes(b"x" * number)


@pytest.fixture
def client() -> Iterator[Any]:
    docker_client = sandbox.connect()
    yield docker_client
    docker_client.close()


def test_counts_in_two_sandboxes_sharing_one_client_from_busy_threads_are_always_right(
    tmp_path, client
):
    """Two threads, one client, each its own sandbox; two more threads keep the interpreter
    busy, as hashing does in a drill, and switch less often: a thread reads its responses late.
    (Before the fix, a run of this test saw several empty outputs, 0 files among them.)"""
    stop = threading.Event()
    wrong: list[str] = []
    counted: list[int] = []
    run_ids: list[str] = []

    def busy() -> None:
        while not stop.is_set():
            sum(range(10_000))

    def scenario(index: int) -> None:
        folder = tmp_path / f"restore-{index}"
        folder.mkdir()
        spec = spec_for(f"concurrent-{index}", folder)
        run_ids.append(spec.run_id)
        try:
            with sandbox.sandbox(client, spec) as box:
                fill(folder)
                while not stop.is_set():
                    shown = box.exec(["cat", f"{sandbox.RESTORE_MOUNT}/file-3"], 30)
                    if (shown.exit_code, shown.stdout) != (0, "xxx"):
                        wrong.append(f"cat read {shown.stdout!r}, exit {shown.exit_code}")
                    seen = box.count_files(sandbox.RESTORE_MOUNT, 60)
                    if seen != FILES:
                        wrong.append(f"the sandbox saw {seen} files")
                    counted.append(seen)
        except Exception as error:  # reported by the test, not lost in a thread
            wrong.append(f"{type(error).__name__}: {error}")

    workers = [threading.Thread(target=scenario, args=(index,)) for index in range(2)]
    hogs = [threading.Thread(target=busy, daemon=True) for _ in range(2)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_SECONDS)
    try:
        for thread in [*hogs, *workers]:
            thread.start()
        time.sleep(STRESS_SECONDS)
    finally:
        stop.set()
        for thread in workers:
            thread.join(60)
        sys.setswitchinterval(switch)
    assert wrong == [], f"{len(wrong)} wrong in {2 * len(counted)} commands: {wrong[:5]}"
    assert len(counted) >= 5
    for run_id in run_ids:
        assert (
            client.containers.list(all=True, filters={"label": f"{sandbox.LABEL_RUN}={run_id}"})
            == []
        )


def test_output_written_before_the_response_headers_are_read_is_all_read(
    tmp_path, client, monkeypatch
):
    """The deterministic form of the race: every response to a POST (exec start among them) is
    read 0.3 s late, once find and echo have long printed everything."""
    with sandbox.sandbox(client, spec_for("late-reader", tmp_path)) as box:
        fill(tmp_path)
        begin = http.client.HTTPResponse.begin

        def late_begin(response: http.client.HTTPResponse) -> None:
            if getattr(response, "_method", None) == "POST":
                time.sleep(0.3)
            begin(response)

        monkeypatch.setattr(http.client.HTTPResponse, "begin", late_begin)
        echoed = box.exec(["echo", "hello"], 10)
        counted = box.count_files(sandbox.RESTORE_MOUNT, 30)
    assert (echoed.exit_code, echoed.stdout) == (0, "hello\n")
    assert counted == FILES


def test_a_count_whose_output_lacks_finds_first_or_last_record_is_an_error_not_a_number(
    tmp_path, client, monkeypatch
):
    """Records that are not all find printed cannot be trusted: 44 files without the record
    find prints first (or last) fail the count (an ERROR), they do not read as 44 (or 0)."""
    outputs = {
        "the start lost": r"f\0" * FILES + r"e\0",
        "the end lost": r"s\0" + r"f\0" * FILES,
        "nothing at all": "",
    }
    failures = {}
    with sandbox.sandbox(client, spec_for("cut-count", tmp_path)) as box:
        for case, printed in outputs.items():
            monkeypatch.setattr(
                sandbox, "count_command", lambda start, printed=printed: ["printf", printed]
            )
            with pytest.raises(sandbox.CountFailed) as raised:
                box.count_files(sandbox.RESTORE_MOUNT, 30)
            failures[case] = str(raised.value)
    assert failures == {
        "the start lost": "the output of find was incomplete: its first record is missing: "
        "the start of its output was lost",
        "the end lost": "the output of find was incomplete: its last record is missing: "
        "its output was cut",
        "nothing at all": "the output of find was incomplete: its first record is missing: "
        "the start of its output was lost",
    }


def test_find_prints_its_first_record_first_and_its_last_record_last(tmp_path, client):
    """The real count command, on a tree with a directory its owner alone may read."""
    (tmp_path / "private").mkdir(mode=0o700)
    os.chown(tmp_path / "private", 1000, 1000)
    (tmp_path / "file").write_bytes(b"data")
    records = CountRecords()
    with sandbox.sandbox(client, spec_for("records", tmp_path)) as box:
        result = box.exec(count_command(sandbox.RESTORE_MOUNT), 30, on_stdout=records.feed)
    assert result.exit_code == 0, result.stderr
    printed = result.stdout_output.head.split(b"\0")
    assert (printed[0], printed[-2:]) == (b"s", [b"e", b""])
    assert sorted(printed[1:-2]) == [b"d1000:1000:700:private", b"f"]
    assert (records.files, records.incomplete()) == (1, "")


def chunks(data: bytes, size: int) -> Any:
    """read(n) over data, at most size bytes at a time (a socket's short reads)."""
    position = 0

    def read(wanted: int) -> bytes:
        nonlocal position
        piece = data[position : position + min(wanted, size)]
        position += len(piece)
        return piece

    return read


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def test_output_frames_are_read_across_short_reads_and_a_cut_frame_is_an_error():
    whole = frame(1, b"out") + frame(2, b"err") + frame(1, b"more")
    pieces = list(read_frames(chunks(whole, 3)))
    assert b"".join(data for stream, data in pieces if stream == 1) == b"outmore"
    assert b"".join(data for stream, data in pieces if stream == 2) == b"err"
    for cut in (len(whole) - 2, len(frame(1, b"out")) + 5):
        with pytest.raises(OutputCut, match="before the end of a frame"):
            list(read_frames(chunks(whole[:cut], 3)))
    with pytest.raises(OutputCut, match="a frame header that is not one"):
        list(read_frames(chunks(b"HTTP/1.1 200 OK\r\n", 64)))
    with pytest.raises(OutputCut, match="the engine reported: exec failed"):
        list(read_frames(chunks(frame(3, b"exec failed\n"), 64)))

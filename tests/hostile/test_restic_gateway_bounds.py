"""The subprocess gateway that runs restic keeps a hostile child's output bounded: a repository
can make restic print millions of error lines, or one line of hundreds of MB.

Real child processes (python -c), the real gateway: nothing is mocked.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from restore_tests import execute
from restore_tests.execute import (
    CUT_MARK,
    KEPT_STDERR_BYTES,
    KEPT_STDERR_LINES,
    LINE_LIMIT_BYTES,
    OutputTooLarge,
    TimedOut,
)

MANY_LINES = 1_000_000
HUGE_LINE_BYTES = 500 * 1024 * 1024
MEMORY_BOUND_BYTES = 16 * 1024 * 1024


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def print_lines(stream: str, count: int) -> list[str]:
    line = "f'ignoring error for /f-{i}\\n'"
    return python(f"import sys\nfor i in range({count}): sys.{stream}.write({line})")


def print_one_line(stream: str, size: int, then: str = "") -> list[str]:
    """size bytes without a newline, written in 1 MiB blocks, then an optional normal line."""
    return python(
        f"import sys\nout = sys.{stream}.buffer\nblock = b'x' * 1048576\n"
        f"for _ in range({size // (1024 * 1024)}): out.write(block)\n"
        f"out.write(b'\\n' + {then.encode()!r})\nout.flush()"
    )


@pytest.fixture
def peak_memory() -> Iterator[list[int]]:
    """The peak of Python allocations (every thread) while the test runs."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def test_a_million_stderr_lines_reach_the_callback_but_only_a_tail_is_kept():
    seen = []

    completed = execute.run(
        print_lines("stderr", MANY_LINES), check=False, on_stderr_line=lambda line: seen.append(1)
    )

    assert len(seen) == MANY_LINES
    kept = completed.stderr.splitlines()
    assert len(kept) == KEPT_STDERR_LINES
    assert kept[-1] == f"ignoring error for /f-{MANY_LINES - 1}"
    assert completed.stderr_lines_dropped == MANY_LINES - KEPT_STDERR_LINES
    assert len(completed.stderr) <= KEPT_STDERR_BYTES


def test_give_up_still_sees_a_line_deep_in_a_flood_of_stderr():
    wanted = f"ignoring error for /f-{MANY_LINES // 2}\n"

    completed = execute.run(
        print_lines("stderr", MANY_LINES), check=False, give_up_when=lambda line: line == wanted
    )

    assert completed.gave_up


def test_a_500_mb_stderr_line_is_cut_and_memory_stays_bounded(peak_memory):
    lines: list[str] = []

    completed = execute.run(
        print_one_line("stderr", HUGE_LINE_BYTES, then="Fatal: the end\n"),
        check=False,
        on_stderr_line=lines.append,
    )

    assert completed.returncode == 0
    assert lines[0] == "x" * LINE_LIMIT_BYTES + CUT_MARK + "\n"
    assert lines[1:] == ["Fatal: the end\n"]
    assert completed.stderr.splitlines()[-1] == "Fatal: the end"
    assert len(completed.stderr) <= LINE_LIMIT_BYTES + 100
    tracemalloc_peak = tracemalloc.get_traced_memory()[1]
    assert tracemalloc_peak < MEMORY_BOUND_BYTES, tracemalloc_peak


def test_a_500_mb_streamed_stdout_line_is_cut_too(peak_memory):
    lines: list[str] = []

    execute.run(print_one_line("stdout", HUGE_LINE_BYTES), on_stdout_line=lines.append)

    assert [len(line) for line in lines] == [LINE_LIMIT_BYTES + len(CUT_MARK) + 1]
    assert tracemalloc.get_traced_memory()[1] < MEMORY_BOUND_BYTES


def test_stdout_beyond_its_limit_stops_the_child_and_says_so_whatever_check_says():
    started = time.monotonic()
    argv = python("import sys\nwhile True: sys.stdout.write('x' * 65536)")

    with pytest.raises(OutputTooLarge) as raised:
        execute.run(argv, check=False, stdout_limit=8 * 1024 * 1024)

    assert time.monotonic() - started < 15
    assert str(raised.value).startswith(
        f"{sys.executable} printed more than 8 MiB on stdout: stopped (command: "
        f"{sys.executable} -c import sys"
    )
    assert raised.value.limit_text == "8 MiB"


def test_the_default_stdout_limit_refuses_200_mb_of_json():
    with pytest.raises(OutputTooLarge) as raised:
        execute.run(print_one_line("stdout", 200 * 1024 * 1024))

    assert str(raised.value).startswith(f"{sys.executable} printed more than 64 MiB on stdout")


def test_stdout_within_its_limit_is_returned_whole_even_as_one_long_line():
    completed = execute.run(print_one_line("stdout", 3 * 1024 * 1024), stdout_limit=4 * 1024**2)

    assert completed.stdout == "x" * 3 * 1024 * 1024 + "\n"


def test_a_command_past_its_timeout_is_stopped_with_a_timed_out_error():
    with pytest.raises(TimedOut) as raised:
        execute.run(python("import time; time.sleep(60)"), timeout=0.5)

    assert str(raised.value) == (
        f"timed out after 0s (command: {sys.executable} -c import time; time.sleep(60), "
        "exit code None)"
    )

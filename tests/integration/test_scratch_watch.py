"""The scratch watch on a real folder: a kind that writes past its scratch size is stopped, once,
with a reason that says how much it wrote; one that stays within it is left alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from restore_tests import scratch
from restore_tests.scratch import folder_bytes, watched


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scratch, "POLL_SECONDS", 0.02)


def write(folder: Path, name: str, size: int) -> None:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(os.urandom(size))


def test_the_folder_size_counts_nested_files_and_not_what_links_point_to(tmp_path: Path) -> None:
    write(tmp_path, "a/b/one.bin", 64 * 1024)
    write(tmp_path, "two.bin", 32 * 1024)
    (tmp_path / "outside.bin").symlink_to("/usr/bin/env")

    assert 96 * 1024 <= folder_bytes(tmp_path) < 200 * 1024


def test_a_folder_that_outgrows_its_limit_is_stopped_once_with_the_reason(tmp_path: Path) -> None:
    stops: list[float] = []
    with watched(tmp_path, 256 * 1024, lambda: stops.append(time.monotonic())) as watch:
        for index in range(6):
            write(tmp_path, f"table-{index}", 128 * 1024)
        deadline = time.monotonic() + 5
        while not stops and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # polls go on: no second stop

    assert watch is not None and len(stops) == 1
    assert watch.reason.startswith("the sandbox wrote ")
    assert "more than the 256.0 KiB set aside for it: stopped" in watch.reason


def test_a_folder_within_its_limit_is_never_stopped(tmp_path: Path) -> None:
    stops: list[str] = []
    with watched(tmp_path, 10 * 1024**2, lambda: stops.append("stop")) as watch:
        write(tmp_path, "small", 64 * 1024)
        time.sleep(0.2)

    assert stops == [] and watch is not None and watch.reason == ""


def test_no_folder_means_no_watch() -> None:
    with watched(None, 1, lambda: None) as watch:
        assert watch is None

"""Restore progress on stderr: the rate and ETA math, plain throttled lines, and rich bars."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from restore_tests.report import progress
from restore_tests.report.live_bars import LiveBars
from restore_tests.report.progress import PlainLines, Transfer, eta_text
from restore_tests.sources.base import FetchProgress

GIB, MIB = 1024**3, 1024**2


def transfer(done: int, total: int | None, seconds: float, first: int = 0) -> Transfer:
    """A fetch first reported at t=100 with `first` bytes, and `done` bytes `seconds` later."""
    return Transfer(100.0, first, 100.0 + seconds, FetchProgress(done, total))


def test_the_rate_is_the_bytes_since_the_first_report_over_the_time_since() -> None:
    assert transfer(1200 * MIB, 3 * GIB, 10.0, first=200 * MIB).rate() == 100 * MIB


def test_the_eta_is_what_is_left_at_that_rate() -> None:
    assert transfer(1 * GIB, 3 * GIB, 8.0).eta() == pytest.approx(16.0)


def test_no_rate_and_no_eta_from_a_single_report() -> None:
    single = transfer(1 * GIB, 3 * GIB, 0.0)

    assert (single.rate(), single.eta()) == (None, None)
    assert single.describe() == "33% (1.0 GiB of 3.0 GiB)"


def test_a_stalled_fetch_has_a_zero_rate_and_no_eta() -> None:
    stalled = transfer(GIB, 3 * GIB, 30.0, first=GIB)

    assert (stalled.rate(), stalled.eta()) == (0.0, None)


def test_the_description_has_percent_sizes_rate_and_eta() -> None:
    assert transfer(2 * GIB, 5 * GIB, 8.0).describe() == (
        "40% (2.0 GiB of 5.0 GiB, 256.0 MiB/s, ETA 12s)"
    )


def test_the_percent_is_never_rounded_up_to_done() -> None:
    assert transfer(GIB - 1, GIB, 1.0).describe().startswith("99% ")


def test_without_a_total_only_the_bytes_and_the_rate_are_shown() -> None:
    assert transfer(300 * MIB, None, 3.0).describe() == "300.0 MiB (100.0 MiB/s)"


def test_bytes_past_the_total_never_show_more_than_all_of_it() -> None:
    assert transfer(3 * GIB + 5, 3 * GIB, 10.0).describe().startswith("100% (3.0 GiB of 3.0 GiB")


def test_an_eta_is_whole_seconds_below_ten_then_a_duration() -> None:
    assert [eta_text(s) for s in (0.2, 7.1, 9.6, 41.0, 252.0)] == [
        "1s",
        "7s",
        "10s",
        "41s",
        "4m12s",
    ]


def fake_clock(monkeypatch: pytest.MonkeyPatch, times: list[float]) -> None:
    ticks = iter(times)
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(ticks))


def test_plain_lines_are_timestamped_and_come_at_each_new_tenth(monkeypatch) -> None:
    stream = io.StringIO()
    lines = PlainLines(stream, started=0.0)
    fake_clock(monkeypatch, [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0])

    lines.step("share", "fetching snapshot 1a2b3c4d")  # one time read: the line's stamp
    fake_clock(monkeypatch, [2.0, 2.0, 3.0, 4.0, 4.0, 5.0, 5.0])
    lines.transfer("share", FetchProgress(0, 10 * GIB))
    lines.transfer("share", FetchProgress(GIB // 2, 10 * GIB))  # still the first tenth: quiet
    lines.transfer("share", FetchProgress(4 * GIB, 10 * GIB))
    lines.transfer("share", FetchProgress(10 * GIB, 10 * GIB))

    assert stream.getvalue().splitlines() == [
        "[   1.0s] share: fetching snapshot 1a2b3c4d",
        "[   2.0s] share: restored 0% (0 B of 10.0 GiB)",
        "[   4.0s] share: restored 40% (4.0 GiB of 10.0 GiB, 2.0 GiB/s, ETA 3s)",
        "[   5.0s] share: restored 100% (10.0 GiB of 10.0 GiB, 3.3 GiB/s)",
    ]


def test_plain_lines_without_a_total_come_every_interval(monkeypatch) -> None:
    stream = io.StringIO()
    lines = PlainLines(stream, started=0.0)
    fake_clock(monkeypatch, [0.0, 0.0, 10.0, 31.0, 31.0])

    lines.transfer("db", FetchProgress(0))
    lines.transfer("db", FetchProgress(MIB))
    lines.transfer("db", FetchProgress(31 * MIB))

    assert stream.getvalue().splitlines() == [
        "[   0.0s] db: restored 0 B",
        "[  31.0s] db: restored 31.0 MiB (1.0 MiB/s)",
    ]


def test_each_scenario_has_its_own_tenths(monkeypatch) -> None:
    stream = io.StringIO()
    lines = PlainLines(stream, started=0.0)
    fake_clock(monkeypatch, [0.0] * 8)

    for scenario in ("share", "db", "share", "db"):
        lines.transfer(scenario, FetchProgress(0, 100))

    assert [line.split("] ")[1] for line in stream.getvalue().splitlines()] == [
        "share: restored 0% (0 B of 100 B)",
        "db: restored 0% (0 B of 100 B)",
    ]


def test_on_a_terminal_each_scenario_has_its_own_bar_until_its_verdict() -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=120, color_system=None)
    bars = LiveBars(console, started=0.0)

    bars.step("share", "fetching snapshot 1a2b3c4d")
    bars.transfer("share", FetchProgress(GIB, 4 * GIB))
    bars.step("erp-db", "starting the sandbox (postgres:16)")
    console.print(bars.progress.get_renderable())  # what the live display shows now
    shown = output.getvalue()
    bars.finished("share")

    [share] = [line for line in shown.splitlines() if "share" in line]
    assert re.search(r"share\s+\S+\s+restored 25% \(1\.0 GiB of 4\.0 GiB\)", share)
    assert re.search(r"erp-db\s+\S+\s+starting the sandbox \(postgres:16\)", shown)
    assert [task.fields["scenario"] for task in bars.progress.tasks] == ["erp-db"]


def test_a_verdict_printed_while_the_bars_run_comes_out_whole_above_them() -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=100, color_system=None)
    bars = LiveBars(console, started=0.0)
    verdict = "PASS  share  RTO 4s / 15m  RPO 1h / 26h  12 files hashed (1.0 GiB)"

    with bars.progress:
        bars.transfer("share", FetchProgress(GIB, 2 * GIB))
        bars.progress.refresh()
        console.print(verdict)
        bars.transfer("db", FetchProgress(3 * MIB, 4 * MIB))
        bars.progress.refresh()

    text = output.getvalue()
    assert f"{verdict}\n" in text
    assert (
        "restored 50% (1.0 GiB of 2.0 GiB)" in text and "restored 75% (3.0 MiB of 4.0 MiB)" in text
    )
    assert text.index(verdict) < text.rindex("restored 75%")


def test_quiet_shows_nothing_and_a_pipe_gets_plain_lines() -> None:
    stream = io.StringIO()
    with progress.progress_display(stream, stream, 0.0, shown=False) as silent:
        silent.step("share", "fetching")
        silent.transfer("share", FetchProgress(1, 2))
    with progress.progress_display(stream, stream, 0.0, shown=True) as plain:
        assert isinstance(plain, PlainLines)

    assert stream.getvalue() == ""

"""What a technician watches while scenarios run: each scenario's step and its restore's bytes,
percent, rate and ETA, on stderr.

On a terminal, one rich Progress with a bar per running scenario (several with --jobs N stay
apart); elsewhere (a log, cron), plain throttled lines: "[  12.3s] share: restored 40% (1.2 GiB
of 3.0 GiB, 210.0 MiB/s, ETA 8s)". Sources report a FetchProgress; the rate and ETA are worked
out here, from the first and the latest report of the scenario's fetch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from restore_tests.sources.base import FetchProgress
from restore_tests.timing import format_duration, format_size

PLAIN_INTERVAL_SECONDS = 30.0  # a plain line at least this often, between two tenths
REFRESHES_PER_SECOND = 4


@dataclass
class Transfer:
    """One scenario's fetch as reported so far: its first report, and its latest."""

    first_at: float
    first_bytes: int
    latest_at: float
    latest: FetchProgress

    def rate(self) -> float | None:
        """Bytes per second between the first report and the latest; None before two."""
        seconds = self.latest_at - self.first_at
        if seconds <= 0:
            return None
        return max(self.latest.done_bytes - self.first_bytes, 0) / seconds

    def eta(self) -> float | None:
        """Seconds left at the rate so far; None without a total or a rate, or when done."""
        total, rate = self.latest.total_bytes, self.rate()
        if not total or not rate or self.latest.done_bytes >= total:
            return None
        return (total - self.latest.done_bytes) / rate

    def percent(self) -> int | None:
        total = self.latest.total_bytes
        if not total:
            return None
        return min(100, self.latest.done_bytes * 100 // total)

    def describe(self) -> str:
        """'40% (1.2 GiB of 3.0 GiB, 210.0 MiB/s, ETA 8s)', or '1.2 GiB (210.0 MiB/s)' when
        the total is unknown."""
        total, rate, eta = self.latest.total_bytes, self.rate(), self.eta()
        done = self.latest.done_bytes if not total else min(self.latest.done_bytes, total)
        parts = [format_size(done) + (f" of {format_size(total)}" if total else "")]
        if rate is not None:
            parts.append(f"{format_size(round(rate))}/s")
        if eta is not None:
            parts.append(f"ETA {eta_text(eta)}")
        if total:
            return f"{self.percent()}% ({', '.join(parts)})"
        return f"{parts[0]} ({', '.join(parts[1:])})" if len(parts) > 1 else parts[0]


def eta_text(seconds: float) -> str:
    """Whole seconds below ten seconds (a tenth of a second is noise in an estimate), then as
    any duration is written."""
    return f"{max(1, round(seconds))}s" if seconds < 9.95 else format_duration(seconds)


class Display:
    """Hears the scenarios' steps and fetch reports (from their threads) and shows them."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.transfers: dict[str, Transfer] = {}
        self.lock = threading.Lock()

    def step(self, scenario: str, message: str) -> None:
        """A scenario's new step, in words ("fetching snapshot 1a2b3c4d ...")."""

    def transfer(self, scenario: str, progress: FetchProgress) -> None:
        """A scenario's fetch got further."""
        now = time.monotonic()
        with self.lock:
            known = self.transfers.get(scenario)
            if known is None:
                known = Transfer(now, progress.done_bytes, now, progress)
                self.transfers[scenario] = known
            known.latest_at, known.latest = now, progress
            self.show(scenario, known)

    def show(self, scenario: str, transfer: Transfer) -> None:
        """Render a transfer (called with the lock held)."""

    def finished(self, scenario: str) -> None:
        """The scenario has its verdict: its progress is no longer shown."""
        with self.lock:
            self.transfers.pop(scenario, None)


class PlainLines(Display):
    """Timestamped lines; a fetch's at each new tenth, or after PLAIN_INTERVAL_SECONDS."""

    def __init__(self, stream: TextIO, started: float) -> None:
        super().__init__(started)
        self.stream = stream
        self.shown: dict[str, tuple[int, float]] = {}  # scenario -> last tenth, when

    def step(self, scenario: str, message: str) -> None:
        with self.lock:
            self._line(scenario, message)

    def show(self, scenario: str, transfer: Transfer) -> None:
        tenth = (transfer.percent() or 0) // 10
        last_tenth, last_at = self.shown.get(scenario, (-1, 0.0))
        if tenth > last_tenth or transfer.latest_at - last_at >= PLAIN_INTERVAL_SECONDS:
            self.shown[scenario] = (max(tenth, last_tenth), transfer.latest_at)
            self._line(scenario, f"restored {transfer.describe()}")

    def finished(self, scenario: str) -> None:
        super().finished(scenario)
        with self.lock:
            self.shown.pop(scenario, None)

    def _line(self, scenario: str, message: str) -> None:
        elapsed = time.monotonic() - self.started
        self.stream.write(f"[{elapsed:6.1f}s] {scenario}: {message}\n")
        self.stream.flush()


@contextmanager
def progress_display(
    stream: TextIO, stdout: TextIO, started: float, shown: bool
) -> Iterator[Display]:
    """Where the scenarios' progress goes: nowhere (not shown: --quiet), bars when stream is a
    terminal, else plain lines; the bars are cleared when the block ends."""
    if not shown:
        yield Display(started)
    elif stream.isatty():
        from rich.console import Console  # only on a terminal: rich takes ~0.1 s to import

        from restore_tests.report.live_bars import LiveBars

        bars = LiveBars(Console(file=stream), started, redirect_stdout=stdout.isatty())
        with bars.progress:
            yield bars
    else:
        yield PlainLines(stream, started)

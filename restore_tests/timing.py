"""Durations and sizes as people write them, phase timing, and RTO/RPO verdicts."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$", re.IGNORECASE)

# Phases whose sum is the measured RTO: from the start of fetch to the end of verification.
RTO_PHASES = ("fetch", "sandbox", "load", "verify", "boot")


def parse_duration(text: str) -> float:
    """'90s', '15m', '4h', '7d', '1h30m' -> seconds. Raises ValueError with the accepted forms."""
    compact = text.strip()
    parts = _DURATION.findall(compact)
    if not compact or "".join(number + unit for number, unit in parts) != compact:
        raise ValueError(f"{text!r} is not a duration; write it like 90s, 15m, 4h, 7d or 1h30m")
    return sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)


def parse_size(text: str | int) -> int:
    """'512m', '2g', '1.5GiB', 1024 -> bytes."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size; write it like 512m, 2g or 1.5GiB")
    number, unit = match.groups()
    return int(float(number) * SIZE_UNITS[unit.lower()])


def format_duration(seconds: float | None) -> str:
    """Seconds -> the shortest human form: 0.4s, 41s, 4m12s, 3h12m, 2d4h."""
    if seconds is None:
        return "-"
    if seconds < 9.95:
        return f"{seconds:.1f}s"
    total = round(seconds)
    for unit, size, smaller, smaller_size, shown_from in (
        ("d", 86400, "h", 3600, 2 * 86400),
        ("h", 3600, "m", 60, 3600),
        ("m", 60, "s", 1, 60),
    ):
        if total >= shown_from:
            major, rest = divmod(total, size)
            minor = rest // smaller_size
            return f"{major}{unit}{minor}{smaller}" if minor else f"{major}{unit}"
    return f"{total}s"


def format_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass
class PhaseClock:
    """Times named phases of one scenario run, as spans from the clock's creation."""

    started: float = field(default_factory=time.monotonic)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        begin = time.monotonic() - self.started
        try:
            yield
        finally:
            end = time.monotonic() - self.started
            first, last = self.spans.get(name, (begin, end))
            self.spans[name] = (min(first, begin), max(last, end))

    @property
    def phases(self) -> dict[str, float]:
        return {name: end - begin for name, (begin, end) in self.spans.items()}

    def measured_rto(self) -> float | None:
        """Wall time from the start of the sandbox or the fetch to the end of verification (or
        of the boot check, when there is one)."""
        covered = [self.spans[name] for name in RTO_PHASES if name in self.spans]
        if "fetch" not in self.spans or "verify" not in self.spans:
            return None
        return max(end for _, end in covered) - min(begin for begin, _ in covered)


PASSED, FAILED, UNKNOWN, NOT_CONFIGURED = "passed", "failed", "unknown", "not_configured"


@dataclass(frozen=True)
class Objective:
    """The verdict on one objective (RTO or RPO) and what it was computed from."""

    name: str
    status: str
    measured_seconds: float | None
    target_seconds: float | None
    basis: str

    def describe(self) -> str:
        return f"{format_duration(self.measured_seconds)} / {format_duration(self.target_seconds)}"

    def failure_reason(self) -> str | None:
        if self.status == FAILED and self.name == "rto":
            return (
                f"RTO {format_duration(self.measured_seconds)} exceeds target "
                f"{format_duration(self.target_seconds)}"
            )
        if self.status == FAILED:
            return (
                f"snapshot is {format_duration(self.measured_seconds)} old, RPO is "
                f"{format_duration(self.target_seconds)}"
            )
        if self.status == UNKNOWN:
            return f"{self.name.upper()} could not be established ({self.basis})"
        return None


def judge(name: str, measured: float | None, target: float | None, basis: str) -> Objective:
    """passed / failed against a target; unknown when the measure is missing."""
    if target is None:
        return Objective(name, NOT_CONFIGURED, measured, None, basis)
    if measured is None:
        return Objective(name, UNKNOWN, None, target, basis)
    return Objective(name, PASSED if measured <= target else FAILED, measured, target, basis)

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
# The part of the RTO that grows with the restored data (an RTO projection scales it).
DATA_PHASES = ("fetch", "load", "verify")


# How often a scenario must be proven unless it says (every:): a quarter, with a day to spare.
DEFAULT_EVERY_SECONDS = 92 * 86400.0


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
        """Wall time covered by the sandbox, fetch, load, verify and boot phases: from the start
        of the sandbox or the fetch to the end of verification (or of the boot check), less
        any time none of them ran (the sandbox starts while the source selects; selection and
        the wait for disk space are not part of bringing the data back)."""
        if "fetch" not in self.spans or "verify" not in self.spans:
            return None
        covered = sorted(self.spans[name] for name in RTO_PHASES if name in self.spans)
        total, reached = 0.0, covered[0][0]
        for begin, end in covered:
            total += max(0.0, end - max(begin, reached))
            reached = max(reached, end)
        return total


PASSED, FAILED, UNKNOWN, NOT_CONFIGURED = "passed", "failed", "unknown", "not_configured"
# An RTO held against the projected full restore (objectives.rto_applies_to: full).
PROJECTED = "projected"


@dataclass(frozen=True)
class Projection:
    """A subset restore's RTO scaled to the whole restore point (see project_rto)."""

    restored_bytes: int
    full_bytes: int
    measured_seconds: float
    throughput_bytes_per_second: float
    projected_seconds: float

    def describe(self) -> str:
        """'measured 41s restoring 3.1% of 12.0 GiB'."""
        share = _percent(self.restored_bytes / self.full_bytes)
        return (
            f"measured {format_duration(self.measured_seconds)} restoring {share} of "
            f"{format_size(self.full_bytes)}"
        )


def _percent(fraction: float) -> str:
    """3.1%, 0.042%: small shares keep two significant digits instead of reading as 0.0%."""
    percent = 100 * fraction
    return f"{percent:.1f}%" if percent >= 0.1 else f"{percent:.2g}%"


def project_rto(
    phases: dict[str, float],
    measured_rto: float | None,
    restored_bytes: int,
    full_bytes: int | None,
) -> Projection | None:
    """The full restore's RTO, projected from a subset restore.

    Fetch, load and verify grow with the data (DATA_PHASES); the rest of the measured RTO
    (sandbox start, a boot check, the gaps between phases) is a fixed cost. The projection is
    the fixed part plus the data part scaled by full_bytes / restored_bytes (never below 1: a
    projection is not shorter than what was measured). A server's wait for readiness falls in
    load and is scaled too: the projection errs long. None when a size is unknown or zero, or
    nothing was timed.
    """
    data_seconds = sum(phases.get(name, 0.0) for name in DATA_PHASES)
    if measured_rto is None or not full_bytes or restored_bytes <= 0 or data_seconds <= 0:
        return None
    fixed_seconds = max(measured_rto - data_seconds, 0.0)
    scale = max(full_bytes / restored_bytes, 1.0)
    return Projection(
        restored_bytes,
        full_bytes,
        measured_rto,
        throughput_bytes_per_second=restored_bytes / data_seconds,
        projected_seconds=fixed_seconds + data_seconds * scale,
    )


@dataclass(frozen=True)
class Objective:
    """The verdict on one objective (RTO or RPO) and what it was computed from."""

    name: str
    status: str
    measured_seconds: float | None
    target_seconds: float | None
    basis: str
    projection: Projection | None = None  # what an RTO with basis PROJECTED was judged on

    def describe(self) -> str:
        return f"{format_duration(self.measured_seconds)} / {format_duration(self.target_seconds)}"

    def failure_reason(self) -> str | None:
        if self.basis == PROJECTED and self.status in (FAILED, UNKNOWN):
            return self._projection_reason()
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

    def _projection_reason(self) -> str:
        if self.projection is None:
            return "full-restore RTO could not be projected (restored or full size unknown)"
        return (
            f"projected full-restore RTO {format_duration(self.projection.projected_seconds)} "
            f"exceeds target {format_duration(self.target_seconds)} "
            f"({self.projection.describe()})"
        )


def judge(name: str, measured: float | None, target: float | None, basis: str) -> Objective:
    """passed / failed against a target; unknown when the measure is missing."""
    if target is None:
        return Objective(name, NOT_CONFIGURED, measured, None, basis)
    if measured is None:
        return Objective(name, UNKNOWN, None, target, basis)
    return Objective(name, PASSED if measured <= target else FAILED, measured, target, basis)


def judge_projected_rto(
    measured: float | None, target: float | None, projection: Projection | None
) -> Objective:
    """The RTO of a subset restore held against its projected full restore: the measured RTO
    is kept as measured, the status comes from the projection; unknown without one."""
    if target is None:
        return Objective("rto", NOT_CONFIGURED, measured, None, PROJECTED, projection)
    if projection is None:
        return Objective("rto", UNKNOWN, measured, target, PROJECTED)
    met = projection.projected_seconds <= target
    return Objective("rto", PASSED if met else FAILED, measured, target, PROJECTED, projection)

"""The alternating runner: quiet machine before each timed command, rotated order, medians.

Before each timed command the runner syncs, waits until the disk is quiet (deleting a restored
tree on ext4 mounted with `discard` keeps it busy for seconds) and until other processes leave
the CPUs alone. The CPU time other processes used during a measurement is counted ("foreign
CPU"); above the procedure's allowance the measurement is taken again, up to ATTEMPTS times.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bench.perf.common import MIB, log

SETTLE_DEVICE: list[Path] = []  # /sys/dev/block/M:m/stat of the work folder's disk
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IDLE_SHARE = 0.10  # the machine counts as idle below 10% of all CPUs busy
FOREIGN_LIMIT = 1.5  # CPU-s of other processes that void a measurement (it is taken again)
ATTEMPTS = 6


# -- a quiet machine ----------------------------------------------------------------------------


def device_stat(folder: Path) -> Path | None:
    """The block device statistics file of the disk holding folder (None if not found)."""
    number = os.stat(folder).st_dev
    for candidate in (f"{os.major(number)}:{os.minor(number)}", f"{os.major(number)}:0"):
        stat = Path("/sys/dev/block") / candidate / "stat"
        if stat.exists():
            return stat
    return None


def watch_disk_of(folder: Path) -> None:
    """settle() waits for the disk holding folder to be quiet."""
    stat = device_stat(folder)
    SETTLE_DEVICE.clear()
    if stat is not None:
        SETTLE_DEVICE.append(stat)


def settle(limit: float = 30.0) -> None:
    """Untimed: flush dirty pages, then wait until the disk is quiet and the CPUs idle.

    Quiet means two consecutive half-seconds with under 4 MiB written and 16 MiB discarded.
    """
    os.sync()
    if not SETTLE_DEVICE:
        time.sleep(1.0)
        return
    deadline = time.monotonic() + limit
    quiet = 0

    def sample() -> tuple[int, int]:
        fields = SETTLE_DEVICE[0].read_text().split()
        written = int(fields[6])
        discarded = int(fields[13]) if len(fields) > 13 else 0
        return written, discarded

    before = sample()
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        after = sample()
        written, discarded = ((after[i] - before[i]) * 512 for i in range(2))
        quiet = quiet + 1 if written < 4 * MIB and discarded < 16 * MIB else 0
        before = after
    wait_for_idle_cpu()


def cpu_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine so far (all CPUs, /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS  # minus idle and iowait


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its waited-for children (restic under the harness too)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def wait_for_idle_cpu(limit: float = 600.0) -> float:
    """Wait (untimed) until other processes leave the CPUs alone; returns the seconds waited."""
    started = time.monotonic()
    quiet, warned = 0, False
    while quiet < 2 and time.monotonic() - started < limit:
        busy, own = cpu_busy_seconds(), own_cpu_seconds()
        time.sleep(0.5)
        foreign = (cpu_busy_seconds() - busy) - (own_cpu_seconds() - own)
        share = foreign / 0.5 / (os.cpu_count() or 1)
        quiet = quiet + 1 if share < IDLE_SHARE else 0
        if not quiet and not warned and time.monotonic() - started > 5:
            log(f"waiting for other processes to leave the CPUs ({share:.0%} busy)")
            warned = True
    waited = time.monotonic() - started
    if warned:
        log(f"machine idle after {waited:.0f} s" if quiet >= 2 else "machine still busy: going on")
    return waited


DOCKER_CGROUPS = (
    Path("/sys/fs/cgroup/cpuacct/docker/cpuacct.usage"),  # cgroup v1, cgroupfs driver: ns
    Path("/sys/fs/cgroup/docker/cpu.stat"),  # cgroup v2, cgroupfs driver: usage_usec
    Path("/sys/fs/cgroup/system.slice/cpu.stat"),  # cgroup v2, systemd driver (and others)
)
DOCKER_DAEMONS = ("dockerd", "containerd", "containerd-shim", "runc")


def attributed_cpu_seconds() -> tuple[float, float]:
    """CPU seconds so far of the work done for the benchmark by others: (Docker, kernel).

    Docker: its containers' cgroup (the sandboxes' commands) and its daemons with the children
    they reaped. Kernel: the kernel's threads (block I/O workers writing and discarding for the
    restores and removals measured).
    """
    docker = 0.0
    for path in DOCKER_CGROUPS:
        if path.exists():
            text = path.read_text()
            if path.name == "cpuacct.usage":
                docker += int(text) / 1e9
            else:
                usage = next(line for line in text.splitlines() if line.startswith("usage_usec"))
                docker += int(usage.split()[1]) / 1e6
            break
    kernel = 0.0
    for process in Path("/proc").iterdir():
        if process.name.isdigit():
            name, parent, seconds = process_cpu(process)
            if name in DOCKER_DAEMONS:
                docker += seconds
            elif parent == 2:  # a child of kthreadd
                kernel += seconds
    return docker, kernel


def process_cpu(process: Path) -> tuple[str, int, float]:
    """(name, parent pid, CPU seconds with the children it reaped) of a /proc/PID folder."""
    try:
        text = (process / "stat").read_text()
    except OSError:
        return "", 0, 0.0
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text.rsplit(")", 1)[1].split()
    return name, int(fields[1]), sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


class ForeignCpu:
    """CPU seconds used by other processes while a measurement ran (a contamination check).

    Docker's work (its daemons, the sandboxes' commands) and the kernel's threads (the block
    I/O of the restores and removals) are counted apart, in `docker` and `kernel`: they work
    for what is measured. What is left, `seconds`, is other people's work.
    """

    def __enter__(self) -> ForeignCpu:
        self.busy, self.own = cpu_busy_seconds(), own_cpu_seconds()
        self.attributed = attributed_cpu_seconds()
        self.seconds = self.docker = self.kernel = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        docker, kernel = attributed_cpu_seconds()
        self.docker, self.kernel = docker - self.attributed[0], kernel - self.attributed[1]
        others = (cpu_busy_seconds() - self.busy) - (own_cpu_seconds() - self.own)
        self.seconds = max(0.0, others - self.docker - self.kernel)


class Attempted(Protocol):
    foreign_cpu: float
    attempts: int


Taken = TypeVar("Taken", bound=Attempted)


def measure(take: Callable[[], Taken], label: str, limit: float = FOREIGN_LIMIT) -> Taken:
    """Take a measurement again while other processes used the CPUs meanwhile (a few times);
    if every attempt was disturbed, the least disturbed one."""
    taken: list[Taken] = []
    for attempt in range(1, ATTEMPTS + 1):
        taken.append(take())
        taken[-1].attempts = attempt
        if taken[-1].foreign_cpu <= limit:
            return taken[-1]
        log(
            f"({label}) voided: other processes used {taken[-1].foreign_cpu:.1f} CPU-s "
            f"meanwhile (limit {limit:.1f}; attempt {attempt} of {ATTEMPTS})"
        )
    least = min(taken, key=lambda each: each.foreign_cpu)
    least.attempts = ATTEMPTS
    return least


# -- procedures and rounds ----------------------------------------------------------------------


@dataclass
class Outcome:
    """One timed run of a procedure: the verdict time and whether it passed."""

    seconds: float
    passed: bool
    detail: dict[str, Any] = field(default_factory=dict)
    foreign_cpu: float = 0.0
    attempts: int = 1
    round: int = 0


class Procedure(Protocol):
    """prepare() and finish() are untimed; run() times only what comes before the verdict."""

    name: str
    sandboxes: int  # Docker sandboxes it starts: a little more foreign CPU is allowed

    def prepare(self) -> None: ...

    def run(self) -> Outcome: ...

    def finish(self) -> None: ...


def foreign_allowance(procedure: Procedure) -> float:
    return FOREIGN_LIMIT + 0.2 * procedure.sandboxes


def take(procedure: Procedure) -> Outcome:
    """prepare, settle, then the timed run under the foreign-CPU watch, then finish."""
    procedure.prepare()
    settle()
    with ForeignCpu() as foreign:
        outcome = procedure.run()
    outcome.foreign_cpu = foreign.seconds
    outcome.detail["docker_cpu_seconds"] = foreign.docker
    outcome.detail["kernel_cpu_seconds"] = foreign.kernel
    procedure.finish()
    return outcome


def rotated(names: Sequence[str], number: int) -> list[str]:
    """Round 1: a,b,c; round 2: b,c,a; ... (with two: a,b then b,a)."""
    shift = (number - 1) % len(names)
    return [*names[shift:], *names[:shift]]


def run_rounds(
    procedures: Sequence[Procedure], rounds: int, label: str
) -> dict[str, list[Outcome]]:
    """Every procedure once per round, in a rotated order; the outcomes by procedure name."""
    by_name = {procedure.name: procedure for procedure in procedures}
    outcomes: dict[str, list[Outcome]] = {name: [] for name in by_name}
    for number in range(1, rounds + 1):
        for name in rotated(list(by_name), number):
            procedure = by_name[name]
            outcome = measure(
                lambda procedure=procedure: take(procedure),  # type: ignore[misc]
                f"{label} {name}",
                foreign_allowance(procedure),
            )
            outcome.round = number
            outcomes[name].append(outcome)
            log(
                f"{label} round {number} {name}: {outcome.seconds:.2f} s "
                f"{'PASS' if outcome.passed else 'NOT PASSED'} "
                f"(other CPU {outcome.foreign_cpu:.1f} s)"
            )
    return outcomes


def median_seconds(outcomes: list[Outcome]) -> float:
    return statistics.median(outcome.seconds for outcome in outcomes)

"""One scenario, end to end: preflight, select, fetch, sandbox, load, verify, verdict, teardown.

Every outcome becomes a ScenarioResult: a damaged backup is a FAIL, anything that stopped the
checks from running is an ERROR with a one-line reason. Sandbox and staging are removed on every
path (unless --keep), also when the run is interrupted.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import docker

from restore_tests import execute
from restore_tests.errors import (
    DamagedBackup,
    EnvironmentUnusable,
    Interrupted,
    ObjectiveMissed,
    PreflightError,
    RestoreTestsError,
)
from restore_tests.results import (
    CAUSE_ENVIRONMENT,
    CAUSE_INTERRUPTED,
    ERROR,
    FAIL,
    ScenarioResult,
)
from restore_tests.sandbox import RESTORE_MOUNT, SandboxSpec, check_image, sandbox
from restore_tests.scenario import ScenarioBase
from restore_tests.sources.restic import Restic, Snapshot
from restore_tests.timing import PhaseClock, format_size, judge
from runners import RUNNERS
from runners.base import RunContext, Runner

log = logging.getLogger(__name__)
DISK_MARGIN = 1.05  # keep 5% spare: a restore that fills the disk harms the host
RESTORE_LIMIT_FACTOR = 4
RESTORE_LIMIT_MINIMUM = 30.0


@dataclass(frozen=True)
class RunOptions:
    run_id: str
    work_dir: Path  # staging directories are created below it, one per scenario run
    keep: bool = False
    no_cache: bool = False
    progress: Callable[[str, str], None] = lambda scenario, message: None


def now() -> datetime:
    return datetime.now(UTC)


def run_scenario(
    scenario: ScenarioBase, options: RunOptions, client: docker.DockerClient
) -> ScenarioResult:
    """Run one scenario; never raises for a scenario's own failure (it is the verdict)."""
    result = ScenarioResult.begin(scenario, now())
    clock = PhaseClock()
    stack = ExitStack()
    try:
        _run(scenario, options, client, result, clock, stack)
    except (DamagedBackup, ObjectiveMissed) as error:
        result.status, result.reason = FAIL, str(error)
    except Interrupted:
        result.status, result.cause = ERROR, CAUSE_INTERRUPTED
        result.reason = f"interrupted during {_last_phase(clock)}"
    except EnvironmentUnusable as error:
        result.status, result.reason, result.cause = ERROR, str(error), CAUSE_ENVIRONMENT
    except RestoreTestsError as error:
        result.status, result.reason = ERROR, str(error)
    except Exception as error:  # a bug must still leave a verdict and a clean machine
        log.debug("internal error in %s", scenario.name, exc_info=True)
        result.status, result.reason = ERROR, f"internal error: {type(error).__name__}: {error}"
    finally:
        with clock.phase("teardown"):
            stack.close()
        result.phases = clock.phases
        result.finished_at = now()
    return result


def _run(
    scenario: ScenarioBase,
    options: RunOptions,
    client: docker.DockerClient,
    result: ScenarioResult,
    clock: PhaseClock,
    stack: ExitStack,
) -> None:
    runner = RUNNERS[scenario.kind]()
    source = scenario.source
    staging = options.work_dir / f"{options.run_id}-{scenario.name}"

    def say(message: str) -> None:
        options.progress(scenario.name, message)

    with clock.phase("preflight"):
        image = scenario.sandbox.image or runner.default_image
        check_image(client, image)
        staging.mkdir(parents=True, exist_ok=False)
        if not options.keep:
            stack.callback(shutil.rmtree, staging, ignore_errors=True)
        cache_dir = None if options.no_cache or source.is_local else staging / "cache"
        restic = Restic(source, cache_dir)
        result.source_version = restic.version_text()
        restic.environment()  # resolve the password now: a missing one is a preflight error
        restic.check_reachable()
    with clock.phase("select"):
        say(f"selecting a snapshot in {restic.location}")
        snapshot = restic.select(source.snapshot)
        result.snapshot_id, result.snapshot_time = snapshot.id, snapshot.time
        age = (now() - snapshot.time).total_seconds()
        result.rpo = judge("rpo", max(age, 0.0), scenario.objectives.rpo, "snapshot_time")
    with clock.phase("preflight"):
        _check_disk(restic, snapshot, staging, bool(source.include))
    _interrupt_point()
    restore_root = staging / "restore"
    restore_root.mkdir()
    with clock.phase("sandbox"):
        # Started before the restore: the engine syncs the filesystem when it mounts a
        # container, which after the restore would first write back every restored byte.
        say(f"starting the sandbox ({image})")
        spec = _sandbox_spec(scenario, options, image, restore_root)
        box = stack.enter_context(sandbox(client, spec, keep=options.keep))
        if options.keep:
            result.kept = (
                f"sandbox: docker exec -it {box.name} sh ; staging: {staging} "
                f"(remove with: restore-tests prune --run {options.run_id})"
            )
        else:
            # For the same reason, restored data goes before the container: data deleted before
            # it was written back costs no disk writes.
            stack.callback(shutil.rmtree, staging, ignore_errors=True)
    _interrupt_point()
    with clock.phase("fetch"):
        say(f"restoring snapshot {snapshot.short_id} ({snapshot.time:%Y-%m-%d %H:%M} UTC)")
        outcome = restic.restore(
            snapshot,
            restore_root,
            source.include,
            runner.wants_restic_verify(scenario),
            _percent_reporter(say),
            timeout=_restore_limit(scenario),
        )
    context = RunContext(scenario, restore_root, snapshot, outcome, box, say)
    _run_checks(runner, context, clock, result)
    result.rto = judge("rto", clock.measured_rto(), scenario.objectives.rto, "measured")
    result.conclude()


def _run_checks(
    runner: Runner, context: RunContext, clock: PhaseClock, result: ScenarioResult
) -> None:
    with clock.phase("load"):
        result.checks.extend(runner.load(context))
    _interrupt_point()
    with clock.phase("verify"):
        result.checks.extend(runner.verify(context))
    _interrupt_point()
    result.files, result.bytes = context.files, context.bytes


def _restore_limit(scenario: ScenarioBase) -> float | None:
    """A restore far past its RTO is stopped: waiting longer proves nothing more."""
    rto = scenario.objectives.rto
    return None if rto is None else max(RESTORE_LIMIT_FACTOR * rto, RESTORE_LIMIT_MINIMUM)


def _check_disk(restic: Restic, snapshot: Snapshot, staging: Path, partial: bool) -> None:
    """Refuse a restore that would not fit (a partial restore is bounded by the full size)."""
    if partial:
        return
    needed = restic.restore_size(snapshot)
    free = shutil.disk_usage(staging).free
    if needed is not None and needed * DISK_MARGIN > free:
        raise PreflightError(
            f"not enough disk space in {staging.parent}: the restore needs "
            f"{format_size(needed)}, {format_size(free)} free"
        )


def _sandbox_spec(
    scenario: ScenarioBase, options: RunOptions, image: str, restore_root: Path
) -> SandboxSpec:
    settings = scenario.sandbox
    return SandboxSpec(
        image=image,
        run_id=options.run_id,
        scenario=scenario.name,
        memory_bytes=settings.memory,
        pids=settings.pids,
        cpus=settings.cpus,
        read_only_mounts={str(restore_root): RESTORE_MOUNT},
    )


def _percent_reporter(say: Callable[[str], None]) -> Callable[[float], None]:
    shown = [-1]

    def report(fraction: float) -> None:
        tenth = int(fraction * 10)
        if tenth > shown[0]:
            shown[0] = tenth
            say(f"restored {tenth * 10}%")

    return report


def _interrupt_point() -> None:
    if execute.cancel_requested():
        raise Interrupted()


def _last_phase(clock: PhaseClock) -> str:
    return max(clock.spans, key=lambda name: clock.spans[name][0]) if clock.spans else "start"

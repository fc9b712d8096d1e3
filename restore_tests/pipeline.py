"""One scenario, end to end: preflight, select, fetch, sandbox, load, verify, verdict, teardown.

Every outcome becomes a ScenarioResult: a damaged backup is a FAIL, anything that stopped the
checks from running is an ERROR with a one-line reason. Sandbox and staging are removed on every
path (unless --keep), also when the run is interrupted.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import docker

from restore_tests import execute, restored
from restore_tests.cleanup import dispose, wait_for_removals
from restore_tests.errors import (
    DamagedBackup,
    EnvironmentUnusable,
    HostError,
    Interrupted,
    ObjectiveMissed,
    PreflightError,
    RestoreTestsError,
)
from restore_tests.restored import RestoredTree
from restore_tests.results import (
    CAUSE_ENVIRONMENT,
    CAUSE_INTERRUPTED,
    ERROR,
    FAIL,
    Check,
    ScenarioResult,
)
from restore_tests.sandbox import RESTORE_MOUNT, Sandbox, SandboxSpec, check_image, sandbox
from restore_tests.scenario import ScenarioBase
from restore_tests.sources.restic import Restic, Snapshot
from restore_tests.sources.restic_output import RestoreOutcome
from restore_tests.staging import PRIVATE, create_staging
from restore_tests.timing import PhaseClock, format_size, judge
from runners import RUNNERS
from runners.base import RunContext, Runner, name_list

log = logging.getLogger(__name__)
DISK_MARGIN = 1.05  # keep 5% spare: a restore that fills the disk harms the host
RESTORE_LIMIT_FACTOR = 4
RESTORE_LIMIT_MINIMUM = 30.0
REMOVAL_WAIT_SECONDS = 300.0


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
    run = ScenarioRun(scenario, options, client)
    result = run.result
    try:
        run.steps()
    except (DamagedBackup, ObjectiveMissed) as error:
        result.status, result.reason = FAIL, str(error)
    except Interrupted:
        result.status, result.cause = ERROR, CAUSE_INTERRUPTED
        result.reason = f"interrupted during {_last_phase(run.clock)}"
    except EnvironmentUnusable as error:
        result.status, result.reason, result.cause = ERROR, str(error), CAUSE_ENVIRONMENT
    except OSError as error:  # the host's disk or permissions, never a verdict on the backup
        result.status, result.cause = ERROR, CAUSE_ENVIRONMENT
        result.reason = f"on this host: {error.strerror or error}: {error.filename or ''}".strip()
    except RestoreTestsError as error:
        result.status, result.reason = ERROR, str(error)
    except Exception as error:  # a bug must still leave a verdict and a clean machine
        log.debug("internal error in %s", scenario.name, exc_info=True)
        result.status, result.reason = ERROR, f"internal error: {type(error).__name__}: {error}"
    finally:
        with run.clock.phase("teardown"):
            run.stack.close()
        result.phases = run.clock.phases
        result.finished_at = now()
    return result


class ScenarioRun:
    """The steps of one scenario run, in order; what they leave behind is on `stack`."""

    def __init__(
        self, scenario: ScenarioBase, options: RunOptions, client: docker.DockerClient
    ) -> None:
        self.scenario, self.options, self.client = scenario, options, client
        self.runner: Runner = RUNNERS[scenario.kind]()
        self.result = ScenarioResult.begin(scenario, now())
        self.clock = PhaseClock()
        self.stack = ExitStack()
        self.staging = options.work_dir  # replaced by the run's own folder in preflight
        self.restore_root = self.staging / "restore"
        self.image = scenario.sandbox.image or self.runner.default_image

    def say(self, message: str) -> None:
        self.options.progress(self.scenario.name, message)

    def steps(self) -> None:
        restic = self.preflight()
        snapshot = self.select(restic)
        _interrupt_point()
        with ThreadPoolExecutor(1, thread_name_prefix="disk-check") as background:
            # restic stats (the disk check) and the container start are independent.
            subset = bool(self.scenario.source.include)
            disk_check = background.submit(_check_disk, restic, snapshot, self.staging, subset)
            box = self.start_sandbox()
            with self.clock.phase("preflight"):
                disk_check.result()
        _interrupt_point()
        outcome = self.fetch(restic, snapshot)
        _interrupt_point()
        tree = self.inspect_restored_tree()
        context = RunContext(
            self.scenario, self.restore_root, snapshot, outcome, box, self.say, tree
        )
        self.check(context)
        rto = self.clock.measured_rto()
        self.result.rto = judge("rto", rto, self.scenario.objectives.rto, "measured")
        self.result.conclude()

    def preflight(self) -> Restic:
        source = self.scenario.source
        with self.clock.phase("preflight"):
            check_image(self.client, self.image)
            self.staging = create_staging(self.options.work_dir, self.options.run_id)
            self.restore_root = self.staging / "restore"
            if not self.options.keep:
                self.stack.callback(dispose, self.staging)
            os.mkdir(self.restore_root, PRIVATE)
            no_cache = self.options.no_cache or source.is_local
            restic = Restic(source, None if no_cache else self.staging / "cache")
            self.result.source_version = restic.version_text()
            restic.environment()  # resolve the password now: a missing one is a preflight error
            restic.check_reachable()
        return restic

    def select(self, restic: Restic) -> Snapshot:
        with self.clock.phase("select"):
            self.say(f"selecting a snapshot in {restic.location}")
            snapshot = restic.select(self.scenario.source.snapshot)
            self.result.snapshot_id, self.result.snapshot_time = snapshot.id, snapshot.time
            age = max((now() - snapshot.time).total_seconds(), 0.0)
            self.result.rpo = judge("rpo", age, self.scenario.objectives.rpo, "snapshot_time")
        return snapshot

    def start_sandbox(self) -> Sandbox:
        """Started before the restore: the engine syncs the filesystem when it mounts a
        container, which after the restore would first write back every restored byte. At the
        end, a detached reaper deletes the staging folder, then the container (cleanup.dispose).
        """
        with self.clock.phase("sandbox"):
            self.say(f"starting the sandbox ({self.image})")
            spec = _sandbox_spec(self.scenario, self.options, self.image, self.restore_root)
            hand_off = None if self.options.keep else partial(dispose, self.staging)
            box = self.stack.enter_context(
                sandbox(self.client, spec, keep=self.options.keep, hand_off=hand_off)
            )
            if self.options.keep:
                self.result.kept = (
                    f"sandbox: docker exec -it {box.name} sh ; staging: {self.staging} "
                    f"(remove with: restore-tests prune --run {self.options.run_id})"
                )
        return box

    def fetch(self, restic: Restic, snapshot: Snapshot) -> RestoreOutcome:
        with self.clock.phase("fetch"):
            self.say(f"restoring snapshot {snapshot.short_id} ({snapshot.time:%Y-%m-%d %H:%M} UTC)")
            return restic.restore(
                snapshot,
                self.restore_root,
                self.scenario.source.include,
                self.runner.wants_restic_verify(self.scenario),
                _percent_reporter(self.say),
                timeout=_restore_limit(self.scenario),
            )

    def inspect_restored_tree(self) -> RestoredTree:
        """Walk what was restored once: the runners' index, and the sweep of setuid bits and
        device nodes (part of making the data available, so inside the fetch span)."""
        with self.clock.phase("fetch"):
            self.say("walking the restored tree")
            try:
                tree = restored.walk(self.restore_root, execute.cancel_requested)
            except OSError as error:  # fail closed: unsafe data is not opened
                raise HostError(
                    f"could not make the restored data safe on this host: "
                    f"{error.strerror or error}: {error.filename}"
                ) from error
        self.result.checks.extend(tree_checks(tree))
        return tree

    def check(self, context: RunContext) -> None:
        with self.clock.phase("load"):
            self.result.checks.extend(self.runner.load(context))
        _interrupt_point()
        with self.clock.phase("verify"):
            self.result.checks.extend(self.runner.verify(context))
        _interrupt_point()
        self.result.files, self.result.bytes = context.files, context.bytes


def tree_checks(tree: RestoredTree) -> list[Check]:
    """What the walk found that matters whatever the kind: unsafe entries, unreadable folders."""
    checks = []
    unreadable = tree.unreadable_folders
    if unreadable.count:
        checks.append(
            Check.error(
                "restored tree",
                f"could not read {unreadable.count:,} restored folders on this host: "
                f"{name_list(unreadable.names, total=unreadable.count)}",
            )
        )
    summary = tree.special.summary()
    if summary:
        special = tree.special
        names = special.setuid.names + special.devices.names + special.fifos_and_sockets.names
        checks.append(
            Check.passed("special files", observed=summary, detail="first: " + name_list(names, 20))
        )
    return checks


def _restore_limit(scenario: ScenarioBase) -> float | None:
    """A restore far past its RTO is stopped: waiting longer proves nothing more."""
    rto = scenario.objectives.rto
    return None if rto is None else max(RESTORE_LIMIT_FACTOR * rto, RESTORE_LIMIT_MINIMUM)


def _check_disk(restic: Restic, snapshot: Snapshot, staging: Path, partial: bool) -> None:
    """Refuse a restore that would not fit (a partial restore is bounded by the full size).

    Space that earlier scenarios are still freeing is waited for before refusing.
    """
    if partial:
        return
    needed = restic.restore_size(snapshot)
    if needed is None:
        return
    if needed * DISK_MARGIN > shutil.disk_usage(staging).free:
        wait_for_removals(staging.parent, REMOVAL_WAIT_SECONDS)
    free = shutil.disk_usage(staging).free
    if needed * DISK_MARGIN > free:
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

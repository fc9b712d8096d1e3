"""One scenario, end to end, as an ordered list of steps.

preflight -> select -> space -> sandbox -> fetch -> load -> verify (-> boot) -> teardown. A
kind's server starts with the sandbox and comes up while the data is fetched; its readiness is
awaited at the start of load. Each step's span is recorded once and no span holds another; the
measured RTO covers sandbox, fetch, load, verify and boot (the data brought back and shown
usable), not the wait for disk space. The pipeline knows a source and a runner only through their
interfaces (sources/base.py, runners/base.py).

Every outcome becomes a ScenarioResult: a damaged backup is a FAIL, anything that stopped the
checks from running is an ERROR with a one-line reason. Sandbox and staging are removed on every
path (unless --keep), also when the run is interrupted.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Protocol

from restore_tests import execute, restored
from restore_tests.background import Background
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
from restore_tests.prehash import EarlyDigests
from restore_tests.restored import RestoredTree
from restore_tests.results import (
    CAUSE_ENVIRONMENT,
    CAUSE_INTERRUPTED,
    ERROR,
    FAIL,
    Check,
    ScenarioResult,
    name_list,
)
from restore_tests.sandbox import RESTORE_MOUNT, Sandbox, SandboxSpec
from restore_tests.scenario import ScenarioBase
from restore_tests.scratch import ScratchWatch, watched
from restore_tests.sources import SOURCES
from restore_tests.sources.base import Fetched, FetchProgress, FetchRequest, RestorePoint, Source
from restore_tests.staging import PRIVATE, create_staging
from restore_tests.timing import PhaseClock, format_size, judge, judge_projected_rto, project_rto
from runners import RUNNERS
from runners.base import RunContext, Runner, SandboxNeeds

log = logging.getLogger(__name__)
DISK_MARGIN = 1.05  # keep 5% spare: a restore that fills the disk harms the host
RESTORE_LIMIT_FACTOR = 4
RESTORE_LIMIT_MINIMUM = 30.0
REMOVAL_WAIT_SECONDS = 300.0


class Sandboxes(Protocol):
    """Where sandboxes come from: the Docker engine (sandbox.DockerSandboxes), or a fake."""

    def check_image(self, image: str) -> None: ...

    def open(
        self, spec: SandboxSpec, keep: bool, hand_off: Callable[[str], bool] | None
    ) -> AbstractContextManager[Sandbox]: ...


@dataclass(frozen=True)
class RunOptions:
    run_id: str
    work_dir: Path  # staging directories are created below it, one per scenario run
    keep: bool = False
    no_cache: bool = False
    progress: Callable[[str, str], None] = lambda scenario, message: None  # steps, as words
    fetch_progress: Callable[[str, FetchProgress], None] = lambda scenario, progress: None


def now() -> datetime:
    return datetime.now(UTC)


def run_scenario(
    scenario: ScenarioBase, options: RunOptions, sandboxes: Sandboxes
) -> ScenarioResult:
    """Run one scenario; never raises for a scenario's own failure (it is the verdict)."""
    run = ScenarioRun(scenario, options, sandboxes)
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

    def __init__(self, scenario: ScenarioBase, options: RunOptions, sandboxes: Sandboxes) -> None:
        self.scenario, self.options, self.sandboxes = scenario, options, sandboxes
        self.runner: Runner = RUNNERS[scenario.kind]()
        self.result = ScenarioResult.begin(scenario, now())
        self.clock = PhaseClock()
        self.stack = ExitStack()
        self.image = scenario.sandbox.image or self.runner.default_image
        self.scratch_folder: Path | None = None  # the kind's scratch space, when on disk
        self.container_running = 0.0  # when the sandbox's container was up (monotonic)

    def say(self, message: str) -> None:
        self.options.progress(self.scenario.name, message)

    def steps(self) -> None:
        staging, source = self.preflight()
        target = staging / "restore"
        os.mkdir(target, PRIVATE)
        sandbox_ready = None
        if not self.runner.sandbox_sized_by_point:
            needs = self.runner.sandbox_needs(self.scenario, None)
            sandbox_ready = self.start_sandbox_meanwhile(staging, target, needs)
        point = self.select(source)
        if sandbox_ready is None:
            needs = self.runner.sandbox_needs(self.scenario, point)
        self.make_space(source, point, staging, needs)
        if sandbox_ready is None:
            box = self.start_sandbox(staging, target, needs, self.stack)
        early = self.hash_early(target)
        fetched, tree = self.fetch(source, point, staging, target, early)
        if sandbox_ready is not None:
            # Still starting when the selection was quick (a listing started early): the
            # fetch began meanwhile, while restic derives its key and reads the index.
            box = sandbox_ready()
        context = RunContext(self.scenario, fetched.root, point, box, self.say, tree, early=early)
        self.check(context, needs)
        self.judge_rto(point, tree.bytes)
        self.result.conclude()

    def preflight(self) -> tuple[Path, Source]:
        settings = self.scenario.source
        with self.clock.phase("preflight"):
            self.sandboxes.check_image(self.image)
            staging = create_staging(self.options.work_dir, self.options.run_id)
            if not self.options.keep:
                self.stack.callback(dispose, staging)
            scratch = staging / "source"
            os.mkdir(scratch, PRIVATE)
            source = SOURCES[settings.type](settings, scratch, self.options.no_cache)
            self.result.source_version = source.version()
            source.preflight()
        _interrupt_point()
        return staging, source

    def select(self, source: Source) -> RestorePoint:
        with self.clock.phase("select"):
            self.say(f"selecting what to restore in {source.location}")
            point = source.select()
            self.result.snapshot_id, self.result.snapshot_time = point.id, point.time
            newest = point.recovery_time  # a drill of an older point: the RPO is the newest's
            age = None if newest is None else max((now() - newest).total_seconds(), 0.0)
            self.result.rpo = judge("rpo", age, self.scenario.objectives.rpo, point.time_basis)
        _interrupt_point()
        return point

    def judge_rto(self, point: RestorePoint, restored_bytes: int) -> None:
        """The measured RTO; a subset restore's is also projected to the whole restore point
        (timing.project_rto), and the objective is held against the projection when the
        scenario says the RTO applies to the full restore."""
        objectives, result = self.scenario.objectives, self.result
        measured = self.clock.measured_rto()
        if not point.partial:
            result.rto = judge("rto", measured, objectives.rto, "measured")
            return
        result.full_bytes = point.full_bytes
        projection = project_rto(self.clock.phases, measured, restored_bytes, point.full_bytes)
        if projection is not None:
            result.throughput_bytes_per_second = projection.throughput_bytes_per_second
            result.projected_rto_seconds = projection.projected_seconds
        if objectives.rto_applies_to == "full":
            result.rto = judge_projected_rto(measured, objectives.rto, projection)
        else:
            result.rto = judge("rto", measured, objectives.rto, "measured")

    def make_space(
        self, source: Source, point: RestorePoint, staging: Path, needs: SandboxNeeds
    ) -> None:
        """Refuse a restore that would not fit, with the kind's scratch space when it is on
        disk; space that earlier runs are still freeing is waited for (not counted in the RTO:
        the restore has not started)."""
        with self.clock.phase("space"):
            needed = source.space_needed(point)
            scratch = needs.scratch_bytes if needs.scratch_on_disk else 0
            if needed is not None or scratch:
                _check_disk((needed or 0) + scratch, staging)
        _interrupt_point()

    def start_sandbox_meanwhile(
        self, staging: Path, target: Path, needs: SandboxNeeds
    ) -> Callable[[], Sandbox]:
        """Start the sandbox in a thread while the source selects what to restore (a restic
        listing takes as long as a container start); the call returned waits for it. Every
        path out of the run waits for the thread before removing what it started."""
        own = ExitStack()
        started = Background(
            lambda: self.start_sandbox(staging, target, needs, own),
            f"sandbox {self.scenario.name}",
        )
        self.stack.callback(own.close)
        self.stack.callback(started.wait)
        return started.result

    def start_sandbox(
        self, staging: Path, target: Path, needs: SandboxNeeds, stack: ExitStack
    ) -> Sandbox:
        """Started before the fetch writes (at the latest while restic derives its key): the
        engine syncs the filesystem when it mounts a container, which after the restore would
        first write back every restored byte. At the end, a detached reaper deletes the
        staging folder, then the container (cleanup.dispose).
        """
        with self.clock.phase("sandbox"):
            self.say(f"starting the sandbox ({self.image})")
            spec = self._sandbox_spec(staging, target, needs)
            hand_off = None if self.options.keep else partial(dispose, staging)
            box = stack.enter_context(self.sandboxes.open(spec, self.options.keep, hand_off))
            self.container_running = time.monotonic()
            if self.options.keep:
                self.result.kept = (
                    f"sandbox: docker exec -it {box.name} sh ; staging: {staging} "
                    f"(remove with: restore-tests prune --run {self.options.run_id})"
                )
            if needs.start_command:  # the server starts while the data is fetched
                self.say("starting the sandbox's server")
                box.start(needs.start_command, needs.ready_timeout)
        _interrupt_point()
        return box

    def hash_early(self, target: Path) -> EarlyDigests | None:
        """When the kind will hash files, a thread hashes each as the source finishes it
        (sources that can tell: restic 0.17+); stopped at teardown on every path."""
        below = self.runner.hashes_below(self.scenario)
        if below is None:
            return None
        early = EarlyDigests(target, below, execute.cancel_requested)
        return self.stack.enter_context(early)

    def fetch(
        self,
        source: Source,
        point: RestorePoint,
        staging: Path,
        target: Path,
        early: EarlyDigests | None = None,
    ) -> tuple[Fetched, RestoredTree]:
        """Bring the data into staging, then walk it once: the runners' index, and the sweep of
        setuid bits and device nodes (part of making the data available)."""
        with self.clock.phase("fetch"):
            self.say(f"fetching {point.description or point.short_id}")
            request = FetchRequest(
                target=target,
                scratch=staging / "source",
                timeout=_restore_limit(self.scenario),
                progress=partial(self.options.fetch_progress, self.scenario.name),
                cancelled=execute.cancel_requested,
                on_restored_file=None if early is None else early.restored,
            )
            fetched = source.fetch(point, request)
            _interrupt_point()
            self.say("walking the restored data")
            try:
                tree = restored.walk(fetched.root, execute.cancel_requested)
            except OSError as error:  # fail closed: unsafe data is not opened
                raise HostError(
                    f"could not make the restored data safe on this host: "
                    f"{error.strerror or error}: {error.filename}"
                ) from error
        self.result.checks.extend(fetched.checks)
        self.result.checks.extend(tree_checks(tree, fetched, point))
        _interrupt_point()
        return fetched, tree

    def check(self, context: RunContext, needs: SandboxNeeds) -> None:
        """Load and verify, with the kind's scratch space on disk watched while it writes."""
        scratch = self.scratch_folder
        limit = needs.scratch_bytes
        if needs.scratch_growth_factor is not None:
            limit = max(limit, needs.scratch_growth_factor * context.tree.bytes)
        with watched(scratch, limit, lambda: context.sandbox.stop()) as watch:
            with self.clock.phase("load"), _stopped_by(watch):
                if needs.ready_command:
                    self.say("waiting for the sandbox's server")
                    context.sandbox.wait_ready(needs.ready_command, needs.ready_timeout)
                    self.result.checks.append(self._server_ready())
                self.result.checks.extend(self.runner.load(context))
            _interrupt_point()
            with self.clock.phase("verify"), _stopped_by(watch):
                self.result.checks.extend(self.runner.verify(context))
                self._judge_content_time(context)
            _interrupt_point()
            if self.runner.boots(self.scenario):
                with self.clock.phase("boot"), _stopped_by(watch):
                    self.result.checks.extend(self.runner.boot(context))
        _interrupt_point()
        self.result.files, self.result.bytes = context.files, context.bytes

    def _server_ready(self) -> Check:
        """How long the kind's server took to answer once its container ran (it came up while
        the data was fetched), and from the sandbox's request: the history shows where a slow
        start comes from."""
        now_ = time.monotonic()
        requested = self.clock.started + self.clock.spans["sandbox"][0]
        return Check.passed(
            "server ready",
            observed=f"answered {now_ - self.container_running:.2f}s after its container "
            f"started ({now_ - requested:.2f}s after the sandbox was asked for)",
        )

    def _judge_content_time(self, context: RunContext) -> None:
        """A kind that can tell how fresh the data inside is (a database's newest row) judges
        the RPO on it when it is older than the backup itself."""
        if context.restore_point.newest_time is not None:
            return  # an older point was drawn: its content says nothing of the newest's age
        content_time = self.runner.data_time(context)
        point_time = context.restore_point.time
        if content_time is None or (point_time is not None and content_time >= point_time):
            return
        age = max((now() - content_time).total_seconds(), 0.0)
        self.result.rpo = judge("rpo", age, self.scenario.objectives.rpo, "newest_row")

    def _sandbox_spec(self, staging: Path, target: Path, needs: SandboxNeeds) -> SandboxSpec:
        settings = self.scenario.sandbox
        scratch_folder = None
        if needs.scratch_on_disk:
            # Writable by the sandbox's user, whoever the image makes it; the staging folder
            # around it stays private to the drill's user.
            scratch_folder = self.scratch_folder = staging / "scratch"
            os.mkdir(scratch_folder)
            os.chmod(scratch_folder, 0o1777)
        return SandboxSpec(
            image=self.image,
            run_id=self.options.run_id,
            scenario=self.scenario.name,
            memory_bytes=settings.memory,
            pids=settings.pids,
            cpus=settings.cpus,
            read_only_mounts={str(target): RESTORE_MOUNT},
            scratch_bytes=needs.scratch_bytes,
            scratch_folder=None if scratch_folder is None else str(scratch_folder),
            log_file=needs.log_file,
            user=needs.user,
            environment=needs.environment,
        )


def tree_checks(tree: RestoredTree, fetched: Fetched, point: RestorePoint) -> list[Check]:
    """What the walk found that matters whatever the kind or the source: nothing restored,
    unsafe entries, unreadable folders. A source's check compared restored bytes only if some
    were restored (restic --verify over an empty restore proves nothing)."""
    checks = [_restored_something(tree, fetched, point)]
    if tree.bytes == 0:
        for check in fetched.checks:
            if check.proves_data:
                check.proves_data = False
                check.observed += " (nothing restored: it proves nothing)"
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


@contextmanager
def _stopped_by(watch: ScratchWatch | None) -> Iterator[None]:
    """When the scratch watch stopped the sandbox, that is the verdict, whatever the kind's
    commands made of their sandbox vanishing under them."""
    try:
        yield
    except RestoreTestsError as error:
        if watch is not None and watch.reason:
            raise DamagedBackup(watch.reason) from error
        raise
    if watch is not None and watch.reason:
        raise DamagedBackup(watch.reason)


def _restore_limit(scenario: ScenarioBase) -> float | None:
    """A restore far past its RTO is stopped: waiting longer proves nothing more."""
    rto = scenario.objectives.rto
    return None if rto is None else max(RESTORE_LIMIT_FACTOR * rto, RESTORE_LIMIT_MINIMUM)


def _check_disk(needed: int, staging: Path) -> None:
    """Refuse a fetch that would not fit, after waiting (bounded) for the space that earlier
    runs' removals are still freeing."""
    if needed * DISK_MARGIN > shutil.disk_usage(staging).free:
        wait_for_removals(staging.parent, REMOVAL_WAIT_SECONDS)
    free = shutil.disk_usage(staging).free
    if needed * DISK_MARGIN > free:
        raise PreflightError(
            f"not enough disk space in {staging.parent}: the restore needs "
            f"{format_size(needed)}, {format_size(free)} free"
        )


def _restored_something(tree: RestoredTree, fetched: Fetched, point: RestorePoint) -> Check:
    """A fetch that produced no file proves nothing, whatever else passes (an include typo)."""
    if tree.file_count:
        return Check.passed(
            "restored files", observed=f"{tree.file_count:,} files, {format_size(tree.bytes)}"
        )
    why = f"; {fetched.empty_reason}" if fetched.empty_reason else ""
    return Check.failed(
        "restored files",
        f"the restore produced no files ({point.shown}{why})",
        expected="at least 1 file",
        observed="0 files",
    )


def _interrupt_point() -> None:
    if execute.cancel_requested():
        raise Interrupted()


def _last_phase(clock: PhaseClock) -> str:
    return max(clock.spans, key=lambda name: clock.spans[name][0]) if clock.spans else "start"

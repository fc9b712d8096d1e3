"""Run many scenarios: a worker pool, progress, cancellation, and recording as results arrive.

Results are written to the history as each scenario finishes, so an interrupted or crashed drill
keeps what it measured; each scenario is recorded as running when it starts, so a killed drill
shows what was in flight. Ctrl-C / SIGTERM cancels: running restores get SIGINT (no stale restic
lock), sandboxes and staging are torn down, unstarted scenarios are recorded as interrupted. The
drill's process is named in its history row and in an owner file in the work dir, so that a later
run, `history` and `prune` can tell when it was killed.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime

from docker import DockerClient

from restore_tests import __version__, execute
from restore_tests.cleanup import claim_run, release_run, resume_removals
from restore_tests.errors import (
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EnvironmentUnusable,
)
from restore_tests.history.processes import ProcessIdentity
from restore_tests.history.store import HistoryStore
from restore_tests.pipeline import RunOptions, now, run_scenario
from restore_tests.results import (
    CAUSE_ENVIRONMENT,
    CAUSE_INTERRUPTED,
    ERROR,
    FAIL,
    PASS,
    ScenarioResult,
)
from restore_tests.sandbox import DockerSandboxes, connect, engine_version
from restore_tests.scenario import ScenarioBase
from restore_tests.timing import format_duration, judge

log = logging.getLogger(__name__)
WAIT_SECONDS = 0.2
Started = tuple[ScenarioResult, int | None]  # a scenario's result, and its "running" row


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass
class DrillOutcome:
    run_id: str
    trigger: str
    results: list[ScenarioResult] = field(default_factory=list)
    interrupted: bool = False
    unrecorded: list[str] = field(default_factory=list)  # scenarios the history lacks
    history_failures: list[str] = field(default_factory=list)  # one message per failed write

    @property
    def status(self) -> str:
        """interrupted, else error, fail or pass; never pass without results, nor with a result
        that the history could not record (its proof would be missing)."""
        if self.interrupted:
            return "interrupted"
        statuses = {result.status for result in self.results}
        if not self.results or ERROR in statuses or self.unrecorded:
            return ERROR
        return FAIL if FAIL in statuses else PASS

    def counts(self) -> dict[str, int]:
        """How many results have each status: {"pass": 6, "fail": 4, "error": 0}."""
        return {
            status: sum(1 for result in self.results if result.status == status)
            for status in (PASS, FAIL, ERROR)
        }

    def summary(self) -> str:
        """'6 passed, 4 failed, 0 errors', as the history's drill row keeps it."""
        if self.results:
            counts = self.counts()
            errors = f"{counts[ERROR]} error{'' if counts[ERROR] == 1 else 's'}"
            text = f"{counts[PASS]} passed, {counts[FAIL]} failed, {errors}"
        else:
            text = "no scenario finished"
        if self.unrecorded:
            count = len(self.unrecorded)
            text += f"; {count} {'result' if count == 1 else 'results'} could not be recorded"
        return text + (" (interrupted)" if self.interrupted else "")

    def summary_line(self, seconds: float, history: str) -> str:
        """The run's last line: 'drill RUN: 10 scenarios, 6 passed, 4 failed, 0 errors in 42s;
        history in sqlite:///results.db'."""
        count = len(self.results)
        scenarios = f"{count} scenario{'' if count == 1 else 's'}"
        return (
            f"{self.trigger} {self.run_id}: {scenarios}, {self.summary()} in "
            f"{format_duration(seconds)}; history in {history}"
        )

    def recorded(self, result: ScenarioResult) -> bool:
        return result.scenario not in self.unrecorded

    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.history_failures or any(r.cause == CAUSE_ENVIRONMENT for r in self.results):
            return EXIT_ENVIRONMENT
        return EXIT_OK if self.status == PASS else EXIT_FAILED


class Recorder:
    """Writes a drill's results to the history as they arrive.

    The verdict is announced first, then written: a history that fails (locked past its timeout,
    gone) loses no verdict. A failed write, once retried by the store, is counted and named
    through on_history_failure, never raised. Ctrl-C during a write finishes that write first.
    """

    def __init__(
        self,
        store: HistoryStore,
        outcome: DrillOutcome,
        on_result: Callable[[ScenarioResult], None],
        on_history_failure: Callable[[str], None],
    ) -> None:
        self.store, self.outcome = store, outcome
        self.on_result, self.on_history_failure = on_result, on_history_failure

    def started(self, scenario: ScenarioBase) -> int | None:
        """A "running" row, so that a killed drill shows what was in flight (worker threads)."""
        try:
            return self.store.record_running(self.outcome.run_id, _running(scenario))
        except EnvironmentUnusable as error:
            log.info("%s", error)  # its final write is tried, and named if it fails
            return None

    def finished(self, result: ScenarioResult, row_id: int | None = None) -> None:
        self.outcome.results.append(result)
        try:
            self.on_result(result)
        finally:  # a verdict that could not be shown (stdout closed) is still recorded
            try:
                self._write(
                    f"record the result of {result.scenario}",
                    lambda: self.store.record_result(self.outcome.run_id, result, row_id),
                )
            except EnvironmentUnusable as error:
                self.outcome.unrecorded.append(result.scenario)
                self._failed(error)

    def close(self) -> None:
        """The drill row's end (its status and summary count what could not be recorded)."""
        outcome = self.outcome
        try:
            self._write(
                f"record the end of run {outcome.run_id}",
                lambda: self.store.finish_drill(
                    outcome.run_id, outcome.status, outcome.summary(), now()
                ),
            )
        except EnvironmentUnusable as error:
            self._failed(error)

    def _write(self, action: str, write: Callable[[], None]) -> None:
        """write(); Ctrl-C during it stops the drill but does the write again (the verdict is
        known: record it, then stop); a second Ctrl-C gives it up, as a failed write."""
        try:
            write()
        except KeyboardInterrupt:
            self.outcome.interrupted = True
            execute.request_cancel()
            try:
                write()
            except KeyboardInterrupt:
                raise EnvironmentUnusable(
                    f"history database {self.store.display_url}: could not {action}: interrupted"
                ) from None

    def _failed(self, error: EnvironmentUnusable) -> None:
        self.outcome.history_failures.append(str(error))
        self.on_history_failure(str(error))


def run_drill(
    scenarios: list[ScenarioBase],
    options: RunOptions,
    store: HistoryStore,
    trigger: str,
    jobs: int = 1,
    on_result: Callable[[ScenarioResult], None] = lambda result: None,
    on_history_failure: Callable[[str], None] = lambda message: None,
) -> DrillOutcome:
    """Run the scenarios (jobs at a time), record each result, and return the outcome.

    Raises EnvironmentUnusable before anything runs when the drill cannot even be recorded.
    """
    outcome = DrillOutcome(options.run_id, trigger)
    execute.reset_cancel()
    resume_removals(options.work_dir)
    try:
        client = connect()
        docker_version: str | None = engine_version(client)
    except EnvironmentUnusable as error:
        client, docker_version, unusable = None, None, error
    owner = ProcessIdentity.current()
    store.start_drill(
        options.run_id, trigger, owner.host, __version__, docker_version, now(), owner=owner
    )
    recorder = Recorder(store, outcome, on_result, on_history_failure)
    try:
        claim_run(options.work_dir, options.run_id, owner)
        if client is None:
            for scenario in scenarios:
                recorder.finished(_unrun(scenario, str(unusable), CAUSE_ENVIRONMENT))
        else:
            _run_pool(scenarios, options, client, jobs, recorder)
    except KeyboardInterrupt:  # outside the pool's own handling: still recorded as interrupted
        outcome.interrupted = True
        execute.request_cancel()
    finally:
        order = {scenario.name: index for index, scenario in enumerate(scenarios)}
        outcome.results.sort(key=lambda result: order.get(result.scenario, len(order)))
        recorder.close()
        release_run(options.work_dir, options.run_id)
    return outcome


def _run_pool(
    scenarios: list[ScenarioBase],
    options: RunOptions,
    client: DockerClient,
    jobs: int,
    recorder: Recorder,
) -> None:
    def run_one(scenario: ScenarioBase) -> Started:
        row_id = recorder.started(scenario)
        return run_scenario(scenario, options, DockerSandboxes(client)), row_id

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="scenario") as pool:
        futures = {pool.submit(run_one, scenario): scenario for scenario in scenarios}
        handled: set[Future[Started]] = set()
        while len(handled) < len(futures):
            try:
                _collect(futures, handled, recorder)
            except KeyboardInterrupt:  # anywhere: running scenarios are stopped, not awaited
                recorder.outcome.interrupted = True
                execute.request_cancel()


def _collect(
    futures: dict[Future[Started], ScenarioBase],
    handled: set[Future[Started]],
    recorder: Recorder,
) -> None:
    """Wait a little; hand each newly finished scenario to the recorder; cancel when asked."""
    outcome = recorder.outcome
    done, pending = wait(set(futures) - handled, timeout=WAIT_SECONDS, return_when=FIRST_COMPLETED)
    if execute.cancel_requested():
        outcome.interrupted = True
    for future in done:
        handled.add(future)
        if future.cancelled():
            reason = "interrupted before it started"
            recorder.finished(_unrun(futures[future], reason, CAUSE_INTERRUPTED))
        else:
            recorder.finished(*future.result())
    if outcome.interrupted:
        for future in pending:
            future.cancel()


def _running(scenario: ScenarioBase) -> ScenarioResult:
    """A scenario under way, with the targets it will be judged against."""
    result = ScenarioResult.begin(scenario, now())
    result.rto = judge("rto", None, scenario.objectives.rto, "measured")
    result.rpo = judge("rpo", None, scenario.objectives.rpo, "snapshot_time")
    return result


def _unrun(scenario: ScenarioBase, reason: str, cause: str) -> ScenarioResult:
    result = ScenarioResult.begin(scenario, now(), status=ERROR, reason=reason, cause=cause)
    result.finished_at = result.started_at
    return result

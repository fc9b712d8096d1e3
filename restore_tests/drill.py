"""Run many scenarios: a worker pool, progress, cancellation, and recording as results arrive.

Results are written to the history as each scenario finishes, so an interrupted or crashed drill
keeps what it measured. Ctrl-C / SIGTERM cancels: running restores get SIGINT (no stale restic
lock), sandboxes and staging are torn down, unstarted scenarios are recorded as interrupted.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime

from docker import DockerClient

from restore_tests import __version__, execute
from restore_tests.cleanup import resume_removals
from restore_tests.errors import (
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EnvironmentUnusable,
)
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
from restore_tests.sandbox import connect, engine_version
from restore_tests.scenario import ScenarioBase

WAIT_SECONDS = 0.2


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass
class DrillOutcome:
    run_id: str
    trigger: str
    results: list[ScenarioResult] = field(default_factory=list)
    interrupted: bool = False

    @property
    def status(self) -> str:
        if self.interrupted:
            return "interrupted"
        statuses = {result.status for result in self.results}
        return ERROR if ERROR in statuses else FAIL if FAIL in statuses else PASS

    def summary(self) -> str:
        counts = {
            status: sum(1 for r in self.results if r.status == status)
            for status in (PASS, FAIL, ERROR)
        }
        text = f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[ERROR]} errors"
        return text + (" (interrupted)" if self.interrupted else "")

    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if any(result.cause == CAUSE_ENVIRONMENT for result in self.results):
            return EXIT_ENVIRONMENT
        return EXIT_OK if self.status == PASS else EXIT_FAILED


def run_drill(
    scenarios: list[ScenarioBase],
    options: RunOptions,
    store: HistoryStore,
    trigger: str,
    jobs: int = 1,
    on_result: Callable[[ScenarioResult], None] = lambda result: None,
) -> DrillOutcome:
    """Run the scenarios (jobs at a time), record each result, and return the outcome."""
    outcome = DrillOutcome(options.run_id, trigger)
    execute.reset_cancel()
    resume_removals(options.work_dir)
    try:
        client = connect()
        docker_version: str | None = engine_version(client)
    except EnvironmentUnusable as error:
        client, docker_version, unusable = None, None, error
    store.start_drill(
        options.run_id, trigger, socket.gethostname(), __version__, docker_version, now()
    )

    def finish(result: ScenarioResult) -> None:
        store.record_result(options.run_id, result)
        outcome.results.append(result)
        on_result(result)

    try:
        if client is None:
            for scenario in scenarios:
                finish(_unrun(scenario, str(unusable), CAUSE_ENVIRONMENT))
        else:
            _run_pool(scenarios, options, client, jobs, outcome, finish)
    finally:
        order = {scenario.name: index for index, scenario in enumerate(scenarios)}
        outcome.results.sort(key=lambda result: order.get(result.scenario, len(order)))
        store.finish_drill(options.run_id, outcome.status, outcome.summary(), now())
    return outcome


def _run_pool(
    scenarios: list[ScenarioBase],
    options: RunOptions,
    client: DockerClient,
    jobs: int,
    outcome: DrillOutcome,
    finish: Callable[[ScenarioResult], None],
) -> None:
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="scenario") as pool:
        futures: dict[Future[ScenarioResult], ScenarioBase] = {
            pool.submit(run_scenario, scenario, options, client): scenario for scenario in scenarios
        }
        pending = set(futures)
        while pending:
            try:
                done, pending = wait(pending, timeout=WAIT_SECONDS, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                outcome.interrupted = True
                execute.request_cancel()
                continue
            if execute.cancel_requested():
                outcome.interrupted = True
            for future in done:
                if future.cancelled():
                    finish(
                        _unrun(futures[future], "interrupted before it started", CAUSE_INTERRUPTED)
                    )
                else:
                    finish(future.result())
            if outcome.interrupted:
                for future in pending:
                    future.cancel()


def _unrun(scenario: ScenarioBase, reason: str, cause: str) -> ScenarioResult:
    result = ScenarioResult.begin(scenario, now(), status=ERROR, reason=reason, cause=cause)
    result.finished_at = result.started_at
    return result

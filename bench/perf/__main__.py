"""`python -m bench.perf`: every case of issue 10, for each restic version, in one command."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.perf import report as reporting
from bench.perf.common import BenchError, code_state, log, project_python, restic_version
from bench.perf.generators import CASES, CaseData, prepare_case, warm_repository
from bench.perf.procedures import (
    Harness,
    Restverify,
    bare_restic_procedure,
    check_procedure,
    drill_procedure,
    ensure_restverify,
    import_cost,
    manual_procedure,
    restic_on_path,
    write_drill_scenarios,
    write_scenario,
)
from bench.perf.runner import Procedure, run_rounds, take, wait_for_idle_cpu, watch_disk_of

RESTIC_FOLDER = Path("/opt/restore-tests/bin")
LARGE_FREE_BYTES = 20 * 1024**3  # large-4g is skipped below this much free space


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__)
    parser.add_argument("--cases", default=",".join(CASES), help=f"default {','.join(CASES)}")
    parser.add_argument(
        "--restic",
        default="0.14,0.18",
        help="restic versions (restic-X in /opt/restore-tests/bin) or binaries; default 0.14,0.18",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/restore-tests-perf"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: 1 round, mixed 64 MiB, small 10,000 files, large 2 x 64 MiB",
    )
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.rounds = 1
    arguments.cases = [case.strip() for case in arguments.cases.split(",") if case.strip()]
    unknown = sorted(set(arguments.cases) - set(CASES))
    if unknown or arguments.rounds < 1:
        parser.error(f"unknown case(s) {unknown} (known: {', '.join(CASES)})" if unknown
                     else "--rounds must be at least 1")  # fmt: skip
    return arguments


def find_restics(wanted: str) -> dict[str, str]:
    """{full version: binary} for each of 0.14,0.18 (or paths to binaries)."""
    restics = {}
    for item in (part.strip() for part in wanted.split(",") if part.strip()):
        binary = item if "/" in item else str(RESTIC_FOLDER / f"restic-{item}")
        if not shutil.which(binary):
            raise BenchError(f"no restic binary at {binary}")
        binary = os.path.realpath(binary)
        restics[restic_version(binary)] = binary
    return restics


def enough_space_for_large(work: Path, cases: list[str], quick: bool) -> list[str]:
    free = shutil.disk_usage(work).free
    if "large-4g" in cases and not quick and free < LARGE_FREE_BYTES:
        log(f"skipping large-4g: {free / 1024**3:.1f} GiB free in {work} (needs 20 GiB)")
        return [case for case in cases if case != "large-4g"]
    return cases


class Bench:
    """The procedures of each case and restic version, built from the prepared data."""

    def __init__(self, work: Path, restverify: Path) -> None:
        self.work = work
        self.restverify = restverify
        self.logs = work / "logs"

    def procedures(self, case: CaseData, version: str, restic: str) -> list[Procedure]:
        label = f"{case.name} restic {version}"
        if case.name == "drill-12":
            folder = write_drill_scenarios(
                self.work / "scenarios" / f"drill-12-{version}",
                [repository.path for repository in case.repositories[version]],
                restic,
                f"perf-drill-{version}",
            )
            return [drill_procedure(self.work, folder, jobs, self.logs, label) for jobs in (1, 2)]
        repository = case.repository(version).path
        procedures: list[Procedure] = [
            self.check(case, version, restic, label),
            manual_procedure(repository, restic, self.work, self.logs, label),
            Restverify(
                self.restverify,
                repository,
                case.tree.path,
                restic_on_path(self.work, restic, version),
                self.work,
                self.logs,
                label,
            ),
        ]
        if case.name == "tiny":
            procedures.append(
                bare_restic_procedure(repository, restic, self.work, self.logs, label)
            )
        return procedures

    def check(self, case: CaseData, version: str, restic: str, label: str) -> Harness:
        scenario = write_scenario(
            self.work / "scenarios" / f"{case.name}-{version}.yaml",
            f"perf-{case.name}",
            case.repository(version).path,
            restic,
        )
        return check_procedure(self.work, scenario, self.logs, label)

    def measure_case(
        self, case: CaseData, version: str, restic: str, rounds: int
    ) -> dict[str, Any]:
        for repository in case.repositories[version]:
            warm_repository(repository.path)
        procedures = self.procedures(case, version, restic)
        outcomes = run_rounds(procedures, rounds, f"{case.name} restic {version}")
        summary = reporting.summarize(outcomes)
        entry: dict[str, Any] = {
            "procedures": summary,
            "goals": reporting.evaluate_goals(case.name, summary),
            "rss": reporting.evaluate_rss(case.name, summary),
        }
        if case.name != "drill-12":
            entry["explain"] = self.explain(case, version, restic)
        return entry

    def explain(self, case: CaseData, version: str, restic: str) -> dict[str, Any]:
        """One more restore-tests run, with -vv and untimed in the table: where its time goes."""
        harness = self.check(case, version, restic, f"{case.name} restic {version} -vv")
        harness.verbose = True
        outcome = take(harness)
        return reporting.where_time_goes(
            {"seconds": outcome.seconds, "passed": outcome.passed, **outcome.detail}
        )

    def warm_up(self, case: CaseData, version: str, restic: str) -> None:
        """One untimed check first: it creates the history database (as a user's results.db
        exists) and compiles the code's bytecode."""
        log("warm-up: one untimed restore-tests check (creates the history database)")
        outcome = take(self.check(case, version, restic, "warm-up"))
        if not outcome.passed:
            raise BenchError(f"the warm-up check did not pass: {outcome.detail}")


def environment(restics: dict[str, str]) -> dict[str, Any]:
    return {
        "restic": restics,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "code_at_start": code_state(),
    }


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    work = arguments.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    watch_disk_of(work)
    restics = find_restics(arguments.restic)
    cases = enough_space_for_large(work, arguments.cases, arguments.quick)
    bench = Bench(work, ensure_restverify(work))
    data_root = work / ("quick" if arguments.quick else "full")
    prepared = {name: prepare_case(data_root, name, arguments.quick, restics) for name in cases}
    tiny = prepared.get("tiny") or prepare_case(data_root, "tiny", arguments.quick, restics)
    wait_for_idle_cpu()
    report: dict[str, Any] = {
        "environment": environment(restics),
        "options": {
            "cases": cases,
            "rounds": arguments.rounds,
            "quick": arguments.quick,
            "work": str(work),
        },
        "hashing": reporting.hashing_speeds(work),
        "cases": {name: case.describe() for name, case in prepared.items()},
        "versions": {
            version: {"restic": binary, "cases": {}} for version, binary in restics.items()
        },
    }
    first = next(iter(restics))
    bench.warm_up(tiny, first, restics[first])
    report["import_cost"] = import_cost(project_python(), work)
    for name, case in prepared.items():
        for version, restic in restics.items():
            entry = bench.measure_case(case, version, restic, arguments.rounds)
            report["versions"][version]["cases"][name] = entry
            reporting.write_json(work / "perf-results.partial.json", report)
    report["environment"]["code_at_end"] = code_state()
    return report


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        report = run(arguments)
    except BenchError as error:
        print(f"bench.perf: {error}", file=sys.stderr)
        return 1
    text = reporting.render(report)
    print(text)
    work = Path(report["options"]["work"])
    reporting.write_json(work / "perf-results.json", report)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kind = "quick" if arguments.quick else "full"
    reporting.write_json(work / f"perf-results-{kind}-{stamp}.json", report)
    (work / f"perf-results-{kind}-{stamp}.txt").write_text(text + "\n")
    (work / "perf-results.partial.json").unlink(missing_ok=True)
    log(f"wrote {work / 'perf-results.json'} (and perf-results-{kind}-{stamp}.json/.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

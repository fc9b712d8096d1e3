"""How fast the manager's views read a large history: 100 scenarios x 5 years of weekly drills
(26,000 results, 104,000 phases, 26,000 checks) in SQLite. Goal: status and report in <= 1 s.

Two figures per view, median of --rounds: in-process (the query and rendering work, what the
history's size changes) and the whole command as a user runs it (a new Python process: imports
and start-up included, which the history's size does not change).

    .venv/bin/python bench/history_bench.py [--rounds 5] \\
        [--work /var/tmp/restore-tests-history-bench]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from restore_tests.history.store import HistoryStore  # noqa: E402
from restore_tests.report import document as report_document  # noqa: E402
from restore_tests.report.status import build_status  # noqa: E402
from tests.history_helpers import bulk_history  # noqa: E402

GOAL_SECONDS = 1.0


def median_seconds(work: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def command(work: Path, *arguments: str) -> Callable[[], object]:
    def run() -> object:
        completed = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), *arguments],
            cwd=work,
            capture_output=True,
            text=True,
        )
        if completed.returncode not in (0, 1):  # 1: something is failing, as in the data
            raise SystemExit(f"{arguments[0]} failed: {completed.stderr}")
        return completed

    return run


def report(store: HistoryStore, since: datetime, output_format: str) -> str:
    """The report as `report` makes it: the document, then the format."""
    return report_document.render(report_document.build_document(store, None, since), output_format)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/restore-tests-history-bench"))
    options = parser.parse_args()
    options.work.mkdir(parents=True, exist_ok=True)
    database = options.work / "history.db"
    database.unlink(missing_ok=True)
    url = f"sqlite:///{database}"
    started = time.perf_counter()
    bulk_history(url)
    print(
        f"history: 26,000 results written in {time.perf_counter() - started:.1f} s "
        f"({database.stat().st_size / 1e6:.1f} MB)"
    )
    store = HistoryStore(url)
    now = datetime.now(UTC)
    periods = {"92 days": now - timedelta(days=92), "5 years": now - timedelta(days=5 * 366)}
    in_process: dict[str, Callable[[], object]] = {"status": lambda: build_status(store, None)}
    for period, since in periods.items():
        in_process[f"report ({period}): document"] = functools.partial(
            report_document.build_document, store, None, since
        )
        for output_format in ("html", "json"):
            in_process[f"report ({period}, {output_format})"] = functools.partial(
                report, store, since, output_format
            )
    whole = {
        "status": command(options.work, "status", "--db", url),
        "report -o report.html (92d)": command(
            options.work, "report", "--db", url, "--since", "92d", "-o", "report.html"
        ),
        "report -o report.html (5y)": command(
            options.work, "report", "--db", url, "--since", "1900d", "-o", "report.html"
        ),
        "metrics -o -": command(options.work, "metrics", "--db", url, "-o", "-"),
        "history --client client-3": command(
            options.work, "history", "--db", url, "--client", "client-3"
        ),
        "--version (start-up alone)": command(options.work, "--version"),
    }
    print(f"\nin-process, median of {options.rounds} (goal <= {GOAL_SECONDS:.1f} s):")
    for name, work in in_process.items():
        seconds = median_seconds(work, options.rounds)
        verdict = "met" if seconds <= GOAL_SECONDS else "MISSED"
        print(f"  {name:<34} {seconds:6.3f} s  {verdict}")
    print(f"\nwhole command (a new process), median of {options.rounds}:")
    for name, work in whole.items():
        print(f"  {name:<34} {median_seconds(work, options.rounds):6.3f} s")


if __name__ == "__main__":
    main()

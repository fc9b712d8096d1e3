"""The report: one table per restic version, the goals, hashing speeds of this machine, JSON."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.perf.common import MIB, log
from bench.perf.runner import ATTEMPTS, Outcome

HASH_FILE_MIB = 512
RSS_GOAL_MB = 150.0
RSS_GOAL_CASES = ("small-100k", "large-4g")
RT = "restore-tests"

# (case, numerator, denominator, limit): median(numerator) / median(denominator) <= limit
GOALS: dict[str, list[tuple[str, str, float]]] = {
    "mixed-1g": [(RT, "manual", 0.70), (RT, "restverify", 1.0)],
    "small-100k": [(RT, "manual", 0.8)],
    "tiny": [(RT, "bare restic", 2.0)],
    "drill-12": [("drill --jobs 2", "drill --jobs 1", 0.55)],
    "large-4g": [],
}


# -- this machine's hashing speed ----------------------------------------------------------------


def hash_file(work: Path) -> Path:
    """A 512 MiB file of random bytes (created once), read once so that it is page-cached."""
    path = work / f"hash-{HASH_FILE_MIB}m.bin"
    if not path.exists() or path.stat().st_size != HASH_FILE_MIB * MIB:
        with open(path.with_suffix(".tmp"), "wb") as stream:
            for _ in range(HASH_FILE_MIB // 8):
                stream.write(os.urandom(8 * MIB))
        path.with_suffix(".tmp").rename(path)
    with open(path, "rb") as stream:
        while stream.read(8 * MIB):
            pass
    return path


def python_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(MIB)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as stream:
        while size := stream.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def hashing_speeds(work: Path, repeats: int = 3) -> dict[str, Any]:
    """MB/s (10^6 bytes) of coreutils sha256sum and of Python's hashlib on a page-cached file,
    best of `repeats` each, one thread each."""
    path = hash_file(work)
    size = path.stat().st_size
    times: dict[str, list[float]] = {"sha256sum": [], "hashlib": []}
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(["sha256sum", str(path)], check=True, capture_output=True)
        times["sha256sum"].append(time.perf_counter() - started)
        started = time.perf_counter()
        python_sha256(path)
        times["hashlib"].append(time.perf_counter() - started)
    speeds = {f"{name}_mb_per_s": size / min(seconds) / 1e6 for name, seconds in times.items()}
    log(
        f"hashing: sha256sum {speeds['sha256sum_mb_per_s']:.0f} MB/s, Python hashlib "
        f"{speeds['hashlib_mb_per_s']:.0f} MB/s"
    )
    return {"bytes": size, "repeats": repeats, **speeds}


# -- results and goals ---------------------------------------------------------------------------


def summarize(outcomes: dict[str, list[Outcome]]) -> dict[str, Any]:
    """Per procedure: the median, every run, and whether every run passed."""
    summary = {}
    for name, runs in outcomes.items():
        rss = [run.detail["peak_rss_mb"] for run in runs if run.detail.get("peak_rss_mb")]
        summary[name] = {
            "median_seconds": statistics.median(run.seconds for run in runs),
            "passed_all": all(run.passed for run in runs),
            "peak_rss_mb_max": max(rss) if rss else None,
            "voided_attempts": sum(run.attempts - 1 for run in runs),
            "runs": [asdict(run) for run in runs],
        }
    return summary


def evaluate_goals(case: str, procedures: dict[str, Any]) -> list[dict[str, Any]]:
    goals = []
    for numerator, denominator, limit in GOALS.get(case, []):
        if numerator not in procedures or denominator not in procedures:
            continue
        top, bottom = procedures[numerator], procedures[denominator]
        ratio = top["median_seconds"] / bottom["median_seconds"]
        passed = top["passed_all"] and bottom["passed_all"]
        goals.append(
            {
                "numerator": numerator,
                "denominator": denominator,
                "ratio": ratio,
                "limit": limit,
                "met": passed and ratio <= limit,
                "all_passed": passed,
            }
        )
    return goals


def evaluate_rss(case: str, procedures: dict[str, Any]) -> dict[str, Any] | None:
    peak = (procedures.get(RT) or {}).get("peak_rss_mb_max")
    if case not in RSS_GOAL_CASES or peak is None:
        return None
    return {"peak_rss_mb": peak, "limit_mb": RSS_GOAL_MB, "met": peak <= RSS_GOAL_MB}


def where_time_goes(explain: dict[str, Any]) -> dict[str, Any]:
    """From one -vv run: restic's restore, its other commands, the manifest check, the rest."""
    commands = explain.get("commands") or []
    restic = [c for c in commands if "restic" in c["program"]]
    restore = sum(c["seconds"] for c in restic if c["subcommand"] == "restore")
    other_restic = sum(c["seconds"] for c in restic) - restore
    others = sum(c["seconds"] for c in commands if "restic" not in c["program"])
    checks = explain.get("checks") or {}
    manifest = sum(s or 0.0 for name, s in checks.items() if name.startswith("manifest"))
    wall = explain["seconds"]
    return {
        "passed": explain.get("passed", True),
        "reasons": explain.get("reasons") or [],
        "wall": wall,
        "restic_restore": restore,
        "restic_other": other_restic,
        "restic_other_commands": [
            f"{c['subcommand']} {c['seconds']:.2f}" for c in restic if c["subcommand"] != "restore"
        ],
        "other_commands": others,
        "manifest_check": manifest,
        "rest": wall - restore - other_restic - others - manifest,
        "phases": explain.get("phases") or {},
    }


# -- the text -------------------------------------------------------------------------------------

COLUMNS = (
    ("case", "<", 14), ("restore-tests (s)", ">", 17), ("manual (s)", ">", 10), ("ratio", ">", 6),
    ("restverify (s)", ">", 14), ("ratio", ">", 6), ("goal", "<", 40), ("met?", "<", 12),
)  # fmt: skip


def line(values: list[str]) -> str:
    return "  ".join(
        f"{value:{align}{width}}" for value, (_, align, width) in zip(values, COLUMNS, strict=True)
    ).rstrip()


def seconds_text(procedures: dict[str, Any], name: str) -> str:
    item = procedures.get(name)
    if not item:
        return "-"
    return f"{item['median_seconds']:.2f}" + ("" if item["passed_all"] else " FAIL")


def ratio_text(procedures: dict[str, Any], top: str, bottom: str) -> str:
    if top not in procedures or bottom not in procedures:
        return "-"
    return f"{procedures[top]['median_seconds'] / procedures[bottom]['median_seconds']:.2f}"


def goal_texts(goals: list[dict[str, Any]]) -> tuple[str, str]:
    if not goals:
        return "reported only", ""
    shown = {"bare restic": "bare restic", "drill --jobs 1": "--jobs 1"}
    parts = []
    for goal in goals:
        text = f"≤ {goal['limit']:.2f}x {shown.get(goal['denominator'], goal['denominator'])}"
        if goal["denominator"] in shown:  # not in the ratio columns: show the measured ratio
            text += f" ({goal['ratio']:.2f}x)"
        parts.append(text)
    if all(goal["met"] for goal in goals):
        met = "yes"
    elif not all(goal["all_passed"] for goal in goals):
        met = "NO (a FAIL)"
    else:
        met = "NO"
    return ", ".join(parts), met


def case_rows(case: str, entry: dict[str, Any]) -> list[str]:
    procedures = entry["procedures"]
    goal, met = goal_texts(entry["goals"])
    if case == "drill-12":
        rows = []
        for jobs in (1, 2):
            name = f"drill --jobs {jobs}"
            text, verdict = (goal, met) if jobs == 2 else ("", "")
            rows.append(line([f"{case} -j{jobs}", seconds_text(procedures, name),
                              "-", "-", "-", "-", text, verdict]))  # fmt: skip
        return rows
    values = [
        case,
        seconds_text(procedures, RT),
        seconds_text(procedures, "manual"),
        ratio_text(procedures, RT, "manual"),
        seconds_text(procedures, "restverify"),
        ratio_text(procedures, RT, "restverify"),
        goal,
        met,
    ]
    rows = [line(values)]
    if "bare restic" in procedures:
        bare = seconds_text(procedures, "bare restic")
        rows.append(line(["  bare restic", bare, "", "", "", "", "", ""]))
    return rows


def version_table(version: str, block: dict[str, Any], rounds: int) -> list[str]:
    lines = [
        f"restic {version} ({block['restic']}): medians of {rounds} round(s), seconds to the "
        "verdict; ratio = restore-tests / manual, restore-tests / restverify",
        line([name for name, _, _ in COLUMNS]),
    ]
    for case, entry in block["cases"].items():
        lines += case_rows(case, entry)
    rss = [
        f"{case} {item['peak_rss_mb']:.0f} MB ({'met' if item['met'] else 'NOT met'})"
        for case, item in ((case, entry.get("rss")) for case, entry in block["cases"].items())
        if item
    ]
    if rss:
        lines.append(f"peak RSS of the restore-tests process (goal ≤ {RSS_GOAL_MB:.0f} MB): "
                     + ", ".join(rss))  # fmt: skip
    return lines


def details(block: dict[str, Any]) -> list[str]:
    """Where the time goes, per case: restore-tests (-vv run), manual, restverify."""
    lines = []
    for case, entry in block["cases"].items():
        procedures = entry["procedures"]
        parts = []
        if entry.get("explain"):
            where = entry["explain"]
            others = ", ".join(where["restic_other_commands"])
            phases = {name: s for name, s in where["phases"].items() if s >= 0.01}
            parts.append(
                f"restore-tests (-vv run) {where['wall']:.2f} s = restic restore "
                f"{where['restic_restore']:.2f} + other restic {where['restic_other']:.2f} "
                f"({others}) + manifest check {where['manifest_check']:.2f} + other commands "
                f"{where['other_commands']:.2f} + the rest {where['rest']:.2f}; phases "
                + ", ".join(f"{name} {seconds:.2f}" for name, seconds in phases.items())
                + f" (sum {sum(where['phases'].values()):.2f}: the rest of the wall time is "
                "start-up, imports, history, exit)"
                + ("" if where["passed"] else f" [this run did NOT pass: {where['reasons'][:1]}]")
            )
        manual = procedures.get("manual")
        if manual:
            restore = statistics.median(r["detail"]["restore_seconds"] for r in manual["runs"])
            hashing = statistics.median(
                r["detail"].get("sha256sum_seconds", 0.0) for r in manual["runs"]
            )
            parts.append(f"manual: restore {restore:.2f} + sha256sum -c {hashing:.2f}")
        verify = procedures.get("restverify")
        if verify:
            last = verify["runs"][-1]["detail"]
            parts.append(
                f"restverify: exit {last.get('exit_code')}, hashed a sample of "
                f"{last.get('sampled_files')} of {last.get('total_files')} files, compare "
                f"{last.get('compare')}"
            )
        if parts:
            lines.append(f"  {case}: " + "; ".join(parts))
    return lines


def render(report: dict[str, Any]) -> str:
    env, hashing = report["environment"], report["hashing"]
    lines = [
        "=" * 100,
        f"restore-tests performance (issue 10): {env['date']}, {env['cpus']} CPUs, "
        f"Python {env['python']}, work {report['options']['work']}"
        + (", QUICK (small sizes)" if report["options"]["quick"] else ""),
        f"this machine: sha256sum {hashing['sha256sum_mb_per_s']:.0f} MB/s, Python hashlib "
        f"{hashing['hashlib_mb_per_s']:.0f} MB/s (one thread, page-cached {HASH_FILE_MIB} MiB "
        "file, best of 3; MB = 10^6 bytes)",
        code_line(env),
        "Python start-up "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in report["import_cost"].items()),
    ]
    for case, data in report["cases"].items():
        repositories = ", ".join(
            f"restic {version} {item['bytes'] / MIB:.0f} MiB (v{item['repository_version']})"
            for version, item in data["repositories"].items()
        )
        lines.append(
            f"  {case}: {data['files']} files, {data['bytes'] / MIB:.1f} MiB"
            + (f" in {data['trees']} trees" if data["trees"] > 1 else "")
            + f"; repositories: {repositories}"
        )
    for version, block in report["versions"].items():
        lines += ["", *version_table(version, block, report["options"]["rounds"])]
        lines += ["where the time goes (medians; restore-tests from one extra untimed -vv run):"]
        lines += details(block)
    lines += ["", *notes(report), "=" * 100]
    return "\n".join(lines)


def code_line(env: dict[str, Any]) -> str:
    code = env["code_at_start"]
    text = f"code measured: the working tree at {code['commit']}"
    if code["uncommitted"]:
        text += f" with uncommitted changes ({len(code['uncommitted'])} files)"
    end = env["code_at_end"]
    if end != code:
        text += (
            f"; WARNING: it changed during the run (at the end: {end['commit']}, "
            f"{len(end['uncommitted'])} files with uncommitted changes)"
        )
    return text


def notes(report: dict[str, Any]) -> list[str]:
    voided = sum(
        item["voided_attempts"]
        for block in report["versions"].values()
        for entry in block["cases"].values()
        for item in entry["procedures"].values()
    )
    return [
        "restore-tests = the whole `restore-tests check` command (a new process, --no-cache), "
        "until it exits; its detached staging removal is not timed. manual = restic restore + "
        "sha256sum -c (rm -rf not timed). restverify = `restverify run -r REPO -s TREE` (its own "
        "cleanup is timed: it comes before its verdict).",
        f"measurements voided and taken again because other processes used the CPUs: {voided} "
        f"(up to {ATTEMPTS} attempts each); FAIL = a run that did not pass.",
    ]


def write_json(path: Path, report: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(report, indent=2, default=str))
    temporary.rename(path)

#!/usr/bin/env python3
"""Benchmark: `restore-tests check` against the manual restic restore + sha256sum -c procedure.

On a generated tree (a few large files, thousands of small ones, half of the bytes
incompressible) backed up into a local restic repository, each round runs, in the order a,b on
odd rounds and b,a on even ones:

  (a) restore-tests -vv check SCENARIO --db ... --json --no-cache --work-dir ...
      in a wrapper that runs cli.main() in-process, records the harness's own peak RSS and,
      by observation only, when each phase, subprocess and verify() call began and ended;
  (b) restic --no-cache restore latest --target DIR; cd DIR/bench && sha256sum -c --quiet SHA256SUMS

and then compares the wall times, the harness's own overhead (wall time of (a) not spent in
restic or hashing), the harness's peak RSS and the hashing throughput against sha256sum.

Nothing is dropped from the page cache: the repository and the restored data are page-cached
for (a) and (b) alike. Before each timed command the script syncs (untimed), waits for the disk
and the CPUs to be quiet, and takes a measurement again when other processes used the CPUs
meanwhile. The harness measured is a frozen `git archive` copy of one revision (HEAD by
default), so that work going on in the project cannot change it halfway through.

The generated tree and the repository (one per restic version) are kept under --work and
reused when their parameters match (stamp files), so a second run only pays for the rounds.

Usage: .venv/bin/python bench/restore_bench.py [--size-mib 1024] [--rounds 3]
       [--restic /usr/bin/restic] [--work DIR] [--keep-data] [--code-rev REV | --live]
       [--no-diagnostics]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script (bench/restore_bench.py): the package bench.perf is found from the root.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench.perf.common import (
    MANIFEST_NAME,
    MIB,
    PASSWORD,
    PASSWORD_VARIABLE,
    ROOT,
    TREE_NAME,
    code_state,
    log,
    project_python,
    restic_env,
    restic_version,
)
from bench.perf.generators import (
    ensure_repository,
    ensure_tree,
    mixed_parameters,
    warm_repository,
)
from bench.perf.procedures import (
    GATEWAY_LINE,
    import_cost,
    manual_procedure,
    wait_for_staging_removal,
    write_scenario,
)
from bench.perf.runner import (
    ATTEMPTS,
    FOREIGN_LIMIT,
    ForeignCpu,
    measure,
    settle,
    wait_for_idle_cpu,
    watch_disk_of,
)

# The code measured: a frozen export of HEAD (default) or the working tree (--live). Set by
# load_code() before anything of the project is imported.
CODE: list[Path] = []
checksums: Any = None  # restore_tests.checksums of the code measured

TARGET_RATIO = 0.8
TARGET_OVERHEAD_SECONDS = 1.5
TARGET_RSS_MB = 150.0

# Runs restore-tests in-process (exactly what the console script does: import cli, call main)
# and writes the process's own peak RSS (not its children's) when it exits, keeping its exit code.
RSS_WRAPPER = r"""
import contextlib, json, os, resource, sys, time
T0 = time.monotonic()
root, out = sys.argv[1], sys.argv[2]
sys.argv = ["restore-tests", *sys.argv[3:]]
sys.path.insert(0, root)
events = []  # (kind, label, begin, end), seconds since T0: a timeline of the run

def instrument():
    # Observation only: record when each phase, subprocess and verify() call begins and ends.
    from restore_tests import checksums, execute, timing

    phase = timing.PhaseClock.phase

    @contextlib.contextmanager
    def timed_phase(self, name):
        begin = time.monotonic() - T0
        try:
            with phase(self, name):
                yield
        finally:
            events.append(("phase", name, begin, time.monotonic() - T0))

    def timed(kind, function, label):
        def wrapper(*args, **kwargs):
            begin = time.monotonic() - T0
            try:
                return function(*args, **kwargs)
            finally:
                events.append((kind, label(args), begin, time.monotonic() - T0))
        return wrapper

    def command_label(args):
        argv = list(args[0])
        words = [word for word in argv[1:] if not word.startswith("-")]
        return os.path.basename(argv[0]) + (" " + words[0] if words else "")

    timing.PhaseClock.phase = timed_phase
    execute.run = timed("command", execute.run, command_label)
    checksums.verify = timed("hashing", checksums.verify, lambda args: "verify")
    # Steps outside the phases (the modules are imported here instead of a little later).
    from restore_tests import sandbox, scenario
    from restore_tests.history import store

    def step(owner, name, label):
        setattr(owner, name, timed("step", getattr(owner, name), lambda args: label))

    step(scenario, "find_scenarios", "load the scenario (YAML, pydantic)")
    step(sandbox, "connect", "Docker: connect and ping")
    step(sandbox, "engine_version", "Docker: engine version")
    step(store.HistoryStore, "__init__", "history DB: open (and schema check)")
    for name in ("start_drill", "record_result", "finish_drill"):
        step(store.HistoryStore, name, f"history DB: {name}")

code = 0
try:
    instrument()
    import cli
    cli.main()
except SystemExit as stop:
    code = stop.code
finally:
    end = time.monotonic() - T0
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "w") as stream:
        json.dump({"self_maxrss_kib": me.ru_maxrss, "self_cpu_seconds": me.ru_utime + me.ru_stime,
                   "children_maxrss_kib": children.ru_maxrss,
                   "children_cpu_seconds": children.ru_utime + children.ru_stime,
                   "events": events, "end": end}, stream)
sys.exit(code)
"""


def load_code(work: Path, live: bool, revision: str = "HEAD") -> dict[str, Any]:
    """Freeze the code to measure: `git archive HEAD` into the work folder (reused per commit).

    The project may change while a benchmark runs; a frozen copy keeps every round on the same
    code. The copy comes first on sys.path, ahead of the editable install's finder.
    """
    global checksums
    state = code_state()
    if live:
        root = ROOT
        state["copy"] = None
    else:
        full = subprocess.run(
            ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        root = work / f"code-{full[:12]}"
        if not (root / ".complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            archive = subprocess.run(
                ["git", "archive", full, "cli.py", "restore_tests", "runners"],
                cwd=ROOT,
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
            (root / ".complete").write_text(full + "\n")
        state["copy"] = str(root)
        state["commit"] = full[:7]
        state["uncommitted_not_measured"] = state.pop("uncommitted")
        state["uncommitted"] = []
    CODE.append(root)
    sys.path.insert(0, str(root))
    from restore_tests import checksums as module

    checksums = module
    return state


# -- one measurement of each procedure -------------------------------------------------------


@dataclass
class HarnessRun:
    round: int
    wall: float
    exit_code: int
    status: str
    restic: list[dict[str, Any]]
    phases: dict[str, float]
    checks: list[dict[str, Any]]
    rusage: dict[str, Any]
    files: int | None
    bytes: int | None
    foreign_cpu: float = 0.0
    removal_after_exit: float = 0.0
    attempts: int = 1
    breakdown: dict[str, float] = field(default_factory=dict)

    @property
    def restic_seconds(self) -> float:
        return sum(command["seconds"] for command in self.restic)

    @property
    def hashing_seconds(self) -> float:
        return sum(c["seconds"] or 0.0 for c in self.checks if c["name"].startswith("manifest "))

    @property
    def overhead(self) -> float:
        return self.wall - self.restic_seconds - self.hashing_seconds

    @property
    def peak_rss_mb(self) -> float:
        return self.rusage["self_maxrss_kib"] * 1024 / 1e6


def run_harness(number: int, work: Path, scenario: Path, restic: str, python: str) -> HarnessRun:
    staging = work / "staging"
    staging.mkdir(exist_ok=True)
    rss_file = work / "harness-rusage.json"
    rss_file.unlink(missing_ok=True)
    command = [
        python,
        "-c",
        RSS_WRAPPER,
        str(CODE[0]),
        str(rss_file),
        "-vv",
        "check",
        str(scenario),
        "--db",
        f"sqlite:///{work / 'bench.db'}",
        "--json",
        "--no-cache",
        "--work-dir",
        str(staging),
    ]
    env = {**os.environ, PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": restic}
    settle()
    with ForeignCpu() as foreign:
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=work)
        wall = time.perf_counter() - started
    try:
        report = json.loads(completed.stdout)
        result = report["results"][0]
    except (ValueError, KeyError, IndexError):
        report, result = {}, {}
    if completed.returncode != 0 or result.get("status") != "pass":
        print(f"(a) round {number}: restore-tests exited {completed.returncode}", file=sys.stderr)
        print("--- stdout ---\n" + completed.stdout, file=sys.stderr)
        print("--- stderr ---\n" + completed.stderr, file=sys.stderr)
        sys.exit(f"(a) did not PASS in round {number}: the benchmark is void")
    removal = wait_for_staging_removal(staging)
    commands = []
    for line in completed.stderr.splitlines():
        match = GATEWAY_LINE.match(line)
        if match and "restic" in os.path.basename(match[3]):
            arguments = (match[4] or "").split()
            subcommand = next((a for a in arguments if not a.startswith("-")), "?")
            commands.append(
                {"subcommand": subcommand, "seconds": float(match[2]), "exit": match[1]}
            )
    if not any(command["subcommand"] == "restore" for command in commands):
        sys.exit("could not find restic's restore in restore-tests -vv output (gateway format?)")
    run = HarnessRun(
        round=number,
        wall=wall,
        exit_code=completed.returncode,
        status=result["status"],
        restic=commands,
        phases=result["phases"],
        checks=result["checks"],
        rusage=json.loads(rss_file.read_text()),
        files=result.get("files"),
        bytes=result.get("bytes"),
        foreign_cpu=foreign.seconds,
        removal_after_exit=removal,
    )
    run.breakdown = timeline(run)
    return run


BEFORE_PHASES = "start: imports, the rest before the first phase"
AFTER_PHASES = "end: JSON output, the rest after the last phase"
INTERPRETER = "interpreter start and exit (outside the wrapper's clock)"


def timeline(run: HarnessRun) -> dict[str, float]:
    """Where (a)'s wall time goes, from the wrapper's timeline; the parts add up to the wall time.

    Each instant goes to one part: a restic command if one runs, else verify() (hashing), else
    another subprocess, else the innermost phase running (its own work: Docker calls, tree walk,
    sandbox exec, removal), else before the first or after the last phase. Phases overlap since
    the sandbox starts while restic stats runs, which is why the JSON's phase seconds do not add
    up; this timeline does.
    """
    events = run.rusage.get("events") or []
    end = float(run.rusage.get("end") or run.wall)
    parts: dict[str, float] = {}
    if not events:
        return {INTERPRETER: run.wall}
    phases = [event for event in events if event[0] == "phase"]
    first = min((event[2] for event in phases), default=end)
    last = max((event[3] for event in phases), default=0.0)
    points = sorted({0.0, end, *(e[2] for e in events), *(e[3] for e in events)})
    for begin, finish in itertools.pairwise(points):
        middle = (begin + finish) / 2
        active = [event for event in events if event[2] <= middle < event[3]]
        commands = [label for kind, label, *_ in active if kind == "command"]
        restic = [label for label in commands if label.startswith("restic")]
        if restic:
            key = restic[0]
        elif any(kind == "hashing" for kind, *_ in active):
            key = "hashing: verify()"
        elif commands:
            key = f"other command: {commands[0]}"
        elif any(kind == "step" for kind, *_ in active):
            key = next(label for kind, label, *_ in active if kind == "step")
        else:
            running = sorted(
                (event for event in active if event[0] == "phase"), key=lambda event: event[2]
            )
            if running:
                key = f"phase {running[-1][1]}: harness work"
            elif middle < first:
                key = BEFORE_PHASES
            elif middle > last:
                key = AFTER_PHASES
            else:
                key = "between phases"
        parts[key] = parts.get(key, 0.0) + finish - begin
    parts[INTERPRETER] = run.wall - end
    return parts


def is_overhead(part: str) -> bool:
    return not part.startswith(("restic", "hashing"))


@dataclass
class ManualRun:
    round: int
    restore: float
    hashing: float
    foreign_cpu: float = 0.0
    attempts: int = 1

    @property
    def wall(self) -> float:
        return self.restore + self.hashing


def run_manual(number: int, work: Path, repository: Path, restic: str) -> ManualRun:
    """bench.perf's manual procedure, keeping the restored tree (hashing_benchmark reads it)."""
    procedure = manual_procedure(repository, restic, work, work / "logs", "(b)")
    procedure.prepare()
    settle()
    with ForeignCpu() as foreign:
        outcome = procedure.run()
    if not outcome.passed:
        sys.exit(f"(b) failed in round {number}: {outcome.detail} (see {work / 'logs'})")
    detail = outcome.detail
    return ManualRun(
        number, detail["restore_seconds"], detail["sha256sum_seconds"], foreign.seconds
    )


# -- hashing throughput ----------------------------------------------------------------------


def hashing_benchmark(tree: Path, repeats: int = 3) -> dict[str, Any]:
    """Our verify() against sha256sum -c on the same page-cached files; best of `repeats`."""
    text = (tree / MANIFEST_NAME).read_text(encoding="utf-8", errors="surrogateescape")
    started = time.perf_counter()
    manifest = checksums.parse_manifest(text)
    parse_seconds = time.perf_counter() - started
    entries = [(entry.path, entry.sha256) for entry in manifest.entries]
    started = time.perf_counter()
    from restore_tests import restored

    stats = restored.walk(tree)
    walk_seconds = time.perf_counter() - started
    total = sum(os.stat(tree / name).st_size for name, _ in entries)
    variants: dict[str, list[float]] = {"sha256sum -c": []}
    labels = {None: f"verify() default ({checksums.default_workers()} workers)"}
    labels.update({workers: f"verify() workers={workers}" for workers in (1, 2, 4)})
    for label in labels.values():
        variants[label] = []
    order: list[Any] = ["sha256sum", *labels]
    os.sync()
    for repeat in range(repeats):
        for which in order[repeat % len(order) :] + order[: repeat % len(order)]:
            started = time.perf_counter()
            if which == "sha256sum":
                subprocess.run(
                    ["sha256sum", "-c", "--quiet", MANIFEST_NAME],
                    cwd=tree,
                    check=True,
                    capture_output=True,
                )
                variants["sha256sum -c"].append(time.perf_counter() - started)
                continue
            result = checksums.verify(stats, entries, workers=which)
            variants[labels[which]].append(time.perf_counter() - started)
            if not result.ok or result.matched != len(entries):
                sys.exit(f"verify() disagrees with the manifest: {result}")
    best = {label: min(times) for label, times in variants.items()}
    reference = best["sha256sum -c"]
    return {
        "repeats": repeats,
        "files": len(entries),
        "bytes": total,
        "parse_manifest_seconds": parse_seconds,
        "tree_walk_seconds": walk_seconds,
        "tree_files": stats.file_count,
        "variants": {
            label: {
                "best_seconds": seconds,
                "all_seconds": variants[label],
                "mb_per_s": total / seconds / 1e6,
                "vs_sha256sum": reference / seconds,
            }
            for label, seconds in best.items()
        },
    }


def meminfo_kib(name: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return -1


def diagnostics(work: Path, restic: str, repository: Path) -> dict[str, Any]:
    """Measure, outside the harness, the pieces its overhead is made of.

    - restic's fixed cost per command (opening the repository: scrypt key derivation), and the
      commands the harness runs before restoring, against `ls --json` (one command that gives
      the snapshot and every file size);
    - the teardown/sandbox I/O: a restic restore like the harness's, then the harness's own
      sandbox (library code, same settings) in three orders:
        harness   restore; sandbox create+start; find; remove sandbox; rm -rf staging
        synced    the same with a sync between restore and sandbox (the flush, timed apart)
        reordered sandbox create+start before the restore; ...; rm -rf staging, then remove
      Docker's overlay mount/unmount (container create/start/remove) makes the kernel write
      back the whole filesystem, i.e. the restored data still dirty in the page cache.
    """
    from restore_tests.sandbox import SandboxSpec, connect, sandbox
    from runners.base import DEFAULT_IMAGE

    out: dict[str, Any] = {"restic_commands": {}}
    env = restic_env(repository)
    for label, arguments in (
        ("cat config (open the repository)", ["cat", "config"]),
        ("snapshots --json", ["snapshots", "--json"]),
        ("stats --json --mode restore-size latest", ["stats", "--json", "--mode", "restore-size",
                                                     "latest"]),
        ("ls --json latest", ["ls", "--json", "latest"]),
    ):  # fmt: skip
        times = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run(
                [restic, "--no-cache", "--no-lock", *arguments],
                env=env,
                check=True,
                capture_output=True,
            )
            times.append(time.perf_counter() - started)
        out["restic_commands"][label] = statistics.median(times)
    client = connect()
    folder = work / "diagnostics"

    def dirty() -> float:
        return meminfo_kib("Dirty") / 1024

    for order in ("harness", "synced", "reordered"):
        shutil.rmtree(folder, ignore_errors=True)
        target = folder / "restore"
        target.mkdir(parents=True)
        spec = SandboxSpec(
            image=DEFAULT_IMAGE,
            run_id="bench-diagnostics",
            scenario="bench",
            memory_bytes=512 * MIB,
            pids=256,
            cpus=1.0,
            read_only_mounts={str(target): "/restore"},
        )
        item: dict[str, Any] = {}
        settle()
        box_context = sandbox(client, spec)
        if order == "reordered":
            started = time.perf_counter()
            box = box_context.__enter__()
            item["sandbox_start_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run(
            [restic, "--no-cache", "--no-lock", "restore", "latest", "--target", str(target)],
            env=env,
            check=True,
            capture_output=True,
        )
        item["restore_seconds"] = time.perf_counter() - started
        item["dirty_mib_after_restore"] = dirty()
        if order == "synced":
            started = time.perf_counter()
            os.sync()
            item["sync_seconds"] = time.perf_counter() - started
        if order != "reordered":
            started = time.perf_counter()
            box = box_context.__enter__()
            item["sandbox_start_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        box.exec(["find", "/restore", "-type", "f", "-printf", "."], 120)
        item["find_seconds"] = time.perf_counter() - started
        item["dirty_mib_before_teardown"] = dirty()
        steps = ["rm", "remove"] if order == "reordered" else ["remove", "rm"]
        for step in steps:
            started = time.perf_counter()
            if step == "rm":
                shutil.rmtree(folder)
            else:
                box_context.__exit__(None, None, None)
            item[f"{step}_seconds"] = time.perf_counter() - started
        item["total_seconds"] = sum(
            item.get(key, 0.0)
            for key in ("sandbox_start_seconds", "sync_seconds", "remove_seconds", "rm_seconds")
        )
        out[order] = item
    return out


# -- report -----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def render(report: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    env, data = report["environment"], report["data"]
    add("")
    add("=" * 96)
    add(
        f"restore-tests benchmark: restic {env['restic_version']} ({env['restic']}), "
        f"{data['files']} files / {data['bytes'] / MIB:.0f} MiB, {report['rounds']} rounds, "
        f"{env['cpus']} CPUs, Python {env['python']}"
    )
    add(
        f"data: tree generated in {data['generation_seconds']} s + manifest (sha256sum) "
        f"{data['manifest_seconds_sha256sum']} s [{'reused' if data['tree_reused'] else 'now'}]; "
        f"restic {env['restic_version']} backup {data['backup_seconds']} s "
        f"[{'reused' if data['repository_reused'] else 'now'}], repository "
        f"{data['repository_bytes'] / MIB:.0f} MiB (v{data['repository_version']}), "
        f"{data['incompressible_bytes'] / MIB:.0f} MiB incompressible"
    )
    add("page cache: nothing dropped; repository and restored data are page-cached for (a) and (b)")
    code = env["code_at_start"]
    add(
        f"code measured: commit {code['commit']}"
        + (" (frozen copy)" if code["copy"] else " (working tree)")
        + (
            f", uncommitted changes: {', '.join(code['uncommitted'])}"
            if code["uncommitted"]
            else ""
        )
    )
    if env["code_changed_during_run"]:
        add(f"WARNING: the code changed during the run (now {env['code_at_end']}): results mixed")
    foreign = [
        (entry["round"], side, entry[f"{side}_foreign_cpu_seconds"])
        for entry in report["per_round"]
        for side in ("a", "b")
        if entry[f"{side}_foreign_cpu_seconds"] > FOREIGN_LIMIT
    ]
    if foreign:
        add(
            "WARNING: other processes used the CPUs during "
            + ", ".join(f"round {r} ({side}): {sec:.1f} CPU-s" for r, side, sec in foreign)
        )
    add("=" * 96)
    add(
        "(a) = restore-tests check; (b) = restic restore + sha256sum -c. "
        "(a) restic = restore + other restic commands (version/snapshots/stats); "
        "(a) ovh = (a) - restic - hashing"
    )
    columns = (
        ("round", 5), ("order", 5), ("(a) wall", 9), ("(b) wall", 9), ("a/b", 5),
        ("(a) restore", 11), ("(a) +restic", 11), ("(a) hash", 8), ("(a) ovh", 7),
        ("(b) restore", 11), ("(b) sha256", 10), ("RSS MB", 6), ("other CPU a/b", 13),
    )  # fmt: skip
    add("  ".join(f"{name:>{width}}" for name, width in columns))

    def row(label: str, order: str, item: dict[str, Any], rss: str, other: str) -> str:
        values = [
            label, order, f"{item['a_wall']:.2f}s", f"{item['b_wall']:.2f}s",
            f"{item['a_wall'] / item['b_wall']:.2f}", f"{item['a_restore']:.2f}s",
            f"{item['a_restic'] - item['a_restore']:.2f}s", f"{item['a_hashing']:.2f}s",
            f"{item['a_overhead']:.2f}s", f"{item['b_restore']:.2f}s",
            f"{item['b_sha256sum']:.2f}s", rss, other,
        ]  # fmt: skip
        return "  ".join(
            f"{value:>{width}}" for value, (_, width) in zip(values, columns, strict=True)
        )

    for entry in report["per_round"]:
        other = f"{entry['a_foreign_cpu_seconds']:.1f}/{entry['b_foreign_cpu_seconds']:.1f}s"
        add(row(str(entry["round"]), entry["order"], entry, f"{entry['a_peak_rss_mb']:.1f}", other))
    add(row("med", "", report["medians"], "", ""))
    add(
        "other CPU = CPU-seconds used by processes other than the bench and its children during "
        "the measurement (Docker's daemon and the sandbox count here); a measurement above "
        f"{FOREIGN_LIMIT} CPU-s is taken again (up to {ATTEMPTS} times); voided attempts: "
        + str(sum(e["a_attempts"] + e["b_attempts"] - 2 for e in report["per_round"]))
    )
    add("")
    add("targets")
    targets = report["targets"]
    for key, label, unit in (
        ("ratio", "median(a) / median(b)", ""),
        ("overhead", "harness overhead, median", " s"),
        ("peak_rss", "harness peak RSS, max over rounds", " MB"),
    ):
        item = targets[key]
        add(
            f"  {label:<40} {item['measured']:>8.2f}{unit:<3}  target <= {item['target']}{unit:<3}"
            f"  {item['verdict']}"
        )
    add("")
    add("(a) as the harness reports it (medians over rounds; JSON results[0].phases/checks)")
    phases = report["a_phases_median"]
    add(
        "  phases: "
        + ", ".join(f"{name} {seconds:.2f}" for name, seconds in phases.items())
        + " s (spans; they overlap: preflight spans select and the sandbox start)"
    )
    add(
        "  restic: "
        + ", ".join(f"{name} {seconds:.2f}" for name, seconds in report["a_restic_median"].items())
        + " s (from the -vv gateway log)"
    )
    add(
        "  checks: "
        + ", ".join(f"{name} {seconds:.2f}" for name, seconds in report["a_checks_median"].items())
        + " s"
    )
    removal = statistics.median(
        entry["a_staging_removed_after_exit_seconds"] for entry in report["per_round"]
    )
    add(
        f"  harness CPU (user+sys, incl. hashing) {report['a_cpu_median']:.2f} s; largest child "
        f"(restic) peak RSS {report['a_children_peak_rss_mb']:.0f} MB; staging still being "
        f"deleted {removal:.2f} s after (a) exited (detached rm, untimed)"
    )
    add("")
    add(
        "(a) timeline: every instant of the wall time in one part (median of each part over "
        "rounds; * = overhead)"
    )
    parts = report["a_overhead_parts_median"]
    for name, seconds in sorted(parts.items(), key=lambda item: -item[1]):
        add(f"  {'*' if is_overhead(name) else ' '} {name:<72} {seconds:>6.2f} s")
    add(
        f"    overhead by this timeline (median of per-round sums): "
        f"{report['a_timeline_overhead_median']:.2f} s (vs {report['medians']['a_overhead']:.2f} s "
        "by the formula; hashing here is verify() only, the check also parses the manifest)"
    )
    for name, seconds in report["import_cost"].items():
        add(f"  for reference: {name:<55} {seconds:>6.2f} s")
    add("")
    hashing = report["hashing"]
    add(
        f"hashing throughput, page-cached, {hashing['files']} files / "
        f"{hashing['bytes'] / MIB:.0f} MiB (best of {hashing['repeats']}, order rotated; "
        "MB = 10^6 bytes)"
    )
    for label, item in hashing["variants"].items():
        add(
            f"  {label:<34} {item['best_seconds']:>6.2f} s  {item['mb_per_s']:>7.0f} MB/s  "
            f"{item['vs_sha256sum']:>5.2f}x sha256sum"
        )
    add(
        f"  in (a) itself (manifest check, median): {hashing['in_harness_mb_per_s']:.0f} MB/s; "
        f"parse_manifest {hashing['parse_manifest_seconds'] * 1000:.0f} ms, "
        f"tree walk {hashing['tree_walk_seconds'] * 1000:.0f} ms"
    )
    found = report["diagnostics"]
    if found:
        add("")
        add("diagnostics (outside the harness; medians of 3 for restic, one pass for the rest)")
        for label, seconds in found["restic_commands"].items():
            add(f"  restic --no-cache {label:<45} {seconds:>6.2f} s")
        add(
            "  restored data vs sandbox/teardown: sandbox start, sync, sandbox remove, rm -rf "
            "(dirty MiB after restore -> before teardown)"
        )
        for order, text in (
            ("harness", "restore, sandbox; remove, rm (before 308942d)"),
            ("synced", "same, with a sync before the sandbox"),
            ("reordered", "sandbox, restore; rm, remove (since 308942d)"),
        ):
            item = found[order]
            sync_text = f"sync {item['sync_seconds']:.2f}, " if "sync_seconds" in item else ""
            add(
                f"  {text:<45} start {item['sandbox_start_seconds']:.2f}, {sync_text}"
                f"remove {item['remove_seconds']:.2f}, rm {item['rm_seconds']:.2f} = "
                f"{item['total_seconds']:.2f} s  ({item['dirty_mib_after_restore']:.0f} -> "
                f"{item['dirty_mib_before_teardown']:.0f} MiB dirty; restore "
                f"{item['restore_seconds']:.2f} s)"
            )
    add("=" * 96)
    return "\n".join(lines)


def median_dict(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys: list[str] = []
    for item in dicts:
        keys += [key for key in item if key not in keys]
    return {key: statistics.median(item.get(key, 0.0) for item in dicts) for key in keys}


# -- main ------------------------------------------------------------------------------------


def prepare_history(python: str, work: Path) -> None:
    """Create and migrate the history DB once (untimed), as a user's existing results.db is.

    (`restore-tests history` no longer creates a missing database: the store's own opening,
    as check does it, from the code measured.)"""
    url = f"sqlite:///{work / 'bench.db'}"
    subprocess.run(
        [
            python,
            "-c",
            f"from restore_tests.history.store import HistoryStore; HistoryStore({url!r})",
        ],
        check=True,
        capture_output=True,
        cwd=CODE[0],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="tree size (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (a) and (b) (default 3)")
    parser.add_argument(
        "--restic",
        default=os.environ.get("RESTIC_BINARY") or shutil.which("restic"),
        help="restic binary (default $RESTIC_BINARY, else restic on PATH)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/var/tmp/restore-tests-bench"),
        help="work folder: tree, repositories, history DB, results.json",
    )
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="keep the last round's manual restore (<work>/manual) instead of removing it",
    )
    parser.add_argument(
        "--code-rev",
        default="HEAD",
        help="git revision of the harness to measure (frozen copy; default HEAD)",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="measure the working tree as it is (default: a frozen `git archive HEAD` copy)",
    )
    parser.add_argument(
        "--no-diagnostics",
        action="store_true",
        help="skip the diagnostics (restic fixed costs; sandbox start/remove and rm -rf "
        "against freshly restored, dirty data)",
    )
    args = parser.parse_args()
    if not args.restic or not shutil.which(args.restic):
        sys.exit("restic not found: pass --restic or set RESTIC_BINARY")
    if args.rounds < 1 or args.size_mib < 16:
        sys.exit("need --rounds >= 1 and --size-mib >= 16")
    restic = os.path.realpath(shutil.which(args.restic) or args.restic)
    version = restic_version(restic)
    python = project_python()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    watch_disk_of(work)
    for leftover in ("manual", "staging", "diagnostics"):
        shutil.rmtree(work / leftover, ignore_errors=True)
    code_before = load_code(work, args.live, args.code_rev)
    log(
        f"code measured: commit {code_before['commit']}"
        + (f" (frozen copy {code_before['copy']})" if code_before["copy"] else " (working tree)")
        + (f", uncommitted: {code_before['uncommitted']}" if code_before["uncommitted"] else "")
    )
    if wait_for_idle_cpu() > 5:
        log("note: the machine was busy when the benchmark started")

    tree_data = ensure_tree(work, mixed_parameters(args.size_mib))
    tree, tree_stamp, tree_reused = tree_data.path, tree_data.stamp, tree_data.reused
    repository_data = ensure_repository(tree_data, restic, version)
    repository, repo_stamp = repository_data.path, repository_data.stamp
    repo_reused = repository_data.reused
    scenario = write_scenario(
        work / f"scenario-{version}.yaml", "bench", repository, restic, rto="15m"
    )
    prepare_history(python, work)
    log(f"warming the page cache with {repository} (untimed)")
    warm_repository(repository)

    harness_runs: list[HarnessRun] = []
    manual_runs: list[ManualRun] = []
    orders: list[str] = []
    for number in range(1, args.rounds + 1):
        order = "a,b" if number % 2 else "b,a"
        orders.append(order)
        for which in order.split(","):
            if which == "a":
                run = measure(
                    functools.partial(run_harness, number, work, scenario, restic, python), "a"
                )
                harness_runs.append(run)
                log(
                    f"round {number} (a) {run.wall:.2f} s (restic {run.restic_seconds:.2f}, "
                    f"hashing {run.hashing_seconds:.2f}, overhead {run.overhead:.2f}, "
                    f"peak RSS {run.peak_rss_mb:.1f} MB)"
                )
            else:
                manual = measure(
                    functools.partial(run_manual, number, work, repository, restic), "b"
                )
                manual_runs.append(manual)
                log(
                    f"round {number} (b) {manual.wall:.2f} s (restore {manual.restore:.2f}, "
                    f"sha256sum {manual.hashing:.2f})"
                )
                if number != args.rounds:
                    shutil.rmtree(work / "manual")  # untimed

    log("hashing throughput on the last manual restore (page-cached)")
    hashing = hashing_benchmark(work / "manual" / TREE_NAME)
    if args.no_diagnostics:
        found: dict[str, Any] = {}
    else:
        log("diagnostics: restic fixed costs; sandbox and rm -rf against dirty restored data")
        found = diagnostics(work, restic, repository)
    if not args.keep_data:
        shutil.rmtree(work / "manual", ignore_errors=True)
    imports = import_cost(python, CODE[0])
    code_after = code_state() if args.live else code_before

    per_round = []
    for run, manual, order in zip(harness_runs, manual_runs, orders, strict=True):
        per_round.append(
            {
                "round": run.round,
                "order": order,
                "a_wall": run.wall,
                "a_restic": run.restic_seconds,
                "a_restore": sum(c["seconds"] for c in run.restic if c["subcommand"] == "restore"),
                "a_restic_commands": run.restic,
                "a_hashing": run.hashing_seconds,
                "a_overhead": run.overhead,
                "a_timeline_parts": run.breakdown,
                "a_phases": run.phases,
                "a_checks": {c["name"]: c["seconds"] for c in run.checks},
                "a_peak_rss_mb": run.peak_rss_mb,
                "a_rusage": run.rusage,
                "a_exit_code": run.exit_code,
                "a_status": run.status,
                "a_foreign_cpu_seconds": run.foreign_cpu,
                "a_staging_removed_after_exit_seconds": run.removal_after_exit,
                "b_foreign_cpu_seconds": manual.foreign_cpu,
                "a_attempts": run.attempts,
                "b_attempts": manual.attempts,
                "b_wall": manual.wall,
                "b_restore": manual.restore,
                "b_sha256sum": manual.hashing,
            }
        )
    keys = (
        "a_wall", "a_restic", "a_restore", "a_hashing", "a_overhead",
        "b_wall", "b_restore", "b_sha256sum",
    )  # fmt: skip
    medians = {key: statistics.median(entry[key] for entry in per_round) for key in keys}
    ratio = medians["a_wall"] / medians["b_wall"]
    peak_rss = max(run.peak_rss_mb for run in harness_runs)
    restic_medians = median_dict(
        [
            {c["subcommand"]: c["seconds"] for c in run.restic} | {"total": run.restic_seconds}
            for run in harness_runs
        ]
    )
    hashed_bytes = harness_runs[0].bytes or hashing["bytes"]
    hashing["in_harness_mb_per_s"] = hashing["bytes"] / medians["a_hashing"] / 1e6
    report = {
        "environment": {
            "restic": restic,
            "restic_version": version,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "host": platform.node(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "code_at_start": code_before,
            "code_at_end": code_after,
            "code_changed_during_run": code_before != code_after,
        },
        "rounds": args.rounds,
        "data": {
            "tree": str(tree),
            "repository": str(repository),
            "files": tree_stamp["files"],
            "bytes": tree_stamp["bytes"],
            "restored_bytes_seen_by_harness": hashed_bytes,
            "incompressible_bytes": tree_stamp["incompressible_bytes"],
            "generation_seconds": tree_stamp["generation_seconds"],
            "manifest_seconds_sha256sum": tree_stamp["manifest_seconds_sha256sum"],
            "tree_reused": tree_reused,
            "backup_seconds": repo_stamp["backup_seconds"],
            "init_seconds": repo_stamp["init_seconds"],
            "repository_bytes": repo_stamp["repository_bytes"],
            "repository_version": repo_stamp["repository_version"],
            "repository_reused": repo_reused,
            "parameters": tree_stamp["parameters"],
        },
        "per_round": per_round,
        "medians": medians,
        "targets": {
            "ratio": {
                "measured": ratio,
                "target": TARGET_RATIO,
                "verdict": verdict(ratio <= TARGET_RATIO),
            },
            "overhead": {
                "measured": medians["a_overhead"],
                "target": TARGET_OVERHEAD_SECONDS,
                "verdict": verdict(medians["a_overhead"] <= TARGET_OVERHEAD_SECONDS),
            },
            "peak_rss": {
                "measured": peak_rss,
                "target": TARGET_RSS_MB,
                "verdict": verdict(peak_rss <= TARGET_RSS_MB),
            },
        },
        "a_phases_median": median_dict([run.phases for run in harness_runs]),
        "a_restic_median": restic_medians,
        "a_checks_median": median_dict(
            [{c["name"]: c["seconds"] or 0.0 for c in run.checks} for run in harness_runs]
        ),
        "a_cpu_median": statistics.median(run.rusage["self_cpu_seconds"] for run in harness_runs),
        "a_children_peak_rss_mb": max(
            run.rusage["children_maxrss_kib"] * 1024 / 1e6 for run in harness_runs
        ),
        "a_overhead_parts_median": median_dict([run.breakdown for run in harness_runs]),
        "a_timeline_overhead_median": statistics.median(
            sum(seconds for part, seconds in run.breakdown.items() if is_overhead(part))
            for run in harness_runs
        ),
        "import_cost": imports,
        "hashing": hashing,
        "diagnostics": found,
    }
    text = render(report)
    print(text)
    results = json.dumps(report, indent=2)
    (work / "results.json").write_text(results)
    stem = f"results-restic-{version}-{code_before['commit']}"
    (work / f"{stem}.json").write_text(results)
    (work / f"{stem}.txt").write_text(text + "\n")
    log(f"wrote {work / 'results.json'} (and {stem}.json/.txt)")


if __name__ == "__main__":
    main()

"""The procedures measured: restore-tests (check, drill), the manual one, bare restic, restverify.

Each procedure's run() returns the verdict time: from the start until the verdict is known.
What comes after (restore-tests' detached removal of its staging folder, the manual `rm -rf`)
is done, untimed, in finish(). prepare() (untimed too) clears what a previous run left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.perf.common import (
    MANIFEST_NAME,
    PASSWORD,
    PASSWORD_VARIABLE,
    TREE_NAME,
    BenchError,
    log,
    project_python,
    restic_env,
)
from bench.perf.runner import Outcome

RESTVERIFY = "restverify==0.3.1"

# Runs restore-tests in-process, exactly as its console script does (from cli import main; the
# working tree's code through the editable install), and writes the process's own peak RSS (not
# restic's: its children are not counted) when it exits, keeping its exit code.
# The subprocess gateway's debug line for every finished command (restore-tests -vv).
GATEWAY_LINE = re.compile(
    r"^DEBUG restore_tests\.execute: exit (\S+) after ([0-9.]+)s: (\S+)(?: (.*))?$"
)

RSS_WRAPPER = r"""
import json, resource, sys
out = sys.argv[1]
sys.argv = ["restore-tests", *sys.argv[2:]]
code = 0
try:
    from cli import main
    main()
except SystemExit as stop:
    code = stop.code
finally:
    with open(out, "w") as stream:
        json.dump({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}, stream)
sys.exit(code)
"""


def timed_run(command: list[str], **kwargs: Any) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, **kwargs)
    return time.perf_counter() - started, completed


def keep_output(logs: Path, stem: str, completed: subprocess.CompletedProcess[str]) -> None:
    """The last run's stdout and stderr of each procedure, for a look afterwards."""
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{stem}.out").write_text(completed.stdout)
    (logs / f"{stem}.err").write_text(completed.stderr)


# -- restore-tests ------------------------------------------------------------------------------


def write_scenario(path: Path, name: str, repository: Path, restic: str, rto: str = "1h") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"name: {name}\n"
        "kind: files\n"
        "source:\n"
        "  type: restic\n"
        f"  repository: {repository}\n"
        f"  password_env: {PASSWORD_VARIABLE}\n"
        f"  restic_binary: {restic}\n"
        "objectives:\n"
        f"  rto: {rto}\n"  # no rpo: the reused snapshot may be days old
        "verify:\n"
        f"  manifest: /{TREE_NAME}/{MANIFEST_NAME}\n"
    )
    return path


def write_drill_scenarios(folder: Path, repositories: list[Path], restic: str, prefix: str) -> Path:
    """One scenario per repository in folder (what `restore-tests drill FOLDER` runs)."""
    shutil.rmtree(folder, ignore_errors=True)
    for number, repository in enumerate(repositories, 1):
        write_scenario(folder / f"s{number:02d}.yaml", f"{prefix}-{number:02d}", repository, restic)
    return folder


def wait_for_staging_removal(staging: Path, limit: float = 300.0) -> float:
    """Untimed: wait until the harness's staging folder is empty; returns the seconds waited.

    The harness renames its staging folder to *.removing at teardown and deletes it from a
    detached process, so the folder may outlive the command by a few seconds. Anything else
    left behind is an error.
    """
    started = time.monotonic()
    while True:
        left = list(staging.iterdir()) if staging.exists() else []
        if not left:
            return time.monotonic() - started
        if any(not entry.name.endswith(".removing") for entry in left):
            raise BenchError(f"restore-tests left staging behind: {left}")
        if time.monotonic() - started > limit:
            raise BenchError(f"staging was still being removed after {limit:.0f} s: {left}")
        time.sleep(0.05)


@dataclass
class Harness:
    """restore-tests as a new process: `check SCENARIO` or `drill FOLDER --jobs N`."""

    name: str
    arguments: list[str]  # ["check", SCENARIO] or ["drill", FOLDER, "--jobs", "N"]
    work: Path
    logs: Path
    label: str
    sandboxes: int = 1
    verbose: bool = False  # -vv: the restic commands and their seconds, in detail["commands"]

    @property
    def staging(self) -> Path:
        return self.work / "staging"

    def command(self, rss_file: Path) -> list[str]:
        return [
            project_python(), "-c", RSS_WRAPPER, str(rss_file),
            *(["-vv"] if self.verbose else []), *self.arguments,
            "--db", f"sqlite:///{self.work / 'bench.db'}",
            "--work-dir", str(self.staging), "--no-cache", "--json",
        ]  # fmt: skip

    def prepare(self) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        wait_for_staging_removal(self.staging)

    def run(self) -> Outcome:
        rss_file = self.work / "harness-rusage.json"
        rss_file.unlink(missing_ok=True)
        env = {**os.environ, PASSWORD_VARIABLE: PASSWORD}
        seconds, completed = timed_run(self.command(rss_file), env=env, cwd=self.work)
        keep_output(self.logs, f"{self.label}-{self.name}", completed)
        try:
            document = json.loads(completed.stdout)
        except ValueError:
            document = {}
        results = document.get("results") or []
        passed = (
            completed.returncode == 0
            and bool(results)
            and all(result.get("status") == "pass" for result in results)
        )
        detail = {
            "exit_code": completed.returncode,
            "statuses": [result.get("status") for result in results],
            "reasons": [result.get("reason") for result in results if result.get("reason")],
            "peak_rss_mb": read_rss(rss_file),
        }
        if len(results) == 1:
            detail["phases"] = results[0].get("phases") or {}
            detail["checks"] = {c["name"]: c.get("seconds") for c in results[0].get("checks", [])}
        if self.verbose:
            detail["commands"] = gateway_commands(completed.stderr)
        if not passed:
            log(f"{self.label} {self.name} did not pass: exit {completed.returncode}, "
                f"{detail['statuses']} {detail['reasons'][:2]}; stderr: "
                f"{completed.stderr.strip()[-600:]}")  # fmt: skip
        return Outcome(seconds, passed, detail)

    def finish(self) -> None:
        waited = wait_for_staging_removal(self.staging)
        if waited > 30:
            log(f"staging was removed {waited:.0f} s after restore-tests exited")


def gateway_commands(stderr: str) -> list[dict[str, Any]]:
    """The commands restore-tests ran and their seconds, from its -vv gateway log."""
    commands = []
    for line in stderr.splitlines():
        match = GATEWAY_LINE.match(line)
        if match:
            arguments = (match[4] or "").split()
            subcommand = next((a for a in arguments if not a.startswith("-")), "")
            commands.append(
                {
                    "program": os.path.basename(match[3]),
                    "subcommand": subcommand,
                    "seconds": float(match[2]),
                    "exit": match[1],
                }
            )
    return commands


def read_rss(rss_file: Path) -> float | None:
    try:
        return json.loads(rss_file.read_text())["maxrss_kib"] * 1024 / 1e6
    except (OSError, ValueError, KeyError):
        return None


def check_procedure(work: Path, scenario: Path, logs: Path, label: str) -> Harness:
    return Harness("restore-tests", ["check", str(scenario)], work, logs, label)


def drill_procedure(work: Path, folder: Path, jobs: int, logs: Path, label: str) -> Harness:
    scenarios = len(list(folder.glob("*.yaml")))
    return Harness(
        f"drill --jobs {jobs}",
        ["drill", str(folder), "--jobs", str(jobs)],
        work,
        logs,
        label,
        sandboxes=scenarios,
    )


def import_cost(python: str, cwd: Path, repeats: int = 3) -> dict[str, float]:
    """Python start-up, and the imports `check` needs (in a child, as the harness pays them)."""
    modules = (
        "cli, restore_tests.drill, restore_tests.pipeline, restore_tests.history.store, "
        "restore_tests.report.table, restore_tests.scenario, runners"
    )
    out: dict[str, float] = {}
    for label, code in (
        ("python -c pass", "pass"),
        ("python + check's imports", f"import {modules}"),
    ):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run([python, "-c", code], cwd=cwd, check=True)
            times.append(time.perf_counter() - started)
        out[label] = statistics.median(times)
    return out


# -- by hand --------------------------------------------------------------------------------------


@dataclass
class ResticRestore:
    """`restic --no-cache restore latest --target DIR`, then (manual) `sha256sum -c` in the tree,
    timed together; bare restic stops after the restore. The `rm -rf DIR` is not timed."""

    name: str
    repository: Path
    restic: str
    target: Path
    logs: Path
    label: str
    hash_after: bool = True
    sandboxes: int = 0

    def prepare(self) -> None:
        shutil.rmtree(self.target, ignore_errors=True)

    def run(self) -> Outcome:
        command = [self.restic, "--no-cache", "restore", "latest", "--target", str(self.target)]
        restore, restored = timed_run(command, env=restic_env(self.repository))
        keep_output(self.logs, f"{self.label}-{self.name}", restored)
        detail: dict[str, Any] = {"restore_seconds": restore, "restic_exit": restored.returncode}
        passed = restored.returncode == 0
        if self.hash_after and passed:
            hashing, checked = timed_run(
                ["sha256sum", "-c", "--quiet", MANIFEST_NAME], cwd=self.target / TREE_NAME
            )
            detail.update(sha256sum_seconds=hashing, sha256sum_exit=checked.returncode)
            passed = checked.returncode == 0
            restore += hashing
        if not passed:
            log(f"{self.label} {self.name} did not pass: {detail}; {restored.stderr[-600:]}")
        return Outcome(restore, passed, detail)

    def finish(self) -> None:
        shutil.rmtree(self.target, ignore_errors=True)


def manual_procedure(
    repository: Path, restic: str, work: Path, logs: Path, label: str
) -> ResticRestore:
    return ResticRestore("manual", repository, restic, work / "manual", logs, label)


def bare_restic_procedure(
    repository: Path, restic: str, work: Path, logs: Path, label: str
) -> ResticRestore:
    return ResticRestore(
        "bare restic", repository, restic, work / "bare", logs, label, hash_after=False
    )


# -- restverify ---------------------------------------------------------------------------------


def ensure_restverify(work: Path) -> Path:
    """restverify from PyPI in its own virtual environment (created once, reused)."""
    venv = work / "restverify-venv"
    program = venv / "bin" / "restverify"
    wanted = RESTVERIFY.split("==")[1]
    if program.exists():
        version = subprocess.run([program, "--version"], capture_output=True, text=True).stdout
        if wanted in version:
            return program
    log(f"installing {RESTVERIFY} from PyPI into {venv} (once)")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [venv / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check", RESTVERIFY],
        check=True,
    )
    return program


def restic_on_path(work: Path, restic: str, version: str) -> Path:
    """A folder holding `restic` -> this version: restverify runs the restic found on PATH."""
    folder = work / f"bin-restic-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "restic"
    if not link.is_symlink() or os.readlink(link) != restic:
        link.unlink(missing_ok=True)
        link.symlink_to(restic)
    return folder


@dataclass
class Restverify:
    """`restverify run -r REPO -s TREE --json`: default settings, compared with the source tree.

    restic comes from PATH, the password from RESTIC_PASSWORD (passed through). Its restic cache
    (RESTIC_CACHE_DIR) is emptied before each run, untimed: the others run with --no-cache.
    Its restores go to RESTVERIFY_TMPDIR on the same disk as the others'; its own removal of
    the restored tree comes before its verdict, and is timed.
    """

    program: Path
    repository: Path
    tree: Path
    restic_folder: Path
    work: Path
    logs: Path
    label: str
    name: str = "restverify"
    sandboxes: int = 0

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "RESTIC_PASSWORD": PASSWORD,
            "PATH": f"{self.restic_folder}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "RESTVERIFY_HOME": str(self.work / "restverify-home"),
            "RESTVERIFY_TMPDIR": str(self.work / "restverify-tmp"),
            "RESTIC_CACHE_DIR": str(self.work / "restverify-cache"),
        }

    def prepare(self) -> None:
        shutil.rmtree(self.work / "restverify-cache", ignore_errors=True)
        (self.work / "restverify-tmp").mkdir(parents=True, exist_ok=True)

    def run(self) -> Outcome:
        command = [
            str(self.program), "run", "-r", str(self.repository), "-s", str(self.tree), "--json"
        ]  # fmt: skip
        seconds, completed = timed_run(command, env=self.environment())
        keep_output(self.logs, f"{self.label}-{self.name}", completed)
        detail: dict[str, Any] = {"exit_code": completed.returncode}
        try:
            document = json.loads(completed.stdout)
            sample = document.get("sample") or {}
            detail.update(
                status=document.get("status"),
                sampled_files=sample.get("sampled_files"),
                total_files=sample.get("total_files"),
                compare=(document.get("compare") or {}).get("status"),
            )
        except ValueError:
            pass
        if completed.returncode != 0:
            log(f"{self.label} restverify exited {completed.returncode}: "
                f"{completed.stderr.strip()[-600:]}")  # fmt: skip
        return Outcome(seconds, completed.returncode == 0, detail)

    def finish(self) -> None:
        left = list((self.work / "restverify-tmp").iterdir())
        if left:
            log(f"restverify left {left[:3]} behind: removing it")
            for entry in left:
                shutil.rmtree(entry, ignore_errors=True)

"""What every part of the benchmark shares: paths, the repository password, logging, restic."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
TREE_NAME = "bench"  # the tree is backed up as this relative path: /bench/... in the snapshot
MANIFEST_NAME = "SHA256SUMS"
PASSWORD = "restore-tests-bench-password"
PASSWORD_VARIABLE = "BENCH_RESTIC_PASSWORD"


class BenchError(RuntimeError):
    """The benchmark cannot go on (bad setup, a generator or a backup that failed)."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def project_python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def restic_version(restic: str) -> str:
    output = subprocess.run([restic, "version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"restic (\d+\.\d+\.\d+)", output)
    if not match:
        raise BenchError(f"{restic} is not restic: {output.strip()[:100]}")
    return match[1]


def restic_env(repository: Path) -> dict[str, str]:
    return {**os.environ, "RESTIC_REPOSITORY": str(repository), "RESTIC_PASSWORD": PASSWORD}


def code_state() -> dict[str, Any]:
    """The commit of the working tree, and uncommitted changes to the code the harness runs."""

    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", *arguments], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted": git(
            "status", "--porcelain", "--", "cli.py", "restore_tests", "runners", "pyproject.toml"
        ).splitlines(),
    }

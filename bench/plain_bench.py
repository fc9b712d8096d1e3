"""A plain archive drilled by restore-tests against the manual procedure, alternately.

(a) `restore-tests check` on a `local` scenario: the .tar.zst is read once, hashed against its
    sidecar while it streams, unpacked into staging, and every file of the manifest hashed;
(b) the manual procedure: copy the archive (the "download"), `sha256sum` it, `tar --zstd -xf`,
    `sha256sum -c` the manifest.

Usage: python bench/plain_bench.py [--size-mib 1024] [--rounds 3] [--work DIR]
Prints one line per round and the median ratio (a)/(b). The issue's goal: <= 0.8.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024**2


def make_tree(root: Path, size_mib: int) -> None:
    """Half the bytes in 8 large incompressible files, the rest in 4,000 small ones."""
    data = root / "data"
    (data / "small").mkdir(parents=True)
    large = size_mib * MIB // 2 // 8
    for index in range(8):
        (data / f"large-{index}.bin").write_bytes(os.urandom(large))
    small = size_mib * MIB // 2 // 4000
    for index in range(4000):
        (data / "small" / f"doc-{index:04}.txt").write_bytes(os.urandom(small // 2) * 2)
    files = sorted(p.relative_to(data) for p in data.rglob("*") if p.is_file())
    with open(data / "SHA256SUMS", "w") as manifest:
        subprocess.run(["sha256sum", *map(str, files)], cwd=data, stdout=manifest, check=True)


def prepare(work: Path, size_mib: int) -> tuple[Path, Path]:
    archive = work / "nas" / "export-bench.tar.zst"
    if not archive.exists():
        tree = work / "tree"
        shutil.rmtree(tree, ignore_errors=True)
        make_tree(tree, size_mib)
        archive.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "--zstd", "-cf", str(archive), "-C", str(tree), "data"], check=True)
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        archive.with_name(archive.name + ".sha256").write_text(f"{digest}  {archive.name}\n")
        shutil.rmtree(tree)
    scenario = work / "bench.yaml"
    scenario.write_text(
        f"name: plain-bench\nkind: files\nsource:\n  type: local\n  path: {archive}\n"
        "  digest: sidecar\nverify:\n  manifest: /data/SHA256SUMS\n"
    )
    return archive, scenario


def run_tool(scenario: Path, work: Path) -> float:
    started = time.perf_counter()
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "cli.py"),
            "check",
            str(scenario),
            "--db",
            f"sqlite:///{work / 'bench.db'}",
            "--work-dir",
            str(work / "staging"),
        ],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        sys.exit(f"restore-tests failed: {completed.stdout}{completed.stderr}")
    return seconds


def run_manual(archive: Path, work: Path) -> float:
    target = work / "manual"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    started = time.perf_counter()
    copy = target / archive.name
    shutil.copyfile(archive, copy)
    digest = subprocess.run(["sha256sum", str(copy)], capture_output=True, text=True, check=True)
    expected = archive.with_name(archive.name + ".sha256").read_text().split()[0]
    if digest.stdout.split()[0] != expected:
        sys.exit("manual: digest differs")
    subprocess.run(["tar", "--zstd", "-xf", str(copy), "-C", str(target)], check=True)
    subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=target / "data", check=True)
    seconds = time.perf_counter() - started
    shutil.rmtree(target)  # untimed, as the tool's detached cleanup is
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "plain-bench")
    options = parser.parse_args()
    options.work.mkdir(parents=True, exist_ok=True)
    archive, scenario = prepare(options.work, options.size_mib)
    procedures = {
        "restore-tests": lambda: run_tool(scenario, options.work),
        "manual": lambda: run_manual(archive, options.work),
    }
    ratios = []
    for round_number in range(1, options.rounds + 1):
        names = list(procedures) if round_number % 2 else list(reversed(procedures))
        times = {name: procedures[name]() for name in names}  # alternating which goes first
        ratio = times["restore-tests"] / times["manual"]
        ratios.append(ratio)
        print(
            f"round {round_number}: restore-tests {times['restore-tests']:.2f} s, "
            f"manual {times['manual']:.2f} s, ratio {ratio:.2f}"
        )
    print(f"median ratio {statistics.median(ratios):.2f} (goal <= 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

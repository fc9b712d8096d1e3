#!/usr/bin/env python3
"""Benchmark: the s3 source's fetch (hashed while it streams) against a plain boto3 download.

One object of --size-mib random bytes is served by a local `rclone serve s3`. Each round runs,
in the order a,b on odd rounds and b,a on even ones, each in a fresh child process:

  (a) S3Source.select() then S3Source.fetch() with unpack: none and digest: sha256:HEX, so the
      object is downloaded in ranged parts, hashed and written into a staging folder, and its
      digest compared;
  (b) boto3's client.download_file() of the same object with its default transfer settings
      (10 threads, 8 MiB parts), which writes the file and hashes nothing.

Only the download is timed (imports and client creation are not); the written file is removed
and the disk synced between runs, untimed. Each child reports its own peak RSS and CPU time
(user + system, imports included): on a shared machine the CPU time is steadier than the wall
time, which also depends on what the server (rclone, on the same cores) gets. The script
prints the medians, the ratio a/b (the issue's target: <= 1.1) and the peak RSS of (a) (target:
<= 150 MB at 1 GiB and at 4 GiB).

Usage: .venv/bin/python bench/s3_fetch_bench.py [--size-mib 1024] [--rounds 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY, SECRET = "bench-key", "bench-secret-value"
BUCKET, OBJECT_KEY = "bench", "nightly/bench.bin"
MIB = 1024 * 1024
TARGET_RATIO = 1.1
TARGET_RSS_MB = 150.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--child", choices=["source", "boto3"], help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--digest", help=argparse.SUPPRESS)
    parser.add_argument("--target", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        return child(arguments)
    work = arguments.work or Path(tempfile.mkdtemp(prefix="s3-bench-"))
    try:
        return compare(work, arguments.size_mib, arguments.rounds)
    finally:
        if arguments.work is None:
            shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class Run:
    """One timed download in a child process."""

    seconds: float
    rss_mb: float  # the child's peak RSS
    cpu_seconds: float  # the child's user + system time, imports included


def compare(work: Path, size_mib: int, rounds: int) -> int:
    digest = make_object(work / "s3" / BUCKET / OBJECT_KEY, size_mib)
    port = free_port()
    server = start_rclone(work / "s3", port)
    runs: dict[str, list[Run]] = {"source": [], "boto3": []}
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for number in range(rounds):
            for kind in ["source", "boto3"] if number % 2 == 0 else ["boto3", "source"]:
                run = run_child(kind, endpoint, digest, work / "target")
                runs[kind].append(run)
                print(
                    f"round {number + 1} {kind:6} {run.seconds:6.2f} s  "
                    f"{size_mib / run.seconds:7.1f} MiB/s  peak RSS {run.rss_mb:5.1f} MB  "
                    f"CPU {run.cpu_seconds:5.2f} s",
                    flush=True,
                )
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=10)
    return report(size_mib, runs)


def report(size_mib: int, runs: dict[str, list[Run]]) -> int:
    """The medians, and the verdict against the issue's targets (exit 1 when one is missed)."""
    seconds = {kind: statistics.median(run.seconds for run in each) for kind, each in runs.items()}
    cpu = {kind: statistics.median(run.cpu_seconds for run in each) for kind, each in runs.items()}
    peak = {kind: max(run.rss_mb for run in each) for kind, each in runs.items()}
    ratio = seconds["source"] / seconds["boto3"]
    print(f"\nobject {size_mib} MiB, median of {len(runs['source'])} rounds")
    for kind, label in (("source", "s3 source fetch (hashed)"), ("boto3", "boto3 download_file")):
        print(
            f"  {label:26} {seconds[kind]:6.2f} s  {size_mib / seconds[kind]:7.1f} MiB/s  "
            f"CPU {cpu[kind]:5.2f} s  peak RSS {peak[kind]:5.1f} MB"
        )
    print(
        f"  ratio {ratio:.2f} (target <= {TARGET_RATIO}); peak RSS of the s3 source "
        f"{peak['source']:.1f} MB (target <= {TARGET_RSS_MB:.0f})"
    )
    return 0 if ratio <= TARGET_RATIO and peak["source"] <= TARGET_RSS_MB else 1


def make_object(path: Path, size_mib: int) -> str:
    """The object: random bytes (incompressible), kept when it already has the right size."""
    import hashlib

    stamp = path.with_name(path.name + ".bench-sha256")
    if path.exists() and path.stat().st_size == size_mib * MIB and stamp.exists():
        return stamp.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as output:
        for _ in range(size_mib):
            piece = os.urandom(MIB)
            digest.update(piece)
            output.write(piece)
    stamp.write_text(digest.hexdigest())
    return digest.hexdigest()


def start_rclone(root: Path, port: int) -> subprocess.Popen[bytes]:
    rclone = Path(sys.executable).parent / "rclone"
    server = subprocess.Popen(
        [
            str(rclone) if rclone.exists() else "rclone",
            "serve",
            "s3",
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{KEY},{SECRET}",
            "--config",
            "/dev/null",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("rclone serve s3 did not start within 20 s")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_child(kind: str, endpoint: str, digest: str, target: Path) -> Run:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(mode=0o700, parents=True)
    os.sync()
    time.sleep(1)
    completed = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--endpoint",
            endpoint,
            "--digest",
            digest,
            "--target",
            str(target),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET},
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{completed.stderr[-2000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    shutil.rmtree(target, ignore_errors=True)
    return Run(float(result["seconds"]), float(result["rss_mb"]), float(result["cpu"]))


def child(arguments: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT))
    target: Path = arguments.target
    if arguments.child == "source":
        seconds = fetch_with_the_source(arguments.endpoint, arguments.digest, target)
    else:
        seconds = fetch_with_boto3(arguments.endpoint, target)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rss_mb": usage.ru_maxrss / 1024,
                "cpu": usage.ru_utime + usage.ru_stime,
            }
        )
    )
    return 0


def fetch_with_the_source(endpoint: str, digest: str, target: Path) -> float:
    from restore_tests.sources.base import FetchRequest
    from restore_tests.sources.s3 import S3Settings, S3Source

    settings = S3Settings(
        type="s3",
        endpoint=endpoint,
        bucket=BUCKET,
        key=OBJECT_KEY,
        unpack="none",
        digest=f"sha256:{digest}",
    )
    scratch = target.parent / "scratch"
    scratch.mkdir(mode=0o700, exist_ok=True)
    source = S3Source(settings, scratch)
    point = source.select()
    started = time.monotonic()
    fetched = source.fetch(point, FetchRequest(target=target, scratch=scratch))
    seconds = time.monotonic() - started
    failed = [check.reason for check in fetched.checks if check.status != "passed"]
    if failed or not any(check.proves_data for check in fetched.checks):
        raise SystemExit(f"the fetch did not prove the object: {failed}")
    return seconds


def fetch_with_boto3(endpoint: str, target: Path) -> float:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"}, response_checksum_validation="when_required"
        ),
    )
    started = time.monotonic()
    client.download_file(BUCKET, OBJECT_KEY, str(target / "bench.bin"))
    return time.monotonic() - started


if __name__ == "__main__":
    sys.exit(main())

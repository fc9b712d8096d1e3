"""VM disk images: restore-tests against the same commands by hand, alternately, in one run.

checks: `restore-tests check --json` on a vm-image scenario (local qcow2, unpack: none: hard-linked
    into staging) with image_check, partitions {min: 1} and two guest files with their sha256
    (/etc/hostname and one large random file), against the manual procedure in a
    restore-tests/vm-tools container with the sandbox's isolation and limits: `docker run -d`,
    then `docker exec` of qemu-img info, qemu-img check, qemu-img convert -O raw to scratch,
    sfdisk --json, debugfs dump of each file + sha256sum, rm of the copies, `docker rm -f`.
    Goal: tool <= 1.2x manual.
boot: the small bootable disk of tests/vm_helpers.py (qcow2) checked with only `boot:
    {expect_console: MARKER}`: the tool's `boot` phase against qemu's own boot by hand (the same
    qemu-system-x86_64 command line as runners/vm_image.py's _boot_script, timed inside the
    container from qemu's start until the marker is in the console file). Goal: overhead <= 1 s.

The disk for `checks` (MBR + one ext4 partition holding SIZE GiB of seeded random files and
/etc/hostname, made with mke2fs -d, sfdisk and dd in restore-tests/vm-testkit, then converted to
qcow2) and the boot disk are made once in --work and reused.

Usage: python bench/vm_bench.py [--size 2] [--rounds 3] [--work DIR] [--cases checks,boot]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runners (the boot command line)
sys.path.insert(0, str(ROOT / "tests"))  # vm_helpers, as scripts/demo.py imports it

from vm_helpers import MARKER, TESTKIT, VM_TOOLS, make_boot_disk, to_qcow2  # noqa: E402

from runners.vm_image import Boot, _boot_script  # noqa: E402

TOOL = Path(sys.executable).parent / "restore-tests"
MANUAL_CONTAINER = "restore-tests-bench-vm-manual"
GOAL_RATIO, GOAL_OVERHEAD = 1.2, 1.0
GIB, MIB = 1024**3, 1024**2
FILE_BYTES = 256 * MIB  # the random files' size (the last may be smaller)
HOSTNAME = "bench-vm\n"
PART_START = 2048  # sectors: the ext4 partition starts at 1 MiB
BOOT_TIMEOUT = 300
POLL = 0.05  # the manual boot's console poll (the tool polls every 0.2 s)

# In vm-testkit, as the caller: /data (the files) -> /out/ext.img -> /out/disk.raw -> qcow2.
BUILD = f"""set -euo pipefail
cd /out
truncate -s "$EXT_BYTES" ext.img
mke2fs -q -t ext4 -m 0 -L bench-root -E root_owner=0:0 -d /data ext.img
truncate -s "$DISK_BYTES" disk.raw
printf '%s\\n' 'label: dos' 'start={PART_START}, type=83' | sfdisk -q disk.raw
dd if=ext.img of=disk.raw bs=1M seek=1 conv=notrunc,sparse status=none
rm ext.img
qemu-img convert -f raw -O qcow2 disk.raw bench.qcow2.part
rm disk.raw
mv bench.qcow2.part bench.qcow2
"""


@dataclass
class Timing:
    """One procedure in each round: its wall seconds, the seconds compared (the wall, or the
    boot), its parts (phases or steps) and a note (the tool's boot check)."""

    walls: list[float] = field(default_factory=list)
    figures: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, wall: float, figure: float, parts: dict[str, float], note: str = "") -> None:
        self.walls.append(wall)
        self.figures.append(figure)
        self.notes.append(note)
        for name, seconds in parts.items():
            self.parts.setdefault(name, []).append(seconds)

    def median(self, part: str | None = None) -> float:
        return statistics.median(self.walls if part is None else self.parts.get(part, [0.0]))


@dataclass(frozen=True)
class Disk:
    """An image for one case: its file, format and the guest files with their sha256."""

    image: Path
    files: dict[str, str]


def docker(*args: str, timeout: float = 3600) -> str:
    completed = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)[:300]}: exit {completed.returncode}: "
                           f"{completed.stderr.strip()[-1000:]}")  # fmt: skip
    return completed.stdout


def write_data(data: Path, size: float) -> dict[str, str]:
    """SIZE GiB of seeded random files in data/bench, data/etc/hostname: guest path -> sha256."""
    shutil.rmtree(data, ignore_errors=True)
    (data / "bench").mkdir(parents=True)
    (data / "etc").mkdir()
    (data / "etc" / "hostname").write_text(HOSTNAME)
    files = {"/etc/hostname": hashlib.sha256(HOSTNAME.encode()).hexdigest()}
    left, number, generator = int(size * GIB), 1, random.Random(20261201)
    while left > 0:
        digest, name = hashlib.sha256(), f"/bench/file-{number:02d}.bin"
        with (data / name.lstrip("/")).open("wb") as handle:
            for _ in range(min(left, FILE_BYTES) // (8 * MIB)):
                chunk = generator.randbytes(8 * MIB)
                digest.update(chunk)
                handle.write(chunk)
        files[name] = digest.hexdigest()
        left, number = left - FILE_BYTES, number + 1
    return files


def big_disk(work: Path, size: float) -> Disk:
    """work/big-SIZE/bench.qcow2 (made once: its stamp holds the parameters and the digests)."""
    folder = work / f"big-{size:g}"
    stamp, image = folder / "stamp.json", folder / "bench.qcow2"
    if stamp.exists() and image.exists():
        return Disk(image, json.loads(stamp.read_text())["files"])
    print(f"making {image} ({size:g} GiB of random files) ...", flush=True)
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    files = write_data(folder / "data", size)
    data_bytes = sum(p.stat().st_size for p in (folder / "data").rglob("*") if p.is_file())
    ext_bytes = (int(data_bytes * 1.08) + 128 * MIB) // MIB * MIB
    docker(
        "run", "--rm", "--network", "none", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--user", f"{os.getuid()}:{os.getgid()}",
        "-v", f"{folder / 'data'}:/data:ro", "-v", f"{folder}:/out",
        "-e", f"EXT_BYTES={ext_bytes}", "-e", f"DISK_BYTES={ext_bytes + 2 * MIB}",
        TESTKIT, "bash", "-c", BUILD,
    )  # fmt: skip
    shutil.rmtree(folder / "data")
    stamp.write_text(json.dumps({"size_gib": size, "files": files}, indent=1))
    took = time.perf_counter() - started
    print(f"  {image.stat().st_size / GIB:.2f} GiB qcow2 in {took:.0f} s", flush=True)
    return Disk(image, files)


def boot_disk(work: Path) -> Disk:
    """tests/vm_helpers.py's bootable disk, as qcow2 (made once)."""
    image = work / "boot" / "boot.qcow2"
    if not image.exists():
        raw = make_boot_disk(work / "boot")
        to_qcow2(raw, image)
        raw.unlink()
    return Disk(image, {})


def checked_files(disk: Disk) -> dict[str, str]:
    """What both sides read: /etc/hostname and the first large file."""
    return {path: disk.files[path] for path in ("/etc/hostname", "/bench/file-01.bin")}


def write_scenario(path: Path, image: Path, verify: str, options: argparse.Namespace) -> Path:
    path.write_text(
        f"name: {path.stem}\nkind: vm-image\n"
        f"source: {{type: local, path: {image}, unpack: none}}\n"
        f"disk: {{format: qcow2}}\nobjectives: {{rto: 1h}}\nverify:\n{verify}"
        f"sandbox: {{memory: {options.memory}, cpus: {options.cpus}}}\n"
    )
    return path


def checks_scenario(disk: Disk, options: argparse.Namespace) -> Path:
    files = "".join(
        f"    - {{path: {path}, sha256: {digest}}}\n"
        for path, digest in checked_files(disk).items()
    )
    verify = f"  image_check: true\n  partitions: {{min: 1}}\n  files:\n{files}"
    return write_scenario(options.work / "vm-checks.yaml", disk.image, verify, options)


def boot_scenario(disk: Disk, options: argparse.Namespace) -> Path:
    verify = (
        f"  image_check: false\n  boot: {{expect_console: '{MARKER}', timeout: {BOOT_TIMEOUT}s}}\n"
    )
    return write_scenario(options.work / "vm-boot.yaml", disk.image, verify, options)


def run_tool(scenario: Path, work: Path) -> tuple[float, dict[str, float], str]:
    """restore-tests check --json: wall seconds, its phases (+ outside), the boot's observed."""
    argv = [
        str(TOOL), "check", str(scenario), "--json", "--db",
        f"sqlite:///{work / 'history.db'}", "--work-dir", str(work / "staging"),
    ]  # fmt: skip
    started = time.perf_counter()
    completed = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - started
    try:
        [record] = json.loads(completed.stdout)["results"]
    except (ValueError, KeyError):
        record = {}
    if completed.returncode != 0 or record.get("status") != "pass":
        sys.exit(
            f"FAILED: {' '.join(argv)}\nexit {completed.returncode}, after {wall:.1f} s\n"
            f"stdout:\n{completed.stdout[-8000:]}\nstderr:\n{completed.stderr[-4000:]}"
        )
    phases = {name: float(seconds) for name, seconds in record["phases"].items()}
    phases["outside"] = wall - sum(phases.values())  # process start, imports, history, exit
    observed = [c.get("observed", "") for c in record["checks"] if c["name"] == "boot"]
    return wall, phases, (observed or [""])[0]


def start_manual(image: Path, scratch: Path, options: argparse.Namespace) -> None:
    """docker run -d with the sandbox's isolation and limits (restore_tests/sandbox.py), as the
    image's owner, its folder read-only at /restore, a host scratch folder at /scratch."""
    owner = image.stat()
    docker(
        "run", "-d", "--name", MANUAL_CONTAINER, "--network", "none", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--read-only",
        "--user", f"{owner.st_uid}:{owner.st_gid}", "--memory", options.memory,
        "--memory-swap", options.memory, "--cpus", str(options.cpus), "--pids-limit", "256",
        "--tmpfs", "/tmp:rw,nosuid,nodev,size=256m", "--tmpfs", "/run:rw,nosuid,nodev,size=16m",
        "-v", f"{scratch}:/scratch", "-v", f"{image.parent}:/restore:ro", "-w", "/restore",
        "-e", "HOME=/scratch", "-e", "TMPDIR=/scratch", "-e", "MTOOLS_SKIP_CHECK=1",
        VM_TOOLS, "sleep", "infinity",
    )  # fmt: skip


def shell(script: str) -> str:
    return docker("exec", MANUAL_CONTAINER, "bash", "-c", "set -o pipefail; " + script)


def read_files(files: dict[str, str], offset: int) -> None:
    """debugfs dump of each file at the partition's offset, then sha256sum: digests compared."""
    for path, expected in files.items():
        output = shell(
            f'debugfs -R "dump {path} /scratch/guest-file" "/scratch/disk.raw?offset={offset}" '
            "2>/dev/null >/dev/null && sha256sum /scratch/guest-file"
        )
        if output.split()[:1] != [expected]:
            raise RuntimeError(f"manual: {path} has sha256 {output.strip()!r}, not {expected}")


def first_offset(sfdisk_json: str) -> int:
    return int(json.loads(sfdisk_json)["partitiontable"]["partitions"][0]["start"]) * 512


def manual_checks(disk: Disk) -> dict[str, Callable[[], object]]:
    """The technician's commands in the running container, one `docker exec` each."""
    name = disk.image.name
    table: list[str] = []
    return {
        "info": lambda: shell(f"qemu-img info -f qcow2 --output=json {name}"),
        "check": lambda: shell(f"qemu-img check -f qcow2 --output=json {name}"),
        "convert": lambda: shell(f"qemu-img convert -f qcow2 -O raw {name} /scratch/disk.raw"),
        "sfdisk": lambda: table.append(shell("sfdisk --json /scratch/disk.raw")),
        "files": lambda: read_files(checked_files(disk), first_offset(table[0])),
        "rm": lambda: shell("rm -f /scratch/disk.raw /scratch/guest-file"),
    }


def boot_and_time() -> float:
    """qemu started as the tool starts it; seconds from its start until the marker is in the
    console file (polled every POLL s), measured inside the container."""
    qemu = _boot_script("qcow2", Boot(expect_console=MARKER)).split(" & q=$!")[0]
    output = shell(
        'ln -sfn "$PWD/boot.qcow2" /scratch/image && rm -f /scratch/console.log; '
        f"t0=$(date +%s.%N); {qemu} & q=$!; "
        f"until grep -qF -- '{MARKER}' /scratch/console.log 2>/dev/null; do "
        f"kill -0 $q 2>/dev/null || exit 4; [ $SECONDS -ge {BOOT_TIMEOUT} ] && exit 5; "
        f"sleep {POLL}; done; t1=$(date +%s.%N); kill $q 2>/dev/null; echo $t0 $t1"
    )
    started, seen = (float(value) for value in output.split())
    return seen - started


def run_manual(
    steps: dict[str, Callable[[], object]], disk: Disk, options: argparse.Namespace
) -> tuple[float, dict[str, float]]:
    """docker run -d, the steps, docker rm -f (timed, in a finally block); the scratch folder is
    removed untimed, as the tool's detached cleanup is."""
    scratch = options.work / "manual-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    scratch.chmod(0o1777)
    all_steps = {"container": lambda: start_manual(disk.image, scratch, options), **steps}
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    try:
        for name, step in all_steps.items():
            began = time.perf_counter()
            measured = step()
            seconds[name] = time.perf_counter() - began
            if isinstance(measured, dict):  # what the step measured itself (qemu's boot)
                seconds.update(measured)
    finally:
        began = time.perf_counter()
        subprocess.run(["docker", "rm", "-f", MANUAL_CONTAINER], capture_output=True)
        seconds["remove"] = time.perf_counter() - began
    wall = time.perf_counter() - started
    shutil.rmtree(scratch)
    return wall, seconds


@dataclass(frozen=True)
class Case:
    """One comparison: the tool's scenario, the manual steps, the figures compared."""

    name: str
    disk: Disk
    scenario: Path
    steps: Callable[[], dict[str, Callable[[], object]]]
    tool_figure: Callable[[float, dict[str, float]], float]  # wall, phases -> compared seconds
    manual_figure: Callable[[float, dict[str, float]], float]


def make_cases(options: argparse.Namespace) -> list[Case]:
    cases = []
    if "checks" in options.cases:
        big = big_disk(options.work, options.size)
        cases.append(
            Case("checks", big, checks_scenario(big, options), lambda: manual_checks(big),
                 lambda wall, _: wall, lambda wall, _: wall)
        )  # fmt: skip
    if "boot" in options.cases:
        small = boot_disk(options.work)
        cases.append(
            Case("boot", small, boot_scenario(small, options),
                 lambda: {"boot": lambda: {"qemu boot": boot_and_time()}},
                 lambda _, phases: phases["boot"], lambda _, parts: parts["qemu boot"])
        )  # fmt: skip
    return cases


def settle(work: Path, limit: float = 300.0) -> None:
    """Before each measurement: the tool's detached cleanup done, dirty pages written."""
    deadline = time.monotonic() + limit
    staging = work / "staging"
    while staging.exists() and any(staging.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    subprocess.run(["sync"], check=True)


def measure_one(case: Case, who: str, options: argparse.Namespace, timing: Timing) -> None:
    settle(options.work)
    if who == "tool":
        wall, phases, observed = run_tool(case.scenario, options.work)
        timing.add(wall, case.tool_figure(wall, phases), phases, observed)
    else:
        wall, steps = run_manual(case.steps(), case.disk, options)
        timing.add(wall, case.manual_figure(wall, steps), steps)


Results = dict[str, dict[str, Timing]]


def measure(cases: list[Case], options: argparse.Namespace) -> Results:
    """Each round: every case, tool then manual in odd rounds, manual then tool in even ones."""
    results: Results = {case.name: {"tool": Timing(), "manual": Timing()} for case in cases}
    for round_number in range(1, options.rounds + 1):
        for case in cases:
            order = ["tool", "manual"] if round_number % 2 else ["manual", "tool"]
            for who in order:
                measure_one(case, who, options, results[case.name][who])
            tool, manual = (results[case.name][who] for who in ("tool", "manual"))
            note = f"  boot check: {tool.notes[-1]}" if tool.notes[-1] else ""
            print(
                f"round {round_number} {case.name:<6} tool {tool.figures[-1]:7.2f} s "
                f"(wall {tool.walls[-1]:.2f})  manual {manual.figures[-1]:7.2f} s "
                f"(wall {manual.walls[-1]:.2f})  {compared(case.name, tool, manual, -1)}"
                f"  ({' then '.join(order)}){note}",
                flush=True,
            )
    return results


def compared(name: str, tool: Timing, manual: Timing, index: int) -> str:
    if name == "boot":
        return f"overhead {tool.figures[index] - manual.figures[index]:+.2f} s"
    return f"ratio {tool.figures[index] / manual.figures[index]:.3f}"


def summary(name: str, timings: dict[str, Timing]) -> tuple[float, str, bool]:
    """The median of the rounds' ratios (checks) or overheads (boot), its goal, met or not."""
    pairs = list(zip(timings["tool"].figures, timings["manual"].figures, strict=True))
    if name == "boot":
        value = statistics.median(tool - manual for tool, manual in pairs)
        return value, f"<= {GOAL_OVERHEAD:g} s", value <= GOAL_OVERHEAD
    value = statistics.median(tool / manual for tool, manual in pairs)
    return value, f"<= {GOAL_RATIO:g}x", value <= GOAL_RATIO


def parts_text(timing: Timing) -> str:
    return " ".join(f"{name} {timing.median(name):.2f}" for name in timing.parts)


def print_table(results: Results) -> None:
    print(f"\n{'case':<7} {'tool s':>8} {'manual s':>9} {'ratio/overhead':>15}  goal")
    for name, timings in results.items():
        tool, manual = (statistics.median(timings[who].figures) for who in ("tool", "manual"))
        value, goal, met = summary(name, timings)
        shown = f"{value:+.2f} s" if name == "boot" else f"{value:.3f}x"
        print(f"{name:<7} {tool:8.2f} {manual:9.2f} {shown:>15}  {goal} {'ok' if met else 'OVER'}")
        print(f"{'':<7} tool phases (median s): {parts_text(timings['tool'])}")
        print(f"{'':<7} manual steps (median s): {parts_text(timings['manual'])}")
    if "boot" in results:
        print_boot_noise(results["boot"])
    print("(checks: wall times, the ratio is the median of the rounds' ratios; boot: the tool's "
          "`boot` phase against qemu's start -> marker by hand, overhead = the median of the "
          "rounds' differences)")  # fmt: skip


def print_boot_noise(timings: dict[str, Timing]) -> None:
    """TCG boot times vary with the CPU other jobs leave: each round's figures."""
    tool, manual = timings["tool"].figures, timings["manual"].figures
    spread = max(manual) - min(manual)
    print(f"boot per round: tool phase {' / '.join(f'{v:.2f}' for v in tool)} s; manual qemu "
          f"{' / '.join(f'{v:.2f}' for v in manual)} s (spread {spread:.2f} s, "
          f"{spread / statistics.median(manual) * 100:.0f}% of the median)")  # fmt: skip
    print(f"tool's boot check observed: {'; '.join(timings['tool'].notes)}")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=2.0, help="GiB of random data in the disk")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/restore-tests-bench-vm"))
    parser.add_argument("--cases", default="checks,boot", help="checks,boot")
    parser.add_argument("--memory", default="768m", help="sandbox memory, both sides")
    parser.add_argument("--cpus", type=float, default=1.0, help="sandbox CPUs, both sides")
    options = parser.parse_args()
    options.cases = options.cases.split(",")
    options.work = options.work.resolve()
    options.work.mkdir(parents=True, exist_ok=True)
    return options


def main() -> int:
    options = arguments()
    subprocess.run(["docker", "rm", "-f", MANUAL_CONTAINER], capture_output=True)
    cases = make_cases(options)
    print(f"size {options.size:g} GiB, {options.rounds} rounds, memory {options.memory}, "
          f"cpus {options.cpus:g}, work {options.work}", flush=True)  # fmt: skip
    results = measure(cases, options)
    print_table(results)
    saved = {
        name: {who: t.__dict__ for who, t in timings.items()} for name, timings in results.items()
    }
    (options.work / f"results-{options.size:g}.json").write_text(json.dumps(saved, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

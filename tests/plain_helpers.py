"""What the end-to-end tests of the plain sources share: a real archive of a small tree with
its manifest, the scenarios that read it from local disk or from S3, and the CLI's verdict."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from tests.conftest import run_cli


def make_archive(
    folder: Path, name: str = "erp-2026-11-30.tar.gz", blob_bytes: int = 0
) -> tuple[Path, str]:
    """A real archive (tar + gzip/zstd by suffix) of data/compta with its manifest; its sha256.
    With blob_bytes, the tree also holds blob.bin of that many random bytes (a large archive)."""
    source = folder / "source"
    compta = source / "data" / "compta"
    compta.mkdir(parents=True)
    lines = []
    for index in range(12):
        content = f"ledger line {index}\n".encode() * (index + 1)
        (compta / f"doc-{index:02}.txt").write_bytes(content)
        lines.append(f"{hashlib.sha256(content).hexdigest()}  doc-{index:02}.txt")
    if blob_bytes:
        content = os.urandom(blob_bytes)
        (compta / "blob.bin").write_bytes(content)
        lines.append(f"{hashlib.sha256(content).hexdigest()}  blob.bin")
    (compta / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    archive = folder / "backups" / name
    archive.parent.mkdir(parents=True, exist_ok=True)
    compress = ["--zstd"] if name.endswith(".zst") else ["-z"]
    subprocess.run(["tar", *compress, "-cf", str(archive), "-C", str(source), "data"], check=True)
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def local_scenario(folder: Path, name: str, path: Path, source_extra: str = "") -> Path:
    scenario = folder / f"{name}.yaml"
    scenario.write_text(
        f"name: {name}\nkind: files\nsource:\n  type: local\n  path: {path}\n{source_extra}"
        "objectives: {rto: 15m, rpo: 26h}\n"
        "verify:\n  manifest: /data/compta/SHA256SUMS\n  expect: {min_files: 12}\n"
    )
    return scenario


def s3_scenario(
    folder: Path, name: str, endpoint: str, source_extra: str = "", bucket: str = "erp-backups"
) -> Path:
    scenario = folder / f"{name}.yaml"
    scenario.write_text(
        f"name: {name}\nkind: files\nsource:\n  type: s3\n  endpoint: {endpoint}\n"
        f"  bucket: {bucket}\n  prefix: nightly/\n  pattern: 'erp-*.tar.zst'\n"
        f"  env_from: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]\n{source_extra}"
        "objectives: {rto: 15m, rpo: 26h}\n"
        "verify:\n  manifest: /data/compta/SHA256SUMS\n  expect: {min_files: 12}\n"
    )
    return scenario


def check(scenario: Path, history_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("check", str(scenario), "--db", history_url, "--json", env=env)  # type: ignore[return-value]


def only(output: str) -> dict[str, object]:
    [result] = json.loads(output)["results"]
    return result

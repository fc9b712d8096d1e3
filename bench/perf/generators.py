"""Deterministic data trees for the cases, and one restic repository per tree and restic version.

Every tree is written from a seeded PRNG: half of its bytes are incompressible, half are text
(unique paragraphs of pseudo-words: they compress but do not dedupe). Its `SHA256SUMS`, at the
tree's root, is written by coreutils `sha256sum`. The tree is backed up from `<home>/data` with
the relative path `bench`, so the manifest is `/bench/SHA256SUMS` in the snapshot.

Trees (`<home>/tree.stamp.json`) and repositories (`<home>/repo-<version>.stamp.json`, backed up
by that restic version) are reused while their parameters match; delete them to start over.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.perf.common import MANIFEST_NAME, MIB, TREE_NAME, BenchError, log, restic_env

GENERATOR_VERSION = 1
SEED = 20240601
WRITE_PIECE = 8 * MIB
DRILL_SCENARIOS = 12
DRILL_TREE_MIB = 4

Plan = list[tuple[str, int]]  # (path relative to the tree, size in bytes)


# -- what each tree looks like (the stamp compares these to decide on reuse) --------------------


def mixed_parameters(size_mib: int, seed: int = SEED) -> dict[str, Any]:
    """A few large files, thousands of small ones (1-64 KiB), 8 MiB files for the rest."""
    scale = size_mib / 1024
    return {
        "kind": "mixed",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "size_mib": size_mib,
        "large_files": 4,
        "large_bytes_each": size_mib * MIB // 8,  # 4 x 128 MiB for 1 GiB: half of the bytes
        "small_files": max(40, round(4000 * scale)),
        "small_bytes_range": [1024, 64 * 1024],
        "medium_bytes_each": 8 * MIB,  # fills the rest up to size_mib
        "incompressible_share": 0.5,
    }


def small_parameters(files: int, folders: int = 100) -> dict[str, Any]:
    """Many files of about 1 KiB (512 to 1536 bytes), spread over folders."""
    return {
        "kind": "small",
        "generator_version": GENERATOR_VERSION,
        "seed": SEED,
        "files": files,
        "folders": folders,
        "bytes_range": [512, 1536],
        "incompressible_share": 0.5,
    }


def large_parameters(files: int, bytes_each: int) -> dict[str, Any]:
    """A few large files, every other one incompressible."""
    return {
        "kind": "large",
        "generator_version": GENERATOR_VERSION,
        "seed": SEED,
        "files": files,
        "bytes_each": bytes_each,
        "incompressible_share": 0.5,
    }


def tiny_parameters() -> dict[str, Any]:
    """One file of 1 KB."""
    return {"kind": "tiny", "generator_version": GENERATOR_VERSION, "seed": SEED, "bytes": 1000}


# -- the files of each kind of tree ---------------------------------------------------------------


def plan_mixed(params: dict[str, Any], rng: random.Random) -> Plan:
    files: Plan = []
    for index in range(params["large_files"]):
        files.append((f"large/volume-{index}.img", params["large_bytes_each"]))
    low, high = params["small_bytes_range"]
    small: Plan = []
    specials = ["Rapport annuel 2023 (final).txt", "données été – copie.txt", "notes #1 & 2.md"]  # noqa: RUF001
    for index in range(params["small_files"]):
        folder = f"small/d{index % 100:02d}"
        if index < len(specials):
            name = specials[index]
        else:
            name = f"doc-{index:05d}.{'txt' if index % 2 else 'bin'}"
        small.append((f"{folder}/{name}", rng.randint(low, high)))
    total = params["size_mib"] * MIB
    rest = total - sum(size for _, size in files) - sum(size for _, size in small)
    medium_each = params["medium_bytes_each"]
    index = 0
    while rest > 0:
        size = min(medium_each, rest)
        files.append((f"medium/part-{index:03d}.dat", size))
        rest -= size
        index += 1
    return files + small


def plan_small(params: dict[str, Any], rng: random.Random) -> Plan:
    low, high = params["bytes_range"]
    folders = params["folders"]
    return [
        (f"d{index % folders:03d}/f{index:06d}.{'txt' if index % 2 else 'bin'}",
         rng.randint(low, high))
        for index in range(params["files"])
    ]  # fmt: skip


def plan_large(params: dict[str, Any], rng: random.Random) -> Plan:
    return [(f"large/volume-{index}.img", params["bytes_each"]) for index in range(params["files"])]


def plan_tiny(params: dict[str, Any], rng: random.Random) -> Plan:
    return [("note.txt", params["bytes"])]


PLANS: dict[str, Callable[[dict[str, Any], random.Random], Plan]] = {
    "mixed": plan_mixed,
    "small": plan_small,
    "large": plan_large,
    "tiny": plan_tiny,
}


# -- writing a tree ---------------------------------------------------------------------------


def word_pool(rng: random.Random) -> list[str]:
    """~8 MiB of paragraphs of pseudo-words: compressible like text, not deduplicable."""
    syllables = [
        "ka", "lo", "mi", "ne", "ra", "tu", "se", "po", "vi", "da", "ri", "mo", "ta", "le",
        "ba", "fe", "gu", "ni", "so", "ze", "cha", "pre", "tri", "ont", "ers", "al", "um",
    ]  # fmt: skip
    vocabulary = [
        "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(3000)
    ]
    vocabulary += [str(number) for number in range(0, 2000, 7)]
    paragraphs = []
    for _ in range(2048):
        words = rng.choices(vocabulary, k=640)
        lines = [" ".join(words[start : start + 12]) for start in range(0, len(words), 12)]
        paragraphs.append("\n".join(lines) + "\n\n")
    return paragraphs


def write_random(path: Path, size: int, rng: random.Random) -> None:
    with open(path, "wb") as stream:
        left = size
        while left:
            piece = min(WRITE_PIECE, left)
            stream.write(rng.randbytes(piece))
            left -= piece


def write_text(path: Path, size: int, rng: random.Random, pool: list[str], label: str) -> None:
    """Paragraphs from the pool, each with a unique header (no two chunks dedupe)."""
    with open(path, "wb") as stream:
        left, counter, parts, pending = size, 0, [], 0
        while left:
            parts.append(f"[{label} {counter}]\n{pool[rng.randrange(len(pool))]}")
            pending += len(parts[-1])
            counter += 1
            if pending >= min(WRITE_PIECE, left):
                data = "".join(parts).encode()[:left]
                stream.write(data)
                left -= len(data)
                parts, pending = [], 0


def write_manifest(tree: Path, names: list[str]) -> None:
    """SHA256SUMS at the tree's root, by coreutils sha256sum, in sorted path order."""
    with open(tree / MANIFEST_NAME, "wb") as manifest:
        subprocess.run(
            ["xargs", "-0", "sha256sum", "--"],
            input=b"\0".join(name.encode() for name in sorted(names)),
            stdout=manifest,
            cwd=tree,
            check=True,
            env={**os.environ, "LC_ALL": "C"},
        )


def generate_tree(tree: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Write the tree that params describe, then its manifest; returns facts for the stamp."""
    rng = random.Random(params["seed"])
    pool = word_pool(rng)
    files = PLANS[params.get("kind", "mixed")](params, rng)
    random_bytes = text_bytes = 0
    started = time.perf_counter()
    for number, (relative, size) in enumerate(files):
        path = tree / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        # Greedy balance: every file is either incompressible or text, half of the bytes each.
        if random_bytes <= text_bytes:
            write_random(path, size, rng)
            random_bytes += size
        else:
            write_text(path, size, rng, pool, f"{number}")
            text_bytes += size
    generation = time.perf_counter() - started
    started = time.perf_counter()
    write_manifest(tree, [relative for relative, _ in files])
    return {
        "files": len(files),
        "bytes": sum(size for _, size in files),
        "incompressible_bytes": random_bytes,
        "compressible_bytes": text_bytes,
        "generation_seconds": round(generation, 2),
        "manifest_seconds_sha256sum": round(time.perf_counter() - started, 2),
    }


# -- trees and repositories, reused while their stamps match ------------------------------------


@dataclass(frozen=True)
class Tree:
    home: Path  # holds data/bench, tree.stamp.json and the repositories
    stamp: dict[str, Any]
    reused: bool

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def path(self) -> Path:
        return self.data / TREE_NAME


@dataclass(frozen=True)
class Repository:
    path: Path
    stamp: dict[str, Any]
    reused: bool


def ensure_tree(home: Path, params: dict[str, Any]) -> Tree:
    """The generated tree in home/data/bench (reused when its stamp matches)."""
    data = home / "data"
    stamp_path = home / "tree.stamp.json"
    if stamp_path.exists() and (data / TREE_NAME / MANIFEST_NAME).exists():
        stamp = json.loads(stamp_path.read_text())
        if stamp.get("parameters") == params:
            return Tree(home, stamp, True)
    log(f"generating a {params['kind']} tree in {data / TREE_NAME} (once; reused by later runs)")
    stamp_path.unlink(missing_ok=True)
    shutil.rmtree(data, ignore_errors=True)
    (data / TREE_NAME).mkdir(parents=True)
    facts = generate_tree(data / TREE_NAME, params)
    stamp = {
        "parameters": params,
        "tree_id": hashlib.sha256(
            (json.dumps(params, sort_keys=True) + str(time.time())).encode()
        ).hexdigest()[:16],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **facts,
    }
    stamp_path.write_text(json.dumps(stamp, indent=2))
    log(
        f"tree: {facts['files']} files, {facts['bytes'] / MIB:.0f} MiB in "
        f"{facts['generation_seconds']} s, manifest (sha256sum) "
        f"{facts['manifest_seconds_sha256sum']} s"
    )
    return Tree(home, stamp, False)


def ensure_repository(tree: Tree, restic: str, version: str) -> Repository:
    """One repository per tree and restic version (backed up by that version), reused when
    stamped."""
    repository = tree.home / f"repo-{version}"
    stamp_path = tree.home / f"repo-{version}.stamp.json"
    if stamp_path.exists() and (repository / "config").exists():
        stamp = json.loads(stamp_path.read_text())
        if stamp.get("tree_id") == tree.stamp["tree_id"] and stamp.get("restic_version") == version:
            return Repository(repository, stamp, True)
    log(f"creating {repository} with restic {version} and backing up the tree (once)")
    stamp_path.unlink(missing_ok=True)
    shutil.rmtree(repository, ignore_errors=True)
    env = restic_env(repository)
    started = time.perf_counter()
    subprocess.run([restic, "--no-cache", "init"], env=env, check=True, capture_output=True)
    init_seconds = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(
        [restic, "--no-cache", "backup", TREE_NAME],
        cwd=tree.data,
        env=env,
        check=True,
        capture_output=True,
    )
    backup_seconds = time.perf_counter() - started
    check_snapshot(restic, env)
    config = subprocess.run(
        [restic, "--no-cache", "cat", "config"], env=env, capture_output=True, text=True, check=True
    ).stdout
    stamp = {
        "tree_id": tree.stamp["tree_id"],
        "restic_version": version,
        "restic_binary": restic,
        "repository_version": json.loads(config).get("version"),
        "init_seconds": round(init_seconds, 2),
        "backup_seconds": round(backup_seconds, 2),
        "repository_bytes": folder_bytes(repository),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    stamp_path.write_text(json.dumps(stamp, indent=2))
    log(
        f"backup took {stamp['backup_seconds']} s (init {stamp['init_seconds']} s); repository "
        f"{stamp['repository_bytes'] / MIB:.0f} MiB"
    )
    return Repository(repository, stamp, False)


def check_snapshot(restic: str, env: dict[str, str]) -> None:
    """The snapshot holds the manifest where the scenarios look for it."""
    listing = subprocess.run(
        [restic, "--no-cache", "ls", "latest"], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    wanted = f"/{TREE_NAME}/{MANIFEST_NAME}"
    if wanted not in listing:
        raise BenchError(f"the snapshot does not hold {wanted}; restic ls latest: {listing[:5]}")


def folder_bytes(folder: Path) -> int:
    return sum(os.lstat(path).st_size for path in regular_files(folder))


def regular_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() and not path.is_symlink()]


def warm_repository(repository: Path) -> None:
    """Read the repository once (untimed) so round 1 does not pay cold reads that others don't."""
    buffer = bytearray(MIB)
    for path in regular_files(repository):
        with open(path, "rb", buffering=0) as stream:
            while stream.readinto(buffer):
                pass


# -- the cases ----------------------------------------------------------------------------------

CASES = ("mixed-1g", "small-100k", "tiny", "drill-12", "large-4g")


def case_parameters(name: str, quick: bool) -> list[dict[str, Any]]:
    """The trees of a case (one each, but drill-12's twelve); --quick makes them small."""
    if name == "mixed-1g":
        return [mixed_parameters(64 if quick else 1024)]
    if name == "small-100k":
        return [small_parameters(10_000 if quick else 100_000)]
    if name == "large-4g":
        return [large_parameters(2, 64 * MIB) if quick else large_parameters(4, 1024 * MIB)]
    if name == "tiny":
        return [tiny_parameters()]
    if name == "drill-12":
        return [
            mixed_parameters(DRILL_TREE_MIB, seed=SEED + number)
            for number in range(1, DRILL_SCENARIOS + 1)
        ]
    raise BenchError(f"unknown case {name!r} (known: {', '.join(CASES)})")


@dataclass
class CaseData:
    name: str
    trees: list[Tree]
    repositories: dict[str, list[Repository]] = field(default_factory=dict)  # by restic version

    @property
    def tree(self) -> Tree:
        return self.trees[0]

    def repository(self, version: str) -> Repository:
        return self.repositories[version][0]

    def describe(self) -> dict[str, Any]:
        """Facts for the report: sizes, generation and backup times, reuse."""
        return {
            "files": sum(tree.stamp["files"] for tree in self.trees),
            "bytes": sum(tree.stamp["bytes"] for tree in self.trees),
            "trees": len(self.trees),
            "generation_seconds": sum(tree.stamp["generation_seconds"] for tree in self.trees),
            "reused": all(tree.reused for tree in self.trees),
            "repositories": {
                version: {
                    "bytes": sum(r.stamp["repository_bytes"] for r in repositories),
                    "backup_seconds": sum(r.stamp["backup_seconds"] for r in repositories),
                    "repository_version": repositories[0].stamp["repository_version"],
                    "reused": all(r.reused for r in repositories),
                }
                for version, repositories in self.repositories.items()
            },
        }


def prepare_case(data_root: Path, name: str, quick: bool, restics: dict[str, str]) -> CaseData:
    """Generate (or reuse) the case's trees and back each up with every restic version."""
    parameters = case_parameters(name, quick)
    if len(parameters) == 1:
        homes = [data_root / name]
    else:
        homes = [data_root / name / f"s{number:02d}" for number in range(1, len(parameters) + 1)]
    case = CaseData(
        name, [ensure_tree(home, params) for home, params in zip(homes, parameters, strict=True)]
    )
    for version, restic in restics.items():
        case.repositories[version] = [
            ensure_repository(tree, restic, version) for tree in case.trees
        ]
    return case

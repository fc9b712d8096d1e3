"""Files and directories: hashes against a manifest, expectations, and checks in the sandbox."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from restore_tests import checksums
from restore_tests.results import Check
from restore_tests.scenario import ScenarioBase, Size, StrictModel
from runners.base import (
    RunContext,
    Runner,
    name_list,
    restore_check,
    sandbox_command_checks,
    sandbox_count_check,
    timed,
)

SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"


def _absolute(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"{path!r}: give the path as it is in the snapshot, starting with /")
    return path


class Expect(StrictModel):
    """Expectations on the restored tree."""

    min_files: int | None = Field(
        None, ge=0, description="At least this many files restored.", examples=[1000]
    )
    min_bytes: Size | None = Field(
        None, description="At least this many bytes restored.", examples=["1g"]
    )
    paths: list[str] = Field(
        default_factory=list,
        description="Paths (as in the snapshot) that must be present.",
        examples=[["/data/compta/ledger.xlsx"]],
    )

    @field_validator("paths")
    @classmethod
    def _absolute_paths(cls, paths: list[str]) -> list[str]:
        return [_absolute(path) for path in paths]


class FilesVerify(StrictModel):
    """Checks on restored files. Every file named in a manifest is hashed, never trusted."""

    manifest: str | None = Field(
        None,
        description="A sha256sum-format file inside the snapshot; its entries are "
        "relative to its own folder, as `sha256sum -c` reads them.",
        examples=["/data/compta/SHA256SUMS"],
    )
    checksums: dict[str, str] = Field(
        default_factory=dict,
        description="A few canary files: snapshot path -> sha256.",
        examples=[
            {
                "/data/compta/ledger.xlsx": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c"
                "d15d6c15b0f00a08"
            }
        ],
    )
    restic_verify: bool = Field(
        False,
        description="Also run restic restore --verify (restic "
        "re-reads every restored file against the repository).",
    )
    expect: Expect = Field(default_factory=lambda: Expect())

    @field_validator("manifest")
    @classmethod
    def _absolute_manifest(cls, manifest: str | None) -> str | None:
        return manifest if manifest is None else _absolute(manifest)

    @field_validator("checksums")
    @classmethod
    def _valid_checksums(cls, values: dict[str, str]) -> dict[str, str]:
        for path, digest in values.items():
            _absolute(path)
            if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
                raise ValueError(f"{path}: {digest!r} is not a sha256 (64 hex digits)")
        return {path: digest.lower() for path, digest in values.items()}


class FilesRunner(Runner):
    """Files and directories restored from a backup."""

    kind: ClassVar[str] = "files"
    verify_model = FilesVerify

    def wants_restic_verify(self, scenario: ScenarioBase) -> bool:
        return bool(scenario.verify.restic_verify)  # type: ignore[attr-defined]

    def verify(self, context: RunContext) -> list[Check]:
        verify: FilesVerify = context.verify
        checks = [restore_check(context.restore_outcome, context.snapshot)]
        if verify.restic_verify and not context.restore_outcome.damaged:
            checks.append(
                Check.passed(
                    "restic --verify",
                    proves_data=True,
                    observed="restored content matches the repository",
                )
            )
        context.progress("walking the restored tree")
        tree = checksums.tree_stats(context.restore_root)
        context.files, context.bytes = tree.files, tree.bytes
        if verify.manifest:
            context.progress(f"hashing the files of {verify.manifest}")
            checks.append(timed(self._manifest_check, context, verify.manifest))
        if verify.checksums:
            checks.append(timed(self._checksums_check, context, verify.checksums))
        checks.extend(self._expect_checks(context, verify.expect, tree))
        checks.append(timed(sandbox_count_check, context, tree.files))
        checks.extend(
            sandbox_command_checks(
                context, context.scenario.sandbox.commands, context.scenario.sandbox.command_timeout
            )
        )
        return checks

    def _manifest_check(self, context: RunContext, manifest: str) -> Check:
        name = f"manifest {manifest}"
        location = context.host_path(manifest)
        label = os.path.basename(manifest)
        if not location.is_file():
            top = sorted("/" + entry.name for entry in context.restore_root.iterdir())
            return Check.failed(
                name,
                f"manifest {manifest} is not in the restored data "
                f"(snapshot {context.snapshot.short_id} holds "
                f"{name_list(top) or 'nothing'})",
            )
        parsed = checksums.parse_manifest(
            location.read_text(encoding="utf-8", errors="surrogateescape")
        )
        if parsed.malformed_lines:
            return Check.failed(
                name,
                f"{label} has {len(parsed.malformed_lines)} malformed "
                f"lines (first: line {parsed.malformed_lines[0]})",
            )
        if not parsed.entries:
            return Check.failed(name, f"{label} has no entries: it proves nothing")
        folder = os.path.relpath(location.parent, context.restore_root)
        expected = [
            (os.path.normpath(os.path.join(folder, entry.path)), entry.sha256)
            for entry in parsed.entries
        ]
        result = checksums.verify(context.restore_root, expected)
        extra = _extra_files(location, {path for path, _ in expected}, context.restore_root)
        return _hash_check(name, label, result, context, extra)

    def _checksums_check(self, context: RunContext, values: dict[str, str]) -> Check:
        expected = [(path.lstrip("/"), digest) for path, digest in values.items()]
        result = checksums.verify(context.restore_root, expected)
        return _hash_check("checksums", "the checksums", result, context, [])

    def _expect_checks(
        self, context: RunContext, expect: Expect, tree: checksums.TreeStats
    ) -> list[Check]:
        checks = []
        if expect.paths:
            missing = [
                path for path in expect.paths if not os.path.lexists(context.host_path(path))
            ]
            checks.append(
                Check.failed(
                    "expected paths",
                    f"{len(missing)} expected path{'s' if len(missing) > 1 else ''}"
                    f" missing: {name_list(missing)}",
                    expected=str(len(expect.paths)),
                    observed=str(len(expect.paths) - len(missing)),
                )
                if missing
                else Check.passed(
                    "expected paths",
                    expected=str(len(expect.paths)),
                    observed=str(len(expect.paths)),
                )
            )
        for label, minimum, observed in (
            ("files", expect.min_files, tree.files),
            ("bytes", expect.min_bytes, tree.bytes),
        ):
            if minimum is None:
                continue
            if observed >= minimum:
                check = Check.passed(f"min {label}")
            else:
                check = Check.failed(
                    f"min {label}", f"{observed:,} {label} restored, expected at least {minimum:,}"
                )
            check.expected, check.observed = f">= {minimum}", str(observed)
            check.proves_data = minimum > 0
            checks.append(check)
        return checks


def _hash_check(
    name: str, label: str, result: checksums.Verification, context: RunContext, extra: list[str]
) -> Check:
    fields = {
        "expected": f"{result.checked} files match",
        "observed": f"{result.matched} match",
        "proves_data": True,
    }
    detail = (
        f"{len(extra)} files in the folder are not in the manifest: {name_list(extra)}"
        if extra
        else ""
    )
    context.hashed_files = (context.hashed_files or 0) + result.matched
    context.hashed_bytes = (context.hashed_bytes or 0) + result.bytes_hashed
    if result.ok:
        return Check.passed(name, detail=detail, **fields)
    parts = []
    if result.differing:
        parts.append(
            f"{_files(len(result.differing))} differ{'s' if len(result.differing) == 1 else ''} "
            f"from {label}: {name_list(result.differing)}"
        )
    if result.missing:
        parts.append(f"{len(result.missing)} missing: {name_list(result.missing)}")
    if result.unreadable:
        parts.append(f"{len(result.unreadable)} unreadable: {name_list(result.unreadable)}")
    reason = "; ".join(parts) + f" (snapshot {context.snapshot.short_id})"
    return Check.failed(name, reason, detail=detail, **fields)


def _files(count: int) -> str:
    return f"{count:,} file{'s' if count != 1 else ''}"


def _extra_files(manifest: Path, listed: set[str], root: Path) -> list[str]:
    folder = os.path.relpath(manifest.parent, root)
    own = os.path.normpath(os.path.relpath(manifest, root))
    prefix = "" if folder == "." else folder + "/"
    return sorted(
        prefix + path
        for path, _ in checksums.walk_files(manifest.parent)
        if prefix + path not in listed and prefix + path != own
    )

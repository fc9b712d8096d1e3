"""Files and directories: hashes against a manifest, expectations, and checks in the sandbox."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, field_validator

from restore_tests import checksums
from restore_tests.model import Size, SnapshotPath, StrictModel, snapshot_path
from restore_tests.restored import DIRECTORY, MISSING, REGULAR, read_bounded
from restore_tests.results import Check, name_list
from restore_tests.timing import format_size
from runners.base import (
    RunContext,
    Runner,
    in_background,
    sandbox_command_checks,
    sandbox_count_check,
    timed,
)

if TYPE_CHECKING:
    from restore_tests.scenario import ScenarioBase

SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"
MANIFEST_LIMIT_BYTES = 64 * 1024**2  # about 600,000 sha256sum lines


class Expect(StrictModel):
    """Expectations on the restored tree."""

    min_files: int | None = Field(
        None, ge=0, description="At least this many files restored.", examples=[1000]
    )
    min_bytes: Size | None = Field(
        None, description="At least this many bytes restored.", examples=["1g"]
    )
    paths: list[SnapshotPath] = Field(
        default_factory=list,
        description="Paths (as in the snapshot, starting with /, no `..`) that must be present "
        "as a file or folder; a link counts only where it leads inside the restored data.",
        examples=[["/data/compta/ledger.xlsx"]],
    )


class FilesVerify(StrictModel):
    """Checks on restored files. Every file named in a manifest is hashed, never trusted."""

    manifest: SnapshotPath | None = Field(
        None,
        description="A sha256sum-format file inside the snapshot (starting with /, no `..`); "
        "only regular files of the restored data are hashed; its entries are "
        "relative to its own folder, as `sha256sum -c` reads them.",
        examples=["/data/compta/SHA256SUMS"],
    )
    checksums: dict[str, str] = Field(
        default_factory=dict,
        description="A few canary files: snapshot path (starting with /, no `..`) -> sha256.",
        examples=[
            {
                "/data/compta/ledger.xlsx": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c"
                "d15d6c15b0f00a08"
            }
        ],
    )
    expect: Expect = Field(default_factory=lambda: Expect())

    @field_validator("checksums")
    @classmethod
    def _valid_checksums(cls, values: dict[str, str]) -> dict[str, str]:
        checked: dict[str, str] = {}
        written: dict[str, str] = {}
        for path, digest in values.items():
            normal = snapshot_path(path)
            if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
                raise ValueError(f"{path}: {digest!r} is not a sha256 (64 hex digits)")
            if normal in checked:  # two digests for one file: neither may be dropped silently
                raise ValueError(f"{written[normal]!r} and {path!r} name the same file")
            checked[normal], written[normal] = digest.lower(), path
        return checked


class FilesRunner(Runner):
    """Files and directories restored from a backup."""

    kind: ClassVar[str] = "files"
    verify_model = FilesVerify

    def hashes_below(self, scenario: ScenarioBase) -> str | None:
        manifest = scenario.verify.manifest  # type: ignore[attr-defined]
        return None if manifest is None else posixpath.dirname(manifest)

    def verify(self, context: RunContext) -> list[Check]:
        verify: FilesVerify = context.verify
        tree = context.tree
        context.files, context.bytes = tree.file_count, tree.bytes
        checks: list[Check] = []
        # find walks the tree inside the sandbox while the host hashes it.
        counted = in_background(sandbox_count_check, context, tree.file_count)
        if verify.manifest:
            context.progress(f"hashing the files of {verify.manifest}")
            checks.append(timed(self._manifest_check, context, verify.manifest))
        if verify.checksums:
            checks.append(timed(self._checksums_check, context, verify.checksums))
        checks.extend(self._expect_checks(context, verify.expect))
        checks.append(counted())
        checks.extend(
            sandbox_command_checks(
                context, context.scenario.sandbox.commands, context.scenario.sandbox.command_timeout
            )
        )
        return checks

    def _manifest_check(self, context: RunContext, manifest: str) -> Check:
        name = f"manifest {manifest}"
        tree = context.tree
        found = tree.lookup(manifest)
        label = posixpath.basename(manifest)
        if found.kind == MISSING:
            top = sorted("/" + path for path in (*tree.directories, *tree.files) if "/" not in path)
            return Check.failed(
                name,
                f"manifest {manifest} is not in the restored data "
                f"({context.restore_point.shown} holds "
                f"{name_list(top) or 'nothing'})",
            )
        if found.kind != REGULAR:
            return Check.failed(name, f"manifest {manifest} is not a regular file ({found.kind})")
        try:
            text = read_bounded(tree.root / found.path, MANIFEST_LIMIT_BYTES)
        except ValueError:
            return Check.failed(
                name, f"manifest {manifest} is larger than {format_size(MANIFEST_LIMIT_BYTES)}"
            )
        except OSError as error:
            return Check.error(
                name, f"could not read the manifest {manifest} on the host: {error.strerror}"
            )
        parsed = checksums.parse_manifest(text)
        del text  # 600,000 lines hold tens of MiB
        if parsed.malformed_lines:
            return Check.failed(
                name,
                f"{label} has {len(parsed.malformed_lines)} malformed "
                f"lines (first: line {parsed.malformed_lines[0]})",
            )
        if not parsed.entries:
            return Check.failed(name, f"{label} has no entries: it proves nothing")
        folder = posixpath.dirname(found.path)
        expected = ((_entry_path(folder, entry.path), entry.sha256) for entry in parsed.entries)
        if context.early is not None:
            context.early.finish()
        result = checksums.verify(tree, expected, early=context.early)
        if context.early is not None:
            context.early.release()  # its digests are spent: free them before the next step
        listed = {_entry_path(folder, entry.path) for entry in parsed.entries} | {found.path}
        del parsed
        extra = sorted(path for path in tree.files_below(folder) if path not in listed)
        return _hash_check(name, label, result, context, extra)

    def _checksums_check(self, context: RunContext, values: dict[str, str]) -> Check:
        expected = [(path.lstrip("/"), digest) for path, digest in values.items()]
        result = checksums.verify(context.tree, expected)
        return _hash_check("checksums", "the checksums", result, context, [])

    def _expect_checks(self, context: RunContext, expect: Expect) -> list[Check]:
        checks = []
        tree = context.tree
        if expect.paths:
            missing = []
            for path in expect.paths:
                kind = tree.lookup(path).kind
                if kind not in (REGULAR, DIRECTORY):
                    missing.append(path if kind == MISSING else f"{path} ({kind})")
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
            ("files", expect.min_files, tree.file_count),
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


def _entry_path(folder: str, entry: str) -> str:
    """A manifest entry as a path of the tree; `..` is left to the tree's resolver, which knows
    whether the folder before it is a link (lexical normalisation would not)."""
    joined = posixpath.join(folder, entry)
    return joined if ".." in entry.split("/") else posixpath.normpath(joined).lstrip("/")


def _hash_check(
    name: str, label: str, result: checksums.Verification, context: RunContext, extra: list[str]
) -> Check:
    fields = {
        "expected": f"{result.checked} files match",
        "observed": f"{result.matched:,} match ({result.bytes_hashed:,} bytes hashed)",
        "proves_data": result.bytes_hashed > 0,
    }
    notes = []
    if extra:
        notes.append(
            f"{len(extra)} files in the folder are not in the manifest: {name_list(extra)}"
        )
    if result.matched_early:
        notes.append(f"{_files(result.matched_early)} hashed while they were fetched")
    detail = "; ".join(notes)
    if result.host_errors:
        return Check.error(
            name,
            f"could not read {_files(len(result.host_errors))} of the restored data on this "
            f"host: {name_list(result.host_errors)}",
            **fields,
        )
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
        parts.append(
            f"{len(result.unreadable)} not readable as files: {name_list(result.unreadable)}"
        )
    reason = "; ".join(parts) + f" ({context.restore_point.shown})"
    return Check.failed(name, reason, detail=detail, **fields)


def _files(count: int) -> str:
    return f"{count:,} file{'s' if count != 1 else ''}"

"""VM disk images: the image's own consistency (qemu-img), its partition table, files inside the
guest's filesystems read without mounting, and an isolated boot check (qemu under TCG, no
network, the serial console captured).

Everything runs in the sandbox, as the image file's owner (who alone may read it), in its
folder: the image is a read-only mount; a raw copy of a qcow2/vmdk/vdi/vhdx (sparse: only what
the guest wrote) and the boot's copy-on-write overlay go to the sandbox's scratch space on disk.
The format is always given to qemu-img (`-f`): with autodetection, a qcow2 whose header is broken
reads as a valid raw image.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from restore_tests.model import Duration, Size, SnapshotPath, StrictModel, snapshot_path
from restore_tests.results import Check, name_list, one_line
from restore_tests.sandbox_output import ExecResult
from restore_tests.sources.base import RestorePoint
from restore_tests.timing import format_duration, format_size
from runners.base import Located, RunContext, Runner, SandboxNeeds, locate
from runners.disk_images import (
    IMAGE_FORMATS,
    Partition,
    declared_format_problem,
    filesystem_reader,
    parse_partitions,
)

DEFAULT_IMAGE = "restore-tests/vm-tools"
RAW_COPY = "/scratch/disk.raw"
IMAGE_LINK = "/scratch/image"  # a link to the restored image, by a name every tool reads plainly
SCRATCH_MINIMUM = 1024**3
QEMU_IMG_SECONDS = 3600.0
SHA256_HEX = 64


class Disk(StrictModel):
    """The disk image: its format (never guessed) and what it should measure."""

    format: Literal["qcow2", "raw", "vmdk", "vdi", "vhdx"] = Field(
        description="The image's format, given to qemu-img as is: never autodetected (a "
        "qcow2 with a broken header would read as a valid raw image).",
        examples=["qcow2"],
    )
    virtual_size: Size | None = Field(
        None, description="The guest's disk size the image must declare.", examples=["40G"]
    )
    path: SnapshotPath | None = Field(
        None,
        description="The image in the restored data, starting with /; by default the only "
        "file restored.",
        examples=["/backups/erp01.qcow2"],
    )
    scratch: Size | None = Field(
        None,
        description="Disk space for a raw copy of a non-raw image and the boot's overlay "
        "(default: twice the backup's size, at least 1 GiB).",
        examples=["20g"],
    )


class GuestFile(StrictModel):
    """A file inside the guest's filesystem."""

    path: str = Field(description="The path inside the guest, starting with /.")
    sha256: str | None = Field(None, description="Its SHA-256, when it must match.")
    partition: int | None = Field(
        None, ge=1, description="Its partition (1-based); by default the first that holds it."
    )

    @field_validator("path")
    @classmethod
    def _guest_path(cls, value: str) -> str:
        return snapshot_path(value)

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and (
            len(value) != SHA256_HEX or any(c not in "0123456789abcdefABCDEF" for c in value)
        ):
            raise ValueError(f"{value!r} is not a sha256 (64 hex digits)")
        return None if value is None else value.lower()


class Partitions(StrictModel):
    """The partition table must be readable and hold at least this many partitions."""

    min: int = Field(1, ge=1, description="At least this many partitions.")


class Boot(StrictModel):
    """Start the guest in an isolated emulator (TCG, no network) and watch its serial console."""

    expect_console: str = Field(
        min_length=1,
        description="Text that must appear on the serial console (ttyS0).",
        examples=["login:"],
    )
    timeout: Duration = Field(600.0, description="How long to wait for it.", examples=["10m"])
    memory: Size = Field(
        256 * 1024**2, description="The guest's memory (the sandbox needs more).", examples=["1g"]
    )


class VmVerify(StrictModel):
    """Checks on a VM disk image."""

    image_check: bool = Field(
        True, description="qemu-img check: corruptions fail, leaks are reported."
    )
    partitions: Partitions | None = Field(None, description="The partition table.")
    files: list[SnapshotPath | GuestFile] = Field(
        default_factory=list,
        description="Files inside the guest: a path, or {path, sha256, partition}.",
        examples=[["/etc/hostname", {"path": "/var/lib/erp/config.ini", "sha256": "9f86..."}]],
    )
    boot: Boot | None = Field(None, description="An isolated boot check.")

    @property
    def guest_files(self) -> list[GuestFile]:
        return [GuestFile(path=item) if isinstance(item, str) else item for item in self.files]


def _shell(script: str) -> list[str]:
    return ["bash", "-c", "set -o pipefail; " + script]


class VmImageRunner(Runner):
    """A VM disk image restored from a backup: consistency, partitions, guest files, boot."""

    kind: ClassVar[str] = "vm-image"
    sandbox_sized_by_point: ClassVar[bool] = True
    verify_model = VmVerify
    default_image = DEFAULT_IMAGE
    sections: ClassVar[dict[str, tuple[Any, Any]]] = {
        "disk": (Disk, Field(description="The disk image and its format."))
    }

    def __init__(self) -> None:
        self.image: Located | None = None
        self.partitions: list[Partition] | None = None
        self.raw_path: str | None = None
        self.virtual_size = 0

    def sandbox_needs(self, scenario: Any, point: RestorePoint | None) -> SandboxNeeds:
        disk: Disk = scenario.disk
        scratch = disk.scratch or max(SCRATCH_MINIMUM, 2 * ((point and point.size_bytes) or 0))
        return SandboxNeeds(
            scratch_bytes=scratch,
            scratch_on_disk=True,
            environment={"HOME": "/scratch", "TMPDIR": "/scratch", "MTOOLS_SKIP_CHECK": "1"},
        )

    # --- load: what the image is

    def load(self, context: RunContext) -> list[Check]:
        disk: Disk = context.scenario.disk  # type: ignore[attr-defined]
        found = locate(context, disk.path, "image", "disk.path")
        if isinstance(found, Check):
            return [found]
        context.files, context.bytes = context.tree.file_count, context.tree.bytes
        problem = declared_format_problem(found.host_path, disk.format)
        if problem:
            return [Check.failed("image", f"{found.path}: {problem}")]
        # Every tool reads the image through a link of a plain name: qemu reads ':' in a file
        # name as a protocol and ',' as an option separator, debugfs '?' as its offset mark.
        info = self._run(
            context,
            found,
            f'ln -sfn "$PWD/$1" {IMAGE_LINK} && '
            f"qemu-img info -f {disk.format} --output=json {IMAGE_LINK}",
        )
        if info.exit_code != 0:
            return [
                Check.failed(
                    "image",
                    one_line(
                        f"{found.path} cannot be opened as a {disk.format} image: "
                        f"{info.last_line() or info.reason('qemu-img')}"
                    ),
                    detail=info.detail(),
                )
            ]
        self.image = found
        return [self._info_check(found, disk, info.stdout)]

    def _info_check(self, found: Located, disk: Disk, text: str) -> Check:
        try:
            info = json.loads(text)
            virtual = int(info["virtual-size"])
        except (ValueError, KeyError, TypeError):
            return Check.error("image", "qemu-img info printed no readable JSON")
        corrupt = info.get("format-specific", {}).get("data", {}).get("corrupt")
        self.virtual_size = virtual
        backing = info.get("backing-filename")
        if backing:  # not part of the backup: what the guest sees would come from elsewhere
            return Check.failed(
                "image",
                one_line(f"{found.path} depends on a backing file {backing!r}, not in the backup"),
            )
        observed = (
            f"{disk.format}, virtual size {format_size(virtual)}, "
            f"{format_size(info.get('actual-size'))} allocated"
        )
        if corrupt:  # qemu-img info exits 0 on a corrupt image: its flag says so
            return Check.failed(
                "image", f"{found.path}: qemu-img marks the image corrupt", observed=observed
            )
        if disk.virtual_size is not None and virtual != disk.virtual_size:
            return Check.failed(
                "image",
                f"{found.path} has a virtual size of {format_size(virtual)}, expected "
                f"{format_size(disk.virtual_size)}",
                expected=str(disk.virtual_size),
                observed=str(virtual),
            )
        return Check.passed("image", observed=observed)

    # --- verify: consistency, partitions, files

    def verify(self, context: RunContext) -> list[Check]:
        if self.image is None:
            return []  # the image could not be opened: that is the verdict
        verify: VmVerify = context.verify
        disk: Disk = context.scenario.disk  # type: ignore[attr-defined]
        checks = []
        if verify.image_check:
            context.progress("qemu-img check")
            checks.append(self._image_check(context, self.image, disk.format))
        if verify.partitions is not None or verify.files:
            table = self._partition_table(context, self.image, disk.format)
            if isinstance(table, Check):
                return [*checks, table]
            if verify.partitions is not None:
                checks.append(_partitions_check(table, verify.partitions.min, self.virtual_size))
            for guest_file in verify.guest_files:
                context.progress(f"reading {guest_file.path} inside the guest")
                checks.append(self._file_check(context, guest_file))
        return checks

    def _image_check(self, context: RunContext, found: Located, fmt: str) -> Check:
        name = f"qemu-img check ({fmt})"
        result = self._run(context, found, f"qemu-img check -f {fmt} --output=json {IMAGE_LINK}")
        report = _json(result.stdout)
        corruptions = int(report.get("corruptions", 0) or 0)
        leaks = int(report.get("leaks", 0) or 0)
        if result.exit_code == 63:
            return Check.passed(name, observed=f"a {fmt} image has no metadata qemu-img can check")
        if result.exit_code == 0:
            return Check.passed(name, observed="no corruption, no leak", proves_data=True)
        if result.exit_code == 3:
            return Check.passed(
                name,
                observed=f"no corruption; {leaks:,} leaked clusters (space lost, no data)",
                proves_data=True,
            )
        if result.exit_code == 2:
            return Check.failed(
                name,
                f"qemu-img check found {corruptions:,} corruptions in {found.path}",
                observed=f"{corruptions} corruptions, {leaks} leaks",
                detail=result.detail(),
            )
        return Check.failed(
            name,
            one_line(f"qemu-img check cannot read {found.path}: {result.last_line()}"),
            detail=result.detail(),
        )

    def _partition_table(
        self, context: RunContext, found: Located, fmt: str
    ) -> list[Partition] | Check:
        """The partitions, read from the image or a sparse raw copy of it in scratch."""
        raw = IMAGE_LINK  # the image itself, or its raw copy
        if fmt != "raw":
            context.progress("making a sparse raw copy for the partitions")
            copy = self._run(
                context, found, f"qemu-img convert -f {fmt} -O raw {IMAGE_LINK} {RAW_COPY}"
            )
            if copy.exit_code != 0:
                return Check.failed(
                    "partitions",
                    one_line(f"qemu-img convert could not read {found.path}: {copy.last_line()}"),
                )
            raw = RAW_COPY
        table = self._run(context, found, f'sfdisk --json "{raw}"')
        self.raw_path = raw
        if table.exit_code != 0:
            return Check.failed(
                "partitions",
                one_line(
                    f"{found.path} has no readable partition table (sfdisk: "
                    f"{table.last_line().rsplit(': ', 1)[-1]})"
                ),
            )
        partitions = parse_partitions(table.stdout)
        if partitions is None:
            return Check.error("partitions", "sfdisk printed no readable JSON")
        self.partitions = partitions
        return partitions

    def _file_check(self, context: RunContext, guest_file: GuestFile) -> Check:
        assert self.image is not None and self.partitions is not None and self.raw_path
        name = f"guest file {guest_file.path}"
        candidates = [
            part
            for part in self.partitions
            if guest_file.partition is None or part.number == guest_file.partition
        ]
        if not candidates:
            return Check.failed(name, f"there is no partition {guest_file.partition}")
        looked: list[str] = []
        unreadable: list[str] = []  # a filesystem named, that no reader here knows
        blank: list[str] = []  # no filesystem at all: damaged or never made
        for part in candidates:
            if part.end > self.virtual_size:
                blank.append(f"partition {part.number} (past the image's end)")
                continue
            filesystem = self._filesystem(context, part)
            reader = filesystem_reader(filesystem)
            if reader is None:
                if filesystem:
                    unreadable.append(f"partition {part.number}: {filesystem}")
                else:
                    blank.append(f"partition {part.number}")
                continue
            looked.append(f"partition {part.number} ({filesystem})")
            script = reader(self.raw_path, part, shlex.quote(guest_file.path))
            result = self._run(context, self.image, script + " && sha256sum /scratch/guest-file")
            if result.exit_code == 0:
                return _digest_check(name, guest_file, part, filesystem, result.stdout)
        return _missing(name, guest_file, looked, unreadable, blank)

    def _filesystem(self, context: RunContext, part: Partition) -> str:
        assert self.image is not None and self.raw_path
        probe = self._run(
            context,
            self.image,
            f'blkid -p -o value -s TYPE --offset {part.offset} "{self.raw_path}"',
        )
        return probe.stdout.strip() if probe.exit_code == 0 else ""

    # --- boot

    def boots(self, scenario: Any) -> bool:
        return scenario.verify.boot is not None

    def boot(self, context: RunContext) -> list[Check]:
        if self.image is None:
            return []
        boot: Boot = context.verify.boot
        disk: Disk = context.scenario.disk  # type: ignore[attr-defined]
        context.progress(f"booting the guest (TCG), waiting for {boot.expect_console!r}")
        script = _boot_script(disk.format, boot)
        result = self._run(context, self.image, script, boot.timeout + 60.0)
        console = self._run(context, self.image, "tail -c 2000 /scratch/console.log").stdout
        return [_boot_check(result, boot, console)]

    def _run(
        self, context: RunContext, found: Located, script: str, timeout: float = QEMU_IMG_SECONDS
    ) -> ExecResult:
        """A command over the image, as its owner, in its folder ($1 is its name)."""
        return context.sandbox.exec(
            [*_shell(script), "image", found.name],
            timeout,
            user=found.owner,
            workdir=found.folder_inside,
        )


# Exit codes of the boot script.
BOOTED, PANICKED, EXITED, TIMED_OUT = 0, 3, 4, 5


def _boot_script(fmt: str, boot: Boot) -> str:
    """qemu in the background, the console polled for the expected text, a panic, qemu's end,
    or the time limit. The image is never written: snapshot=on keeps writes in /scratch."""
    memory = max(64, boot.memory // 1024**2)
    expect = shlex.quote(boot.expect_console)
    return (
        f"qemu-system-x86_64 -machine pc,accel=tcg -m {memory} -smp 1 -display none -nic none "
        "-no-reboot -serial file:/scratch/console.log -monitor none "
        f"-drive file={IMAGE_LINK},format={fmt},if=ide,snapshot=on 2>/scratch/qemu.err & q=$!; "
        "SECONDS=0; while :; do "
        f"if grep -qF -- {expect} /scratch/console.log 2>/dev/null; then "
        f"kill $q; exit {BOOTED}; fi; "
        "if grep -q 'Kernel panic' /scratch/console.log 2>/dev/null; then "
        f"kill $q; exit {PANICKED}; fi; "
        f"kill -0 $q 2>/dev/null || {{ cat /scratch/qemu.err >&2; exit {EXITED}; }}; "
        f"[ $SECONDS -ge {int(boot.timeout)} ] && {{ kill $q; exit {TIMED_OUT}; }}; "
        "sleep 0.1; done"
    )


def _boot_check(result: ExecResult, boot: Boot, console: str) -> Check:
    name = "boot"
    lines = [line.strip() for line in console.splitlines() if line.strip()]
    tail = " | ".join(lines[-3:]) or "the console stayed empty (no bootloader?)"
    fields = {"expected": boot.expect_console, "detail": console[-2000:]}
    if result.exit_code == BOOTED:
        return Check.passed(
            name, observed=f"{boot.expect_console!r} after {result.seconds:.1f}s", proves_data=True,
            **{"detail": fields["detail"]},
        )  # fmt: skip
    if result.exit_code == PANICKED:
        panic = next((line for line in lines if "Kernel panic" in line), tail)
        return Check.failed(name, one_line(f"the guest's kernel panicked: {panic}"), **fields)
    if result.exit_code == EXITED:
        memory = (
            " (out of memory: give the sandbox more than boot.memory)" if result.oom_killed else ""
        )
        return Check.failed(
            name,
            one_line(f"qemu stopped before {boot.expect_console!r}{memory}: {result.last_line()}"),
            **fields,
        )
    if result.exit_code == TIMED_OUT:
        return Check.failed(
            name,
            one_line(
                f"no {boot.expect_console!r} on the console within "
                f"{format_duration(boot.timeout)}; it ends: {tail}"
            ),
            **fields,
        )
    return Check.error(name, one_line(f"the boot check could not run: {result.reason('qemu')}"))


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _partitions_check(partitions: list[Partition], minimum: int, virtual_size: int) -> Check:
    observed = f"{len(partitions)} ({', '.join(part.describe() for part in partitions)})"
    fields = {"expected": f">= {minimum}", "observed": observed}
    if len(partitions) < minimum:
        return Check.failed(
            "partitions", f"{len(partitions)} partitions, expected at least {minimum}", **fields
        )
    cut = [part for part in partitions if part.end > virtual_size]
    if cut:  # sfdisk lists them without a word: the table was written before the disk was cut
        return Check.failed(
            "partitions",
            f"partition {cut[0].number} ends at {format_size(cut[0].end)}, past the image's end "
            f"at {format_size(virtual_size)}: the image is truncated",
            **fields,
        )
    return Check.passed("partitions", **fields)


def _digest_check(
    name: str, guest_file: GuestFile, part: Partition, filesystem: str, output: str
) -> Check:
    digest = output.split()[0] if output.split() else ""
    where = f"partition {part.number} ({filesystem})"
    if guest_file.sha256 is None:
        return Check.passed(name, observed=f"present in {where}, sha256 {digest}")
    if digest == guest_file.sha256:
        return Check.passed(name, expected=guest_file.sha256, observed=digest, proves_data=True)
    return Check.failed(
        name,
        f"guest file {guest_file.path} in {where} differs: expected "
        f"{guest_file.sha256[:8]}..., got {digest[:8]}...",
        expected=guest_file.sha256,
        observed=digest,
    )


def _missing(
    name: str, guest_file: GuestFile, looked: list[str], unreadable: list[str], blank: list[str]
) -> Check:
    """Not found where it was looked for (a FAIL); nowhere to look because the filesystems are
    of kinds no reader here knows (an ERROR naming them: LVM, LUKS, BitLocker); or because the
    partitions hold no filesystem at all (a FAIL: damaged, or never made)."""
    notes = [f"{name_list(unreadable)} not read" if unreadable else ""]
    notes.append(f"no filesystem in {name_list(blank)}" if blank else "")
    why = "; ".join(note for note in notes if note)
    if looked:
        return Check.failed(
            name,
            f"guest file {guest_file.path} is not in {name_list(looked)}"
            + (f" ({why})" if why else ""),
        )
    if unreadable:
        return Check.error(
            name,
            f"guest file {guest_file.path} cannot be looked for: {name_list(unreadable)} "
            "(no reader for these filesystems here)",
        )
    return Check.failed(
        name, f"guest file {guest_file.path} cannot be found: {why} (damaged, or never made)"
    )


__all__ = ["IMAGE_FORMATS", "VmImageRunner"]

"""VM disk images end to end: a real bootable disk (MBR, a FAT boot partition with SYSLINUX,
Debian's kernel and a busybox initramfs, an ext4 partition with the guest's files), built without
privileges, as raw and qcow2, from local, restic and S3 sources, checked, read and booted under
qemu (TCG) inside real sandboxes through `restore-tests check`; and damaged copies of it, each
with its exact verdict, history row and nothing left behind."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSWORD, PASSWORD_VARIABLE, assert_no_leftovers, history_rows
from tests.database_helpers import backed_up_with_restic, check, checks_by_name, copy, local
from tests.vm_helpers import (
    GUEST_FILES,
    MARKER,
    WIN_INI,
    broken_qcow2_magic,
    converted,
    make_boot_disk,
    make_gpt_disk,
    make_ntfs_disk,
    to_qcow2,
    truncated,
    wiped_partition_table,
    zeroed_refcount_block,
)

pytestmark = pytest.mark.sandbox

HOSTNAME_SHA256 = hashlib.sha256(GUEST_FILES["/etc/hostname"].encode()).hexdigest()
CONFIG_SHA256 = hashlib.sha256(GUEST_FILES["/var/lib/erp/config.ini"].encode()).hexdigest()
FILES_VERIFY = (
    "  image_check: true\n"
    "  partitions: {min: 2}\n"
    "  files:\n"
    "    - /syslinux.cfg\n"
    f"    - {{path: /etc/hostname, sha256: '{HOSTNAME_SHA256}'}}\n"
    f"    - {{path: /var/lib/erp/config.ini, sha256: '{CONFIG_SHA256}', partition: 2}}\n"
)


@pytest.fixture(scope="session")
def disks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bootable disk as raw and qcow2, and one whose initramfs has no working init."""
    folder = tmp_path_factory.mktemp("vm-disks")
    raw = make_boot_disk(folder / "raw")
    return {
        "raw": raw,
        "qcow2": to_qcow2(raw, folder / "qcow2" / "erp01.qcow2"),
        "noinit": make_boot_disk(folder / "noinit", init=False),
    }


def vm_scenario(folder: Path, source: str, disk: str, verify: str = FILES_VERIFY) -> Path:
    path = folder / "erp-vm.yaml"
    path.write_text(
        f"name: erp-vm\nkind: vm-image\nsource: {source}\ndisk: {disk}\n"
        f"objectives: {{rto: 10m, rpo: 7d}}\nverify:\n{verify}"
    )
    return path


def drill(scenario: Path, history_url: str, **env: str) -> tuple[int, dict[str, Any]]:
    code, record = check(scenario, history_url, **env)
    assert history_rows(history_url)[0]["status"] == record["status"]
    return code, record


def boot_verify(expect: str = MARKER, timeout: str = "90s") -> str:
    return f"  image_check: false\n  boot: {{expect_console: '{expect}', timeout: {timeout}}}\n"


# --- healthy disks


def test_a_qcow2_disk_is_checked_read_inside_and_booted_and_passes(disks, tmp_path, history_url):
    path = copy(disks["qcow2"], tmp_path / "nas" / "erp01.qcow2")
    verify = FILES_VERIFY + f"  boot: {{expect_console: '{MARKER}', timeout: 90s}}\n"

    code, record = drill(
        vm_scenario(tmp_path, local(path), "{format: qcow2, virtual_size: 40m}", verify),
        history_url,
    )

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    checks = checks_by_name(record)
    assert checks["image"]["observed"].startswith("qcow2, virtual size 40.0 MiB, ")
    assert checks["qemu-img check (qcow2)"]["observed"] == "no corruption, no leak"
    assert checks["partitions"]["observed"] == "2 (1: 24.0 MiB (type e), 2: 15.0 MiB (type 83))"
    assert checks["guest file /syslinux.cfg"]["observed"].startswith(
        "present in partition 1 (vfat)"
    )
    assert checks["guest file /etc/hostname"]["observed"] == HOSTNAME_SHA256
    assert checks["guest file /var/lib/erp/config.ini"]["proves_data"] is True
    assert checks["boot"]["observed"].startswith(f"'{MARKER}' after ")
    assert "boot" in record["phases"]
    assert record["rto_seconds"] >= record["phases"]["boot"]
    assert_no_leftovers()


def test_a_raw_disk_restored_from_restic_is_read_without_a_copy_and_passes(
    disks, restic_binary, tmp_path, history_url
):
    host = tmp_path / "host"
    copy(disks["raw"], host / "var" / "lib" / "libvirt" / "erp01.img")
    repository = backed_up_with_restic(restic_binary, host, tmp_path)
    source = (
        f"{{type: restic, repository: {repository}, password_env: {PASSWORD_VARIABLE}, "
        f"path: /var/lib/libvirt/erp01.img, restic_binary: {restic_binary}}}"
    )

    code, record = drill(
        vm_scenario(tmp_path, source, "{format: raw}"), history_url, **{PASSWORD_VARIABLE: PASSWORD}
    )

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    checks = checks_by_name(record)
    assert (
        checks["qemu-img check (raw)"]["observed"]
        == "a raw image has no metadata qemu-img can check"
    )
    assert checks["guest file /etc/hostname"]["status"] == "passed"
    assert_no_leftovers()


@pytest.mark.parametrize("image_format", ["vmdk", "vdi", "vhdx"])
def test_vmdk_vdi_and_vhdx_images_are_checked_and_read_inside(
    disks, tmp_path, history_url, image_format
):
    path = converted(disks["raw"], tmp_path / "nas" / f"erp01.{image_format}", image_format)

    code, record = drill(
        vm_scenario(tmp_path, local(path), f"{{format: {image_format}, virtual_size: 40m}}"),
        history_url,
    )

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    checks = checks_by_name(record)
    assert checks["image"]["observed"].startswith(f"{image_format}, virtual size 40.0 MiB")
    assert checks["guest file /etc/hostname"]["observed"] == HOSTNAME_SHA256
    assert_no_leftovers()


def test_a_qcow2_object_in_s3_is_streamed_and_passes(
    disks, s3_server, uploader, bucket, tmp_path, history_url
):
    uploader.put_object(
        Bucket=bucket, Key="vms/erp01-2026-11-30.qcow2", Body=disks["qcow2"].read_bytes()
    )
    source = (
        f"{{type: s3, endpoint: '{s3_server.endpoint}', bucket: {bucket}, prefix: vms/, "
        "unpack: none, env_from: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]}"
    )

    code, record = drill(vm_scenario(tmp_path, source, "{format: qcow2}"), history_url)

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    assert record["snapshot_id"] == f"s3://{bucket}/vms/erp01-2026-11-30.qcow2"
    assert_no_leftovers()


# --- damaged images


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (zeroed_refcount_block, "qemu-img check found {n} corruptions in /erp01.qcow2"),
        (
            broken_qcow2_magic,
            "/erp01.qcow2: declared qcow2, but the file has no image header qemu-img knows",
        ),
    ],
)
def test_a_damaged_qcow2_fails_with_what_qemu_img_found(
    disks, tmp_path, history_url, damage, reason
):
    path = damage(copy(disks["qcow2"], tmp_path / "nas" / "erp01.qcow2"))

    code, record = drill(vm_scenario(tmp_path, local(path), "{format: qcow2}"), history_url)

    assert (code, record["status"]) == (1, "fail")
    if "{n}" in reason:
        corruptions = checks_by_name(record)["qemu-img check (qcow2)"]["observed"].split()[0]
        assert int(corruptions) > 0
        reason = reason.format(n=corruptions)
    assert record["reason"].startswith(reason), record["reason"]
    assert_no_leftovers()


def test_a_truncated_qcow2_fails_on_its_metadata_and_its_missing_files(
    disks, tmp_path, history_url
):
    path = truncated(copy(disks["qcow2"], tmp_path / "nas" / "erp01.qcow2"), 0.5)

    code, record = drill(vm_scenario(tmp_path, local(path), "{format: qcow2}"), history_url)

    assert (code, record["status"]) == (1, "fail")
    checks = checks_by_name(record)
    assert checks["qemu-img check (qcow2)"]["reason"].startswith("qemu-img check found ")
    assert checks["guest file /etc/hostname"]["reason"] == (
        "guest file /etc/hostname is not in partition 1 (vfat) (no filesystem in partition 2)"
    )
    assert checks["guest file /var/lib/erp/config.ini"]["reason"] == (
        "guest file /var/lib/erp/config.ini cannot be found: no filesystem in partition 2 "
        "(damaged, or never made)"
    )
    assert_no_leftovers()


def test_a_qcow2_declared_raw_fails_naming_the_format_it_has(disks, tmp_path, history_url):
    path = copy(disks["qcow2"], tmp_path / "nas" / "erp01.img")

    code, record = drill(vm_scenario(tmp_path, local(path), "{format: raw}"), history_url)

    assert (code, record["status"]) == (1, "fail")
    assert (
        record["reason"] == "/erp01.img: declared raw, but it is a qcow2 image (its header says so)"
    )
    assert_no_leftovers()


def test_a_virtual_size_other_than_declared_fails_with_both_sizes(disks, tmp_path, history_url):
    path = copy(disks["qcow2"], tmp_path / "nas" / "erp01.qcow2")

    code, record = drill(
        vm_scenario(tmp_path, local(path), "{format: qcow2, virtual_size: 40g}"), history_url
    )

    assert (code, record["status"]) == (1, "fail")
    assert record["reason"] == ("/erp01.qcow2 has a virtual size of 40.0 MiB, expected 40.0 GiB")
    assert_no_leftovers()


def test_a_disk_without_a_partition_table_fails(disks, tmp_path, history_url):
    path = wiped_partition_table(copy(disks["raw"], tmp_path / "nas" / "erp01.img"))

    code, record = drill(vm_scenario(tmp_path, local(path), "{format: raw}"), history_url)

    assert (code, record["status"]) == (1, "fail")
    assert record["reason"] == (
        "/erp01.img has no readable partition table (sfdisk: does not contain a recognized "
        "partition table)"
    )
    assert_no_leftovers()


def test_a_filesystem_without_a_reader_is_named_and_its_files_cannot_be_looked_for(
    disks, tmp_path, history_url
):
    path = copy(disks["raw"], tmp_path / "nas" / "erp01.img")
    with path.open("r+b") as disk:  # partition 2 becomes swap: no ext4 magic, a swap signature
        start = 25 * 1024 * 1024
        disk.seek(start + 1024 + 56)
        disk.write(b"\0\0")
        disk.seek(start + 1024)  # swap header: version 1, then the signature at 4086
        disk.write((1).to_bytes(4, "little"))
        disk.seek(start + 4096 - 10)
        disk.write(b"SWAPSPACE2")
    verify = "  image_check: false\n  files: [{path: /etc/hostname, partition: 2}]\n"

    code, record = drill(vm_scenario(tmp_path, local(path), "{format: raw}", verify), history_url)

    assert (code, record["status"]) == (1, "error")
    assert record["reason"] == (
        "guest file /etc/hostname cannot be looked for: partition 2: swap (no reader for these "
        "filesystems here)"
    )
    assert_no_leftovers()


def test_a_guest_file_missing_or_changed_fails_naming_it(disks, tmp_path, history_url):
    path = copy(disks["raw"], tmp_path / "nas" / "erp01.img")
    verify = (
        "  image_check: false\n  files:\n    - /etc/erp/license.key\n"
        f"    - {{path: /var/lib/erp/config.ini, sha256: '{'0' * 64}'}}\n"
    )

    code, record = drill(vm_scenario(tmp_path, local(path), "{format: raw}", verify), history_url)

    assert (code, record["status"]) == (1, "fail")
    checks = checks_by_name(record)
    assert checks["guest file /etc/erp/license.key"]["reason"] == (
        "guest file /etc/erp/license.key is not in partition 1 (vfat), partition 2 (ext4)"
    )
    assert checks["guest file /var/lib/erp/config.ini"]["reason"] == (
        "guest file /var/lib/erp/config.ini in partition 2 (ext4) differs: expected 00000000..., "
        f"got {CONFIG_SHA256[:8]}..."
    )
    assert_no_leftovers()


# --- boots that fail


def test_a_guest_whose_kernel_panics_fails_with_the_panic_line(disks, tmp_path, history_url):
    path = copy(disks["noinit"], tmp_path / "nas" / "erp01.img")

    code, record = drill(
        vm_scenario(tmp_path, local(path), "{format: raw}", boot_verify()), history_url
    )

    assert (code, record["status"]) == (1, "fail")
    assert record["reason"].startswith("the guest's kernel panicked: ")
    assert "No working init found" in record["reason"]
    assert_no_leftovers()


def test_a_disk_the_bios_cannot_boot_times_out_with_an_empty_console(disks, tmp_path, history_url):
    path = copy(disks["raw"], tmp_path / "nas" / "erp01.img")
    with path.open("r+b") as disk:  # no boot signature: the BIOS finds nothing to boot
        disk.seek(510)
        disk.write(b"\0\0")

    code, record = drill(
        vm_scenario(tmp_path, local(path), "{format: raw}", boot_verify(timeout="8s")),
        history_url,
    )

    assert (code, record["status"]) == (1, "fail")
    assert record["reason"] == (
        f"no '{MARKER}' on the console within 8.0s; it ends: the console stayed empty (no "
        "bootloader?)"
    )
    assert_no_leftovers()


def test_a_guest_that_never_prints_the_expected_text_fails_when_it_stops(
    disks, tmp_path, history_url
):
    path = copy(disks["raw"], tmp_path / "nas" / "erp01.img")

    code, record = drill(
        vm_scenario(tmp_path, local(path), "{format: raw}", boot_verify(expect="erp01 login:")),
        history_url,
    )

    assert (code, record["status"]) == (1, "fail")
    assert record["reason"].startswith("qemu stopped before 'erp01 login:'")
    assert MARKER in checks_by_name(record)["boot"]["detail"]
    assert_no_leftovers()


def test_the_image_is_never_written_by_the_checks_or_the_boot(disks, tmp_path, history_url):
    path = copy(disks["qcow2"], tmp_path / "nas" / "erp01.qcow2")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    verify = FILES_VERIFY + f"  boot: {{expect_console: '{MARKER}', timeout: 90s}}\n"

    code, record = drill(vm_scenario(tmp_path, local(path), "{format: qcow2}", verify), history_url)

    assert code == 0, record["reason"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    shutil.rmtree(tmp_path / "nas")
    assert_no_leftovers()


def test_a_file_inside_an_ntfs_partition_is_read_without_mounting(tmp_path, history_url):
    path = make_ntfs_disk(tmp_path / "nas")
    digest = hashlib.sha256(WIN_INI.encode()).hexdigest()
    verify = f"  partitions: {{min: 1}}\n  files: [{{path: /win.ini, sha256: '{digest}'}}]\n"

    code, record = drill(vm_scenario(tmp_path, local(path), "{format: raw}", verify), history_url)

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    assert checks_by_name(record)["guest file /win.ini"]["observed"] == digest
    assert_no_leftovers()


def test_a_truncated_raw_disk_fails_on_the_partition_past_its_end(disks, tmp_path, history_url):
    path = truncated(copy(disks["raw"], tmp_path / "nas" / "erp01.img"), 0.7)

    code, record = drill(vm_scenario(tmp_path, local(path), "{format: raw}"), history_url)

    assert (code, record["status"]) == (1, "fail")
    assert record["reason"].startswith(
        "partition 2 ends at 40.0 MiB, past the image's end at 28.0 MiB: the image is truncated"
    )
    assert checks_by_name(record)["guest file /var/lib/erp/config.ini"]["reason"] == (
        "guest file /var/lib/erp/config.ini cannot be found: no filesystem in partition 2 (past "
        "the image's end) (damaged, or never made)"
    )
    assert_no_leftovers()


def test_an_image_whose_name_holds_commas_colons_and_question_marks_is_read_plainly(
    disks, tmp_path, history_url
):
    path = copy(disks["raw"], tmp_path / "nas" / "erp01:v2,final?.img")
    source = f"{{type: local, path: '{path}', unpack: none}}"

    code, record = drill(vm_scenario(tmp_path, source, "{format: raw}"), history_url)

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    assert_no_leftovers()


def test_a_gpt_disk_has_its_partitions_and_files_read(tmp_path, history_url):
    path = make_gpt_disk(tmp_path / "nas")
    verify = (
        "  partitions: {min: 1}\n"
        f"  files: [{{path: /etc/hostname, sha256: '{HOSTNAME_SHA256}'}}]\n"
    )

    code, record = drill(vm_scenario(tmp_path, local(path), "{format: raw}", verify), history_url)

    assert (code, record["status"]) == (0, "pass"), record["reason"]
    checks = checks_by_name(record)
    assert checks["partitions"]["observed"] == (
        "1 (1: 16.0 MiB (type 0FC63DAF-8483-4772-8E79-3D69D8477DE4))"
    )
    assert checks["guest file /etc/hostname"]["observed"] == HOSTNAME_SHA256
    assert_no_leftovers()

"""Real VM disk images for the vm-image kind's tests and the demo, built without privileges.

make_boot_disk() builds, in a throwaway restore-tests/vm-testkit container (no network, no
capabilities, no loop device, no mount), a small raw disk that really boots under qemu: an MBR
(SYSLINUX's mbr.bin), partition 1 FAT16 (bootable: SYSLINUX, Debian's kernel, a busybox
initramfs whose /init prints a marker on the serial console and powers off) and partition 2
ext4 with /etc/hostname and /var/lib/erp/config.ini. The damage helpers below break a copy the
way a bad backup would. See docs/vm-images.md for what each tool does with these disks.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

TESTKIT = "restore-tests/vm-testkit"
VM_TOOLS = "restore-tests/vm-tools"
MARKER = "restore-tests-guest login:"

SECTOR = 512
DISK_MIB = 40
FAT_START, FAT_SECTORS = 2048, 24 * 2048  # 1 MiB .. 25 MiB
EXT_START = FAT_START + FAT_SECTORS  # 25 MiB .. the end (15 MiB)
FAT_OFFSET, EXT_OFFSET = FAT_START * SECTOR, EXT_START * SECTOR

HOSTNAME = "erp01\n"
CONFIG_INI = "[erp]\ndatabase = erp\nhost = db01.internal\nport = 5432\n"
GUEST_FILES = {"/etc/hostname": HOSTNAME, "/var/lib/erp/config.ini": CONFIG_INI}

# In the container, in /scratch (tmpfs); $MARKER, $INIT, $NAME, $HOSTNAME_FILE, $CONFIG_FILE come
# from the environment.
_BUILD = f"""
set -euo pipefail
cd /scratch
export MTOOLS_SKIP_CHECK=1
# The initramfs: busybox and an /init that prints the marker on the console, then powers off.
mkdir -p initrd/bin initrd/dev initrd/proc initrd/sys initrd/etc
cp /bin/busybox initrd/bin/busybox
ln -s busybox initrd/bin/sh
printf '%s\\n' "$MARKER" >initrd/etc/issue
if [ "$INIT" = 1 ]; then
    cat >initrd/init <<'EOF'
#!/bin/sh
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox mount -t proc proc /proc
echo
/bin/busybox cat /etc/issue
/bin/busybox poweroff -f
EOF
else
    # An /init that cannot run (its interpreter is missing) and no /sbin/init, /bin/init,
    # /etc/init: the kernel gives up with "No working init found". (Without any /init the
    # kernel would look for a root= device instead and panic "VFS: Unable to mount root fs".)
    rm initrd/bin/sh
    printf '#!/bin/missing-shell\\n' >initrd/init
fi
chmod 0755 initrd/init
(cd initrd && find . | cpio -o -H newc -R 0:0 --quiet) | gzip -9 >initrd.gz
cat >syslinux.cfg <<'EOF'
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0 quiet
EOF
# Partition 1: FAT16, its hidden sectors set to the partition's start, SYSLINUX installed on it.
mkfs.vfat -F 16 -n BOOT -h {FAT_START} -C fat.img {FAT_SECTORS // 2} >/dev/null
mcopy -i fat.img /boot/vmlinuz ::/vmlinuz
mcopy -i fat.img initrd.gz syslinux.cfg ::/
syslinux --install fat.img
# Partition 2: ext4 made from a folder (mke2fs -d: no mount).
mkdir -p root/etc root/var/lib/erp
printf '%s' "$HOSTNAME_FILE" >root/etc/hostname
printf '%s' "$CONFIG_FILE" >root/var/lib/erp/config.ini
truncate -s {DISK_MIB * 1024 * 1024 - EXT_OFFSET} ext.img
mke2fs -q -t ext4 -L erp-root -E root_owner=0:0 -d root ext.img
# The disk: partition table (1 bootable), SYSLINUX's MBR code, both filesystems.
truncate -s {DISK_MIB}M disk.raw
printf '%s\\n' 'label: dos' 'start={FAT_START}, size={FAT_SECTORS}, type=e, bootable' \\
    'start={EXT_START}, type=83' | sfdisk -q disk.raw
dd if=/usr/lib/syslinux/mbr/mbr.bin of=disk.raw bs=440 count=1 conv=notrunc status=none
dd if=fat.img of=disk.raw bs=1M seek=1 conv=notrunc,sparse status=none
dd if=ext.img of=disk.raw bs=512 seek={EXT_START} conv=notrunc,sparse status=none
cp --sparse=always disk.raw "/out/$NAME"
"""


def _docker_run(image: str, mounts: list[str], script: str, env: dict[str, str]) -> None:
    """A script in a throwaway container of the image: no network, no capabilities, as the
    caller's uid (the files it writes are the caller's)."""
    command = [
        "docker", "run", "--rm", "--network", "none", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--user", f"{os.getuid()}:{os.getgid()}",
        "--tmpfs", "/scratch:rw,exec,size=256m,mode=1777", "-e", "HOME=/scratch",
    ]  # fmt: skip
    for name, value in env.items():
        command += ["-e", f"{name}={value}"]
    for mount in mounts:
        command += ["-v", mount]
    completed = subprocess.run(
        [*command, image, "bash", "-c", script], capture_output=True, text=True, timeout=300
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{image}: exit {completed.returncode}\n{completed.stdout}\n{completed.stderr}"
        )


def make_boot_disk(folder: Path, marker: str = MARKER, *, init: bool = True) -> Path:
    """folder/disk.raw (40 MiB, sparse): boots under qemu (TCG, IDE, serial console) to `marker`
    and powers off; with init=False the kernel panics ("No working init found")."""
    folder.mkdir(parents=True, exist_ok=True)
    name = "disk.raw" if init else "disk-noinit.raw"
    _docker_run(
        TESTKIT,
        [f"{folder.resolve()}:/out"],
        _BUILD,
        {
            "MARKER": marker,
            "INIT": "1" if init else "0",
            "NAME": name,
            "HOSTNAME_FILE": HOSTNAME,
            "CONFIG_FILE": CONFIG_INI,
        },
    )
    return folder / name


def to_qcow2(raw: Path, target: Path) -> Path:
    """The raw disk converted to qcow2 by qemu-img (in the testkit image)."""
    return converted(raw, target, "qcow2")


def converted(raw: Path, target: Path, image_format: str) -> Path:
    """The raw disk converted by qemu-img to image_format (qcow2, vmdk, vdi, vhdx)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _docker_run(
        TESTKIT,
        [f"{raw.resolve().parent}:/in:ro", f"{target.resolve().parent}:/out"],
        'qemu-img convert -f raw -O "$FORMAT" "/in/$RAW" "/out/$TARGET"',
        {"RAW": raw.name, "TARGET": target.name, "FORMAT": image_format},
    )
    return target


# --- damage (in place: copy the disk first; each returns the path it broke)


def truncated(path: Path, keep_fraction: float) -> Path:
    """The file cut to keep_fraction of its size (an interrupted upload or copy)."""
    size = path.stat().st_size
    os.truncate(path, int(size * keep_fraction))
    return path


def broken_qcow2_magic(path: Path) -> Path:
    """The qcow2 magic (QFI\\xfb) overwritten: no longer a qcow2 to anyone."""
    with path.open("r+b") as handle:
        handle.write(b"\0\0\0\0")
    return path


def zeroed_refcount_block(qcow2: Path) -> Path:
    """The first refcount block zeroed: every cluster in use now has refcount 0 (qemu-img check
    reports corruptions; the guest's data is still readable)."""
    with qcow2.open("r+b") as handle:
        header = handle.read(104)
        if header[:4] != b"QFI\xfb":
            raise ValueError(f"{qcow2} is not a qcow2 image")
        cluster_size = 1 << int.from_bytes(header[20:24], "big")
        table = int.from_bytes(header[48:56], "big")
        handle.seek(table)
        block = int.from_bytes(handle.read(8), "big")
        if block == 0:
            raise ValueError(f"{qcow2} has no refcount block")
        handle.seek(block)
        handle.write(b"\0" * cluster_size)
    return qcow2


def wiped_partition_table(raw: Path) -> Path:
    """The MBR's four partition entries and its 55 AA signature zeroed (bytes 446..511)."""
    with raw.open("r+b") as handle:
        handle.seek(446)
        handle.write(b"\0" * 66)
    return raw


WIN_INI = "[fonts]\n[extensions]\n[mci extensions]\n"
_NTFS = """
set -euo pipefail
cd /scratch
truncate -s 16M ntfs.img
mkntfs -F -f -q -L WINDOWS ntfs.img >/dev/null 2>&1
printf '%s' "$WIN_INI" >win.ini
ntfscp -f ntfs.img win.ini win.ini >/dev/null
truncate -s 20M disk.raw
printf '%s\\n' 'label: dos' 'start=2048, size=32768, type=7, bootable' | sfdisk -q disk.raw
dd if=ntfs.img of=disk.raw bs=512 seek=2048 conv=notrunc,sparse status=none
cp --sparse=always disk.raw /out/windows.raw
"""


def make_ntfs_disk(folder: Path) -> Path:
    """folder/windows.raw (20 MiB): an MBR and one NTFS partition holding /win.ini (WIN_INI),
    made with mkntfs and ntfscp (no mount)."""
    folder.mkdir(parents=True, exist_ok=True)
    _docker_run(TESTKIT, [f"{folder.resolve()}:/out"], _NTFS, {"WIN_INI": WIN_INI})
    return folder / "windows.raw"


_GPT = """
set -euo pipefail
cd /scratch
mkdir -p root/etc
printf '%s' "$HOSTNAME_FILE" >root/etc/hostname
truncate -s 16M ext.img
mke2fs -q -t ext4 -E root_owner=0:0 -d root ext.img
truncate -s 20M disk.raw
printf '%s\\n' 'label: gpt' 'start=2048, size=32768, type=L, name=erp-root' | sfdisk -q disk.raw
dd if=ext.img of=disk.raw bs=512 seek=2048 conv=notrunc,sparse status=none
cp --sparse=always disk.raw /out/gpt.raw
"""


def make_gpt_disk(folder: Path) -> Path:
    """folder/gpt.raw (20 MiB): a GPT partition table and one ext4 partition holding
    /etc/hostname (HOSTNAME)."""
    folder.mkdir(parents=True, exist_ok=True)
    _docker_run(TESTKIT, [f"{folder.resolve()}:/out"], _GPT, {"HOSTNAME_FILE": HOSTNAME})
    return folder / "gpt.raw"

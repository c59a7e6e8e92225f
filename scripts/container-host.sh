#!/usr/bin/env bash
# Prepare a Debian host (12 or newer) to build and run the spdm-emulator container image with
# rootful podman, also when no container registry is reachable (the project's CI machines
# reach none). tests/test_container.py runs it before it builds the image.
#
#   bash scripts/container-host.sh              # packages, engine settings, stand-in bases
#   bash scripts/container-host.sh --packages   # only the packages (install-system-deps.sh)
#   bash scripts/container-host.sh --rebuild    # make the stand-in bases (and rootfs) again
#
# What it changes on the host, each part only when it is needed:
# 1. apt packages: podman buildah runc netavark aardvark-dns iptables mmdebstrap.
# 2. /etc/containers/containers.conf.d/50-spdm-emulator.conf: the engine settings this host
#    needs, and no file when it needs none (a systemd host, cgroup v2, CAP_SYS_RESOURCE):
#    - default_ulimits nofile/nproc, when root lacks CAP_SYS_RESOURCE: podman's default
#      RLIMIT_NOFILE fails there ("setrlimit `RLIMIT_NOFILE`: Operation not permitted");
#    - runtime = "runc", when cgroups are v1 or hybrid: crun 1.8 refuses that layout;
#    - cgroup_manager = "cgroupfs" and events_logger = "file", when systemd is not running.
# 3. Stand-in base images in podman's image store, for the base images that are not there:
#    docker.io/library/python:3.11-slim (the Dockerfile's) and
#    docker.io/library/eclipse-mosquitto:2 (docker/compose.yaml's). Both are built from a
#    Debian bookworm root file system made with mmdebstrap, cached as a tarball under
#    $SPDM_EMULATOR_CACHE/container (default /var/cache/spdm-emulator) so that only a new
#    machine downloads it, then docker/standin/*.Containerfile. The host's locally added CA
#    certificates (/usr/local/share/ca-certificates) are copied in, so that pip and apt in
#    the builds reach the package indexes as the host does (e.g. behind a TLS-inspecting
#    proxy). An image of that name that is not a stand-in (pulled from a registry) is left
#    alone; a stand-in made from an older recipe is made again.
# Uses sudo when not root. Environment: SPDM_EMULATOR_CACHE, SPDM_EMULATOR_DEBIAN_MIRROR
# (default http://deb.debian.org/debian).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages_only=0
rebuild=0
for arg in "$@"; do
    case "$arg" in
        --packages) packages_only=1 ;;
        --rebuild) rebuild=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "container-host: unknown option '$arg' (--packages, --rebuild, --help)" >&2
            exit 2
            ;;
    esac
done

say() { echo "container-host: $*"; }

# --- 1. packages -----------------------------------------------------------------------
PACKAGES=(podman buildah runc netavark aardvark-dns iptables mmdebstrap)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "missing ${missing[*]} and no apt-get: install podman (rootful) by hand" >&2
        exit 1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "packages: all present"
fi
if [ "$packages_only" -eq 1 ]; then exit 0; fi

# --- 2. engine settings ------------------------------------------------------------------
DROPIN=/etc/containers/containers.conf.d/50-spdm-emulator.conf
containers=()
engine=()
capbnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
if (((16#$capbnd >> 24) & 1)); then :; else  # bit 24: CAP_SYS_RESOURCE
    containers+=('default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]')
fi
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then engine+=('runtime = "runc"'); fi
if [ ! -d /run/systemd/system ]; then
    engine+=('cgroup_manager = "cgroupfs"' 'events_logger = "file"')
fi
if [ ${#containers[@]} -eq 0 ] && [ ${#engine[@]} -eq 0 ]; then
    if [ -e "$DROPIN" ]; then $SUDO rm -f "$DROPIN"; fi
    say "engine settings: podman's defaults suit this host"
else
    text="# Written by spdm-emulator's scripts/container-host.sh: what podman needs on this host."
    if [ ${#containers[@]} -gt 0 ]; then text+=$'\n[containers]'$(printf '\n%s' "${containers[@]}"); fi
    if [ ${#engine[@]} -gt 0 ]; then text+=$'\n[engine]'$(printf '\n%s' "${engine[@]}"); fi
    if [ "$(cat "$DROPIN" 2>/dev/null || true)" != "$text" ]; then
        $SUDO mkdir -p "$(dirname "$DROPIN")"
        printf '%s\n' "$text" | $SUDO tee "$DROPIN" >/dev/null
        say "engine settings: wrote $DROPIN"
    else
        say "engine settings: $DROPIN is up to date"
    fi
fi

# --- 3. stand-in base images ---------------------------------------------------------------
CACHE="${SPDM_EMULATOR_CACHE:-/var/cache/spdm-emulator}/container"
MIRROR="${SPDM_EMULATOR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
LABEL=org.spdm-emulator.standin
DEBIAN_IMAGE=localhost/spdm-emulator-standin/debian:bookworm
STANDINS=(
    "docker.io/library/python:3.11-slim=python.Containerfile"
    "docker.io/library/eclipse-mosquitto:2=mosquitto.Containerfile"
)
$SUDO mkdir -p "$CACHE"
# One host-wide preparation at a time (concurrent test runs share the image store).
exec 9>"$CACHE/.lock"
flock -w 1800 9

# The root file system: what mmdebstrap is asked for, and the CA certificates copied in.
# shellcheck disable=SC2016,SC2054  # the hook's $1 is mmdebstrap's; commas are in values
MMDEBSTRAP_ARGS=(
    --variant=minbase
    --format=tar
    --include=python3,python3-venv,ca-certificates
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --customize-hook='if [ -d /usr/local/share/ca-certificates ]; then cp -a /usr/local/share/ca-certificates/. "$1/usr/local/share/ca-certificates/"; fi; chroot "$1" update-ca-certificates >/dev/null'
)
rootfs_key=$(
    {
        printf '%s\n' "recipe 1" "${MMDEBSTRAP_ARGS[@]}" bookworm "$MIRROR"
        find /usr/local/share/ca-certificates -type f -name '*.crt' -print0 2>/dev/null |
            sort -z | xargs -0 -r cat
    } | sha256sum | cut -c1-16
)

label_of() {  # the stand-in label of an image; "absent" when there is no such image
    if $SUDO podman image exists "$1"; then
        $SUDO podman image inspect --format "{{index .Labels \"$LABEL\"}}" "$1" 2>/dev/null || true
    else
        echo absent
    fi
}

ensure_debian_image() {
    if [ "$rebuild" -eq 0 ] && [ "$(label_of "$DEBIAN_IMAGE")" = "$rootfs_key" ]; then return; fi
    local tar="$CACHE/debian-bookworm-$rootfs_key.tar"
    if [ "$rebuild" -eq 1 ] || [ ! -s "$tar" ]; then
        local started=$SECONDS log="$CACHE/mmdebstrap.log"
        say "making the Debian bookworm root file system with mmdebstrap (log: $log)"
        if ! $SUDO mmdebstrap "${MMDEBSTRAP_ARGS[@]}" bookworm "$tar.partial" "$MIRROR" \
            >"$log" 2>&1; then
            tail -n 30 "$log" >&2
            say "mmdebstrap failed (above: the end of $log)" >&2
            exit 1
        fi
        $SUDO mv -f "$tar.partial" "$tar"
        find "$CACHE" -maxdepth 1 -name 'debian-bookworm-*.tar' ! -name "${tar##*/}" \
            -exec $SUDO rm -f {} +
        say "root file system cached: $tar ($(du -h "$tar" | cut -f1), $((SECONDS - started)) s)"
    else
        say "root file system from the cache: $tar"
    fi
    $SUDO podman import --quiet --change "LABEL $LABEL=$rootfs_key" --change 'CMD ["bash"]' \
        "$tar" "$DEBIAN_IMAGE" >/dev/null
    say "imported $DEBIAN_IMAGE"
}

for entry in "${STANDINS[@]}"; do
    image=${entry%%=*}
    file="$ROOT/docker/standin/${entry#*=}"
    key=$(cat <(echo "$rootfs_key") "$file" | sha256sum | cut -c1-16)
    current=$(label_of "$image")
    if [ "$current" = "" ]; then
        say "$image: a real image is there (not a stand-in), kept"
        continue
    fi
    if [ "$rebuild" -eq 0 ] && [ "$current" = "$key" ]; then
        say "$image: stand-in up to date"
        continue
    fi
    ensure_debian_image
    started=$SECONDS
    log="$CACHE/build-${entry#*=}.log"
    if ! $SUDO podman build --pull=never --format docker --build-arg "BASE=$DEBIAN_IMAGE" \
        --label "$LABEL=$key" -t "$image" -f "$file" "$ROOT/docker/standin" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        say "building the stand-in $image from ${file#"$ROOT"/} failed (log: $log)" >&2
        exit 1
    fi
    say "$image: stand-in built from ${file#"$ROOT"/} ($((SECONDS - started)) s)"
done

#!/usr/bin/env bash
# A QEMU whose NVMe controller can carry SPDM over Security Send/Receive
# (-device nvme,...,spdm_port=P,spdm_trans=nvme: QEMU >= 10.2), for the storage-binding
# tests (tests/test_qemu_storage.py) and for users on Debian 12, which ships none.
#
# Prints the path of such a qemu-system-x86_64 and exits 0:
#   1. $SPDM_EMULATOR_QEMU_NVME, if set and suitable;
#   2. the cached build, $SPDM_EMULATOR_CACHE/qemu-10.2.2 (default /var/cache/spdm-emulator):
#      built once per machine, reused by every later run;
#   3. the system's qemu-system-x86_64, if it already has spdm_trans (Debian 13 backports,
#      sid: QEMU 11.1);
#   4. otherwise builds Debian's qemu 10.2.2 source package (sid, 1:10.2.2+ds-1, fetched
#      from the Debian archive and checked against the SHA-256 sums below) for
#      x86_64-softmmu alone, with its build dependencies from apt (meson >= 1.5 from
#      bookworm-backports on Debian 12), installs the binary into the cache and removes
#      the build tree.  Measured on 2 shared cores: ~8 minutes (configure 12 s, the
#      qemu-system-x86_64 target ~7.5 min).  The +ds source has no firmware: SeaBIOS and
#      the option ROMs come from Debian's seabios / qemu-system-data packages
#      (--firmwarepath /usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu).
#
# Options: --check (print the path or exit 1, never build), --quiet (no progress lines).
# Environment: SPDM_EMULATOR_CACHE, SPDM_EMULATOR_DEBIAN_MIRROR (default
# http://deb.debian.org/debian), SPDM_EMULATOR_QEMU_NVME.  Builds as root (sudo when not root).
set -euo pipefail

VERSION=10.2.2
DEBIAN_VERSION=10.2.2+ds-1
declare -A SHA256=(
    ["qemu_${DEBIAN_VERSION}.dsc"]=f1684b3aa5ec500c3389d346c6501dee45041ea91656c6556d4da9023b7987dd
    ["qemu_${VERSION}+ds.orig.tar.xz"]=be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb
    ["qemu_${DEBIAN_VERSION}.debian.tar.xz"]=ddf75aceab4f8f77374f3cb34fc97b41514895aeb293ce8b2ddd5e072bb0f5c0
)
CACHE="${SPDM_EMULATOR_CACHE:-/var/cache/spdm-emulator}"
PREFIX="$CACHE/qemu-$VERSION"
BIN="$PREFIX/bin/qemu-system-x86_64"
MIRROR="${SPDM_EMULATOR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

check_only=0
quiet=0
for arg in "$@"; do
    case "$arg" in
        --check) check_only=1 ;;
        --quiet) quiet=1 ;;
        -h | --help)
            sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "qemu-spdm-nvme.sh: unknown option $arg (--check, --quiet)" >&2
            exit 2
            ;;
    esac
done
say() { if [ "$quiet" -eq 0 ]; then echo "qemu-spdm-nvme: $*" >&2; fi; }

has_spdm_trans() {
    local help
    [ -x "$1" ] && help=$("$1" -device nvme,help 2>/dev/null) && [[ "$help" == *spdm_trans* ]]
}

found() {
    echo "$1"
    exit 0
}

if [ -n "${SPDM_EMULATOR_QEMU_NVME:-}" ]; then
    if has_spdm_trans "$SPDM_EMULATOR_QEMU_NVME"; then found "$SPDM_EMULATOR_QEMU_NVME"; fi
    say "SPDM_EMULATOR_QEMU_NVME=$SPDM_EMULATOR_QEMU_NVME has no nvme spdm_trans property; ignored"
fi
if has_spdm_trans "$BIN"; then found "$BIN"; fi
system=$(command -v qemu-system-x86_64 || true)
if [ -n "$system" ] && has_spdm_trans "$system"; then found "$system"; fi
if [ "$check_only" -eq 1 ]; then
    say "no QEMU with -device nvme,spdm_trans (run scripts/qemu-spdm-nvme.sh to build one)"
    exit 1
fi

# ---- build it once (as root: apt, the cache) -------------------------------------------
if [ "$(id -u)" -ne 0 ]; then exec sudo -E bash "$0" "$@"; fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.qemu-$VERSION.lock"
if ! flock -w 3600 9; then
    echo "qemu-spdm-nvme: another build holds $CACHE/.qemu-$VERSION.lock" >&2
    exit 1
fi
if has_spdm_trans "$BIN"; then found "$BIN"; fi # built by the run we waited for
started=$SECONDS

if ! command -v apt-get >/dev/null 2>&1; then
    echo "qemu-spdm-nvme: no apt-get; build QEMU >= 10.2 by hand and set SPDM_EMULATOR_QEMU_NVME" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
deps=(gcc make ninja-build pkgconf python3 python3-venv flex bison libglib2.0-dev
    libpixman-1-dev libfdt-dev zlib1g-dev dpkg-dev curl ca-certificates xz-utils
    seabios qemu-system-data)
missing=()
for p in "${deps[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
meson_ok() { command -v meson >/dev/null 2>&1 && dpkg --compare-versions "$(meson --version)" ge 1.5; }
if [ ${#missing[@]} -gt 0 ] || ! meson_ok; then
    say "installing build dependencies: ${missing[*]} meson"
    apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if ! meson_ok; then
        if [ "$codename" = "bookworm" ]; then
            if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
                tee /etc/apt/sources.list.d/spdm-emulator-backports.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
                apt-get update -qq
            fi
            apt-get install -y -qq --no-install-recommends -t bookworm-backports meson >/dev/null
        else
            apt-get install -y -qq --no-install-recommends meson >/dev/null
        fi
    fi
fi
meson_ok || {
    echo "qemu-spdm-nvme: QEMU $VERSION needs meson >= 1.5, found $(meson --version 2>/dev/null || echo none)" >&2
    exit 1
}

work="$CACHE/qemu-$VERSION.build"
rm -rf "$work"
mkdir -p "$work"
cd "$work"
say "fetching Debian's qemu $DEBIAN_VERSION source from $MIRROR"
for f in "${!SHA256[@]}"; do
    curl -fsS --retry 3 -o "$f" "$MIRROR/pool/main/q/qemu/$f"
    echo "${SHA256[$f]}  $f" | sha256sum -c --quiet - || {
        echo "qemu-spdm-nvme: $f does not match its SHA-256 sum" >&2
        exit 1
    }
done
dpkg-source --no-check -x "qemu_${DEBIAN_VERSION}.dsc" src >/dev/null
mkdir -p src/build
cd src/build
say "configuring (x86_64-softmmu only; log $work/src/build/configure.log)"
nice ../configure --python=/usr/bin/python3 --prefix="$PREFIX" \
    --target-list=x86_64-softmmu --without-default-features --enable-tcg --enable-fdt=system \
    --disable-docs --disable-werror --disable-install-blobs --disable-download \
    --disable-containers --with-pkgversion="spdm-emulator cache, Debian 1:$DEBIAN_VERSION" \
    --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu >configure.log 2>&1 || {
    tail -20 configure.log >&2
    exit 1
}
say "building qemu-system-x86_64 (~8 min on 2 cores; log $work/src/build/build.log)"
nice ninja -j"$(nproc)" qemu-system-x86_64 >build.log 2>&1 || {
    tail -30 build.log >&2
    exit 1
}
install -D -m 0755 qemu-system-x86_64 "$BIN"
cd /
rm -rf "$work"
has_spdm_trans "$BIN" || {
    echo "qemu-spdm-nvme: the built $BIN has no nvme spdm_trans property" >&2
    exit 1
}
say "built $BIN in $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s"
found "$BIN"

#!/usr/bin/env bash
# Install the system packages the test suite needs, on Debian 12 (bookworm) or newer:
#   mosquitto        - the MQTT broker the control-plane tests start on a loopback port
#   qemu-system-x86  - QEMU >= 9.1 with the NVMe 'spdm_port' property: Debian 13 has 10.0;
#                      on Debian 12 it comes from bookworm-backports (10.0), for which this
#                      adds the apt source /etc/apt/sources.list.d/spdm-emulator-backports.sources
#                      when no bookworm-backports source is configured
#   openssl          - 'openssl verify' checks the generated certificate chains
#   QEMU 10.2 build  - scripts/qemu-spdm-nvme.sh (cached), for the storage-binding tests
#   podman & co      - the container image tests (scripts/container-host.sh --packages)
#   qemu-utils, mosquitto-clients - qemu-img and mosquitto_pub/_sub, for README's QEMU and
#                      MQTT sections
# Idempotent: does nothing when everything is already there.  Uses sudo when not root.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Container tests (tests/test_container.py): podman, buildah, runc, netavark, aardvark-dns,
# iptables, mmdebstrap. The rest of the host set-up is scripts/container-host.sh's.
bash "$(dirname "$0")/container-host.sh" --packages

have_qemu_spdm() {
    command -v qemu-system-x86_64 >/dev/null 2>&1 &&
        qemu-system-x86_64 -device nvme,help 2>/dev/null | grep -q spdm_port
}

# QEMU >= 10.2 for the storage-binding tests (-device nvme,spdm_trans=nvme; Debian 12 ships
# none): scripts/qemu-spdm-nvme.sh builds Debian's qemu 10.2.2 source once per machine into
# $SPDM_EMULATOR_CACHE (default /var/cache/spdm-emulator; ~8-14 min on 2 cores) and finds it
# there on every later run (or uses a system QEMU that already has spdm_trans).
bash "$(dirname "$0")/qemu-spdm-nvme.sh" >/dev/null

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
have_qemu_spdm || need+=(qemu)
# the README's tools (qemu-img, mosquitto_pub / mosquitto_sub)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)

if [ ${#need[@]} -eq 0 ]; then
    echo "system dependencies: all present"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system dependencies missing (${need[*]}) and no apt-get: install them by hand" >&2
    exit 1
fi
echo "system dependencies: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
if [[ " ${need[*]} " == *" qemu"* ]] && [ "$codename" = "bookworm" ]; then
    # QEMU 10 (NVMe spdm_port) comes from bookworm-backports on Debian 12 (and qemu-utils
    # with it, the same version).
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        $SUDO tee /etc/apt/sources.list.d/spdm-emulator-backports.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
fi
$SUDO apt-get update -qq
pkgs=()
for n in "${need[@]}"; do
    case "$n" in
        qemu | qemu-utils) ;;
        *) pkgs+=("$n") ;;
    esac
done
if [ ${#pkgs[@]} -gt 0 ]; then
    $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
qpkgs=()
if [[ " ${need[*]} " == *" qemu "* ]]; then qpkgs+=(qemu-system-x86); fi
if [[ " ${need[*]} " == *" qemu-utils "* ]]; then qpkgs+=(qemu-utils); fi
if [ ${#qpkgs[@]} -gt 0 ]; then
    if [ "$codename" = "bookworm" ]; then
        $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports "${qpkgs[@]}" >/dev/null
    else
        $SUDO apt-get install -y -qq --no-install-recommends "${qpkgs[@]}" >/dev/null
    fi
fi
# The broker is started by the tests themselves; keep Debian's service from holding 1883.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true; fi
echo "system dependencies: done"

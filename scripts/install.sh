#!/usr/bin/env bash
# Install spdm-emulator into ./.venv (an editable install of this checkout), with the
# extras named on the command line:
#
#   bash scripts/install.sh               # the emulator:  .venv/bin/spdm-emulator
#   bash scripts/install.sh test fuzz     # + what the test suite and the fuzz run need
#
# Debian 12/13's python3 has no venv module until python3-venv is installed, and its pip
# refuses to install into the system Python (PEP 668, "externally-managed-environment");
# so when `python3 -m venv` cannot work this installs python3 and python3-venv with apt
# (using sudo when not root; nothing else is added to the system).  Needs Python >= 3.11.
# Idempotent: an existing .venv is reused, the package re-installed.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

python_ok() {
    command -v python3 >/dev/null 2>&1 &&
        python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

if ! python_ok; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install: needs python3 >= 3.11 with the venv module (and no apt-get to install it)" >&2
        exit 1
    fi
    echo "install: installing python3 and python3-venv with apt"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
    if ! python_ok; then
        echo "install: python3 $(python3 -c 'import platform; print(platform.python_version())' 2>/dev/null || echo '?') is older than 3.11" >&2
        exit 1
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "install: creating .venv"
    python3 -m venv .venv
fi
extras=""
if [ $# -gt 0 ]; then extras="[$(IFS=,; echo "$*")]"; fi
echo "install: pip install -e .${extras} into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
echo "install: done (.venv/bin/spdm-emulator; '. .venv/bin/activate' puts it on PATH)"

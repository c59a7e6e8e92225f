#!/usr/bin/env bash
# Build the wheel and use it as someone who installs the package would: a fresh venv in a
# scratch directory (nothing of the checkout on sys.path), then
#   1. `spdm-emulator profiles list` (every shipped profile and its chains load),
#   2. `spdm-emulator serve` on a free port and `spdm-emulator probe` against it,
#   3. the pytest fixture in a scratch project: examples/test_my_requester.py, copied there.
# Exits non-zero at the first thing that does not work.  Needs PyPI (or a pip cache) for
# the wheel's dependencies and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
serve_pid=""
cleanup() {
    if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "wheel: building"
python3 -m pip wheel -q --no-deps --wheel-dir "$work/dist" "$repo"
wheel=$(ls "$work"/dist/spdm_emulator-*.whl)
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check \
    "$wheel" 'pytest>=8,<10' 'pytest-asyncio>=0.24,<2'
cd "$work"
emu="$work/venv/bin/spdm-emulator"

echo "wheel: profiles list"
"$emu" profiles list

port=$("$work/venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$emu" serve --port "$port" >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do
    grep -q "listening on" "$work/serve.log" && break
    kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
    sleep 0.1
done
echo "wheel: probe 127.0.0.1:$port"
"$emu" probe "127.0.0.1:$port"
kill "$serve_pid"
wait "$serve_pid" || true
serve_pid=""

echo "wheel: the pytest fixture in a scratch project"
mkdir "$work/project"
cp "$repo/examples/test_my_requester.py" "$work/project/"
printf '[pytest]\nasyncio_default_fixture_loop_scope = function\n' >"$work/project/pytest.ini"
(cd "$work/project" && "$work/venv/bin/python" -m pytest -q -p no:cacheprovider)
echo "wheel: ok"

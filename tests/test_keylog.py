"""``serve --keylog FILE``: each secure session's DHE secret or PSK, in spdm_dump's hex form.

Over a real socket: a KEY_EXCHANGE session and a PSK session; the DHE secret in the file
is checked against the requester's own key schedule (its HandshakeSecret is
HKDF-Extract(Salt_0, DHE secret), DSP0274 "Key schedule", computed by the requester's code
with ``cryptography``), the PSK against the profile's.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.app import Emulator
from emulator.codec.constants import BaseAsymAlgo, BaseHashAlgo, RequesterCap
from emulator.options import RunOptions
from emulator.requester import Requester, RequesterConfig
from emulator.requester.identity import flow_for
from emulator.requester.session import _hkdf_extract, open_session, psk_exchange
from emulator.requester.transport import SocketClient
from emulator.transport import get_binding
from tests.helpers import shipped_profile
from tests.test_session import FULL_FLAGS, HINT, PSK

ROOT = Path(__file__).resolve().parent.parent


async def test_keylog_has_every_session_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keylog = tmp_path / "keys.log"
    options = RunOptions(
        profile=shipped_profile("default"),
        host="127.0.0.1",
        port=0,
        keylog=str(keylog),
        pcap=str(tmp_path / "run-{conn}.pcap"),
    )
    emu = Emulator(options)
    with caplog.at_level(logging.WARNING, logger="emulator.keylog"):
        await emu.start()
    try:
        assert f"keylog: writing every session's DHE secret / PSK to {keylog}" in caplog.text
        assert stat.S_IMODE(os.stat(keylog).st_mode) == 0o600
        config = RequesterConfig(
            version=0x12,
            flags=FULL_FLAGS | int(RequesterCap.PSK_CAP),
            base_asym=int(BaseAsymAlgo.ECDSA_P384),
            base_hash=int(BaseHashAlgo.SHA_384),
        )
        async with SocketClient("127.0.0.1", emu.port, get_binding("doe")) as client:
            q = Requester(client, config)
            await q.vca()
            chain = (await flow_for(q).get_certificate(0)).chain
            dhe = await open_session(q, peer_chain=chain)
            handshake_secret = dhe.handshake_secret
            psk = await psk_exchange(q, psk=PSK, hint=HINT)
            await dhe.end_session()
            await psk.end_session()
    finally:
        await emu.stop()
    lines = keylog.read_text().splitlines()
    assert lines[0] == "# spdm-emulator keylog: CONNECTION SESSION_ID SPDM_DUMP_OPTION HEX"
    assert len(lines) == 3, lines
    conn, sid, option, secret = lines[1].split()
    assert (conn, sid, option) == ("1", f"0x{dhe.session_id:08X}", "--dhe_secret")
    assert _hkdf_extract("sha384", bytes(48), bytes.fromhex(secret)) == handshake_secret
    assert lines[2].split() == ["1", f"0x{psk.session_id:08X}", "--psk", PSK.hex()]


def test_keylog_is_a_serve_flag_and_off_by_default() -> None:
    assert RunOptions().keylog is None
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "emulator", "serve", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert "--keylog FILE" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "emulator", "serve", "--port", "0", "--keylog", "/nonexistent/k"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "keylog: cannot open /nonexistent/k: No such file or directory" in bad.stderr

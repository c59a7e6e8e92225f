"""``serve --keylog FILE``: the secrets of every secure session, for decrypting captures
(TLS's SSLKEYLOGFILE, for SPDM).

DMTF ``spdm_dump`` decodes ``--pcap`` captures and decrypts their sessions when it is given,
for each session in the order the capture opens them, the DHE shared secret of a
KEY_EXCHANGE session (``--dhe_secret HEX``) or the PSK of a PSK_EXCHANGE session
(``--psk HEX``).  The key log has one line per session, as the session starts::

    # spdm-emulator keylog: CONNECTION SESSION_ID SPDM_DUMP_OPTION HEX
    1 0xFFFE0001 --dhe_secret 6c1f...
    1 0xFFFD0002 --psk 5465737450736b...

so that ``awk '$1 == 1 {print $3, $4}' FILE`` gives connection 1's ``spdm_dump`` options
(README "Traces and captures").  The secret is the raw DHE output as DSP0274's key schedule
takes it (ECDHE: the X coordinate; FFDHE: g^xy mod p, both big-endian, full width).  Anyone
who reads the file can decrypt the sessions, so it is off unless asked for, the emulator
warns when it is on, and the file is created readable by its owner only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TextIO

from emulator.errors import EmulatorError

if TYPE_CHECKING:
    from emulator.app import Emulator
    from emulator.connection import SpdmConnection
    from emulator.events import ExchangeEvent

log = logging.getLogger("emulator.keylog")

HEADER = "# spdm-emulator keylog: CONNECTION SESSION_ID SPDM_DUMP_OPTION HEX\n"


class KeyLog:
    """An exchange observer: after each exchange, a line for every session of that
    connection not written yet (``connections``: the live connections by number)."""

    def __init__(self, path: str, connections: Mapping[int, SpdmConnection]) -> None:
        self.path = path
        self.connections = connections
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise EmulatorError(f"keylog: cannot open {path}: {exc.strerror or exc}") from None
        self._stream: TextIO = os.fdopen(fd, "a", encoding="ascii")
        if self._stream.tell() == 0:
            self._stream.write(HEADER)
            self._stream.flush()
        #: (connection, SessionID, secret) already written
        self._written: set[tuple[int, int, bytes]] = set()

    def __call__(self, event: ExchangeEvent) -> None:
        conn = self.connections.get(event.connection)
        table = conn.responder.ctx.sessions if conn is not None else None
        if table is None:
            return
        for sid, session in table.sessions.items():
            if session.use_psk:
                option, secret = "--psk", session.psk
            else:
                option, secret = "--dhe_secret", session.dhe_secret
            key = (event.connection, sid, secret)
            if not secret or key in self._written:
                continue
            self._written.add(key)
            self._stream.write(f"{event.connection} 0x{sid:08X} {option} {secret.hex()}\n")
            self._stream.flush()

    def close(self) -> None:
        self._stream.close()


def attach_keylog(emulator: Emulator, path: str) -> Callable[[], None]:
    """Log every connection's session secrets to ``path`` (warning that it is on); returns
    the cleanup function."""
    keylog = KeyLog(path, emulator.connections)
    emulator.observers.append(keylog)
    log.warning(
        "keylog: writing every session's DHE secret / PSK to %s: whoever reads it can "
        "decrypt the sessions (for test captures only)",
        path,
    )

    def cleanup() -> None:
        if keylog in emulator.observers:
            emulator.observers.remove(keylog)
        keylog.close()

    return cleanup

#!/usr/bin/env python3
"""Fuzz the DSP0277 secured-message decoder (atheris).

Input: byte 0 picks the mode.

* ``% 2 == 0`` (record level): byte 1 picks the AEAD (AES-128/256-GCM, ChaCha20-Poly1305),
  MAC-only and the on-wire sequence-number size (0 as DOE, 2 as MCTP); the rest is a record
  given to ``open_record`` with fixed keys.  Only :class:`~emulator.errors.SessionError`
  may escape; and sealing the same bytes as application data must open to them again.
* ``% 2 == 1`` (session level): byte 1 picks the SPDM version of a recorded, established
  session (replayed into a fresh connection); the rest is a list of raw records in
  :func:`fuzz.harness.split_messages` form, each sent in a secured DOE object (bit 15 of a
  message header: overwrite its SessionID with the session's, so it reaches the MAC
  check).  Checked: ``SpdmConnection.receive`` never raises, every plain reply is a
  well-formed SPDM message, every ``Responder.handle`` call keeps the contract, and a
  record that does not authenticate under the session's request key ends the session
  (DSP0277 / libspdm: a decrypt error terminates it).

    python3 fuzz/fuzz_secured.py -runs=20000 fuzz/corpus/secured
"""

from __future__ import annotations

import contextlib
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.instrument import instrumented, warn_uninstrumented

with instrumented(__name__ == "__main__"):
    from emulator.errors import SessionError
    from emulator.session.record import open_record, seal_record
    from fuzz.harness import (
        ConnectionHarness,
        ContractViolation,
        SessionKeys,
        check_device_clean,
        fuzz_device,
        join_messages,
        log_to_sink,
        put_back_device_state,
        record_session,
        settle_heap,
        snapshot,
        split_messages,
        template,
    )
    from fuzz.snapshot import memoize_signatures

AEADS = (0x01, 0x02, 0x04)  # AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305
KEY = bytes(range(32))
SALT = bytes(range(100, 112))
SESSION_ID = 0xFFFE5EED
SESSION_VERSIONS = (0x11, 0x12, 0x13)


def _record_params(selector: int) -> tuple[int, bool, int]:
    aead = AEADS[selector % 3]
    mac_only = bool(selector & 0x04)
    seq_size = 2 if selector & 0x08 else 0
    return aead, mac_only, seq_size


def record_level(selector: int, record: bytes) -> None:
    aead, mac_only, seq_size = _record_params(selector)
    key = KEY[: 16 if aead == 0x01 else 32]
    seq = selector >> 4
    common = dict(
        aead=aead,
        key=key,
        salt=SALT,
        sequence_number=seq,
        session_id=SESSION_ID,
        sequence_number_size=seq_size,
        mac_only=mac_only,
    )
    with contextlib.suppress(SessionError):
        open_record(record=record, **common)  # type: ignore[arg-type]
    app = record[:0x4000]
    sealed = seal_record(app_data=app, **common)  # type: ignore[arg-type]
    if open_record(record=sealed + record[:3], **common) != app:  # type: ignore[arg-type]
        raise ContractViolation("a sealed record does not open to its application data")


def session_level(selector: int, data: bytes) -> None:
    version = SESSION_VERSIONS[selector % len(SESSION_VERSIONS)]
    prefix = record_session(version)
    if prefix is None:
        return
    device = fuzz_device()
    template(prefix)  # made once; it stays connected to the device
    listeners = len(device.listeners)
    harness = snapshot(prefix)
    assert isinstance(harness, ConnectionHarness)
    try:
        _session_records(harness, prefix.keys, data)
    finally:
        harness.close()
        put_back_device_state(device)
    check_device_clean(device, listeners)


def _session_records(harness: ConnectionHarness, keys: SessionKeys, data: bytes) -> None:
    for record, force_id in split_messages(data):
        if force_id and len(record) >= 4:
            record = struct.pack("<I", keys.session_id) + record[4:]
        table = harness.responder.ctx.sessions
        alive = table is not None and table.get(keys.session_id) is not None
        authentic = False
        if alive:
            try:
                open_record(
                    aead=keys.aead,
                    key=keys.req_key,
                    salt=keys.req_iv,
                    sequence_number=harness.req_seq,
                    session_id=keys.session_id,
                    sequence_number_size=0,
                    record=record,
                    mac_only=keys.mac_only,
                )
                authentic = True
            except SessionError:
                pass
        harness.send_record(record)
        if authentic:
            harness.req_seq += 1
        elif alive and len(record) > 4 and record[:4] == struct.pack("<I", keys.session_id):
            table = harness.responder.ctx.sessions
            if table is not None and table.get(keys.session_id) is not None:
                raise ContractViolation(
                    f"a record that does not authenticate left session "
                    f"0x{keys.session_id:08X} open\n  record {record.hex()}"
                )


def TestOneInput(data: bytes) -> None:
    if len(data) < 2:
        return
    if data[0] % 2 == 0:
        record_level(data[1], data[2:])
    else:
        session_level(data[1], data[2:])


def corpus_inputs() -> Iterator[bytes]:
    """Seeds: records sealed with the fixed keys, and real records of recorded sessions."""
    for selector in (0x00, 0x01, 0x02, 0x05, 0x0A, 0x31):
        aead, mac_only, seq_size = _record_params(selector)
        record = seal_record(
            aead=aead,
            key=KEY[: 16 if aead == 0x01 else 32],
            salt=SALT,
            sequence_number=selector >> 4,
            session_id=SESSION_ID,
            sequence_number_size=seq_size,
            app_data=b"\x12\xe8\x00\x00",
            mac_only=mac_only,
        )
        yield bytes((0, selector)) + record
    from fuzz.make_corpus import in_session_requests

    for index, version in enumerate(SESSION_VERSIONS):
        prefix = record_session(version)
        if prefix is None:
            continue
        harness = ConnectionHarness(prefix)
        records = [harness.seal(m) for m in in_session_requests(version)]
        yield bytes((1, index)) + join_messages(records)
        yield bytes((1, index)) + join_messages([(records[0], True), (records[0][:-1], True)])


def main() -> None:
    import atheris

    log_to_sink()
    memoize_signatures()
    for version in SESSION_VERSIONS:
        prefix = record_session(version)
        if prefix is not None:
            template(prefix)
    settle_heap()
    warn_uninstrumented()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

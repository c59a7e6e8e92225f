"""The shipped profiles/provisioning.toml end to end: a device provisioned in the field.

Multi-key 1.3 connection, in a secure session: GET_KEY_PAIR_INFO of the spare key pair,
GET_CSR for it (ERROR ResetRequired with a CSRTrackingTag, the CSR after a device
reset), a test CA issues the certificate, SET_CERTIFICATE into the empty slot 1 (again
ResetRequired until a reset), then a new device on the same state directory serves the
chain and CHALLENGE on slot 1 verifies with the requester's own code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from emulator.codec.constants import BaseAsymAlgo, BaseHashAlgo, ErrorCode, RequesterCap
from emulator.connection import SpdmConnection
from emulator.device.model import Device
from emulator.device.store import DirectoryStore
from emulator.profiles import load_profile
from emulator.requester import Requester, RequesterConfig, SpdmErrorReply
from emulator.requester.identity import flow_for
from emulator.requester.provisioning import (
    get_csr,
    get_key_pair_info,
    set_certificate,
    spdm_cert_chain,
)
from emulator.requester.session import ConnectionChannel, open_session
from emulator.transport import get_binding
from tests.test_provisioning import TestCa

P384 = int(BaseAsymAlgo.ECDSA_P384)
SHA384 = int(BaseHashAlgo.SHA_384)
FLAGS = int(
    RequesterCap.CERT_CAP
    | RequesterCap.CHAL_CAP
    | RequesterCap.ENCRYPT_CAP
    | RequesterCap.MAC_CAP
    | RequesterCap.KEY_EX_CAP
    | RequesterCap.MULTI_KEY_CAP_NEG
)


async def connect(dev: Device) -> Requester:
    req = Requester(
        ConnectionChannel(SpdmConnection(dev, get_binding("doe"))),
        RequesterConfig(
            version=0x13, flags=FLAGS, base_asym=P384, base_hash=SHA384, multi_key_conn=True
        ),
    )
    await req.vca()
    return req


async def test_field_provisioning_of_slot_1(tmp_path: Path) -> None:
    ca = TestCa("field CA")
    profile = load_profile("provisioning")
    dev = Device.from_profile(profile, store=DirectoryStore(tmp_path / "state"))
    req = await connect(dev)
    assert req.neg.multi_key_rsp
    flow = flow_for(req)
    digests = await flow.get_digests()
    assert digests.key_pair_ids[0] == 1
    slot0 = await flow.get_certificate(0)
    s = await open_session(req, peer_chain=slot0.chain)
    sid = s.session_id

    spare = await get_key_pair_info(req, 2, session_id=sid)
    assert spare.total_key_pairs == 2 and spare.capabilities == 0x3F
    assert spare.assoc_cert_slot_mask == 0

    # GET_CSR: ResetRequired with a CSRTrackingTag, the CSR once the device was reset
    with pytest.raises(SpdmErrorReply) as err:
        await get_csr(req, key_pair_id=2, cert_model=1, session_id=sid)
    assert err.value.code == ErrorCode.ResetRequired and err.value.data == 1
    assert dev.reset()["csrs_ready"] == [1]
    csr = await get_csr(req, key_pair_id=2, cert_model=1, tracking_tag=1, session_id=sid)
    assert csr.public_key_der == dev.provisioning.key_pair(2).public_key_der()  # type: ignore[union-attr]
    org = csr.csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [a.value for a in org] == ["spdm-emulator field device"]

    # SET_CERTIFICATE of the CA's chain into slot 1 (in the session): ResetRequired too
    certs = ca.issue(csr.csr.public_key(), csr.csr.subject)
    with pytest.raises(SpdmErrorReply) as err:
        await set_certificate(req, 1, certs, key_pair_id=2, cert_model=1, session_id=sid)
    assert err.value.code == ErrorCode.ResetRequired
    assert dev.reset()["slots_installed"] == [1]

    # a restart: a new device of the profile on the same state directory
    again = Device.from_profile(
        load_profile("provisioning"), store=DirectoryStore(tmp_path / "state")
    )
    req2 = await connect(again)
    fresh = flow_for(req2, trusted_roots=[certs[0]])
    digests = await fresh.get_digests()
    assert digests.key_pair_ids[1] == 2
    assert digests.digests[1] == hashlib.sha384(spdm_cert_chain(req2, certs)).digest()
    got = await fresh.get_certificate(1)
    assert [c.public_bytes(serialization.Encoding.DER) for c in got.certs] == certs
    assert (await fresh.challenge(1)).slot == 1
    info = await get_key_pair_info(req2, 2)
    assert info.assoc_cert_slot_mask == 0x02

"""``spdm-emulator probe`` beyond VCA: authentication, measurements, Linux CMA mode.

:func:`probe_device` is what :mod:`emulator.cli`'s ``probe`` runs after VCA.  In the
default mode the probe authenticates the device as libspdm's requester would (digests,
slot 0's certificate chain, CHALLENGE with the signature verified) and reads the
measurements; ``--mode linux-cma`` runs the Linux PCI CMA requester's sequence
instead, so kernel developers learn before booting a guest whether the kernel
would accept the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emulator.codec.constants import MeasurementHashAlgo, ResponderCap
from emulator.errors import EmulatorError, RequesterError

#: The SAN the Linux CMA requester expects for QEMU's NVMe device.
QEMU_NVME_SAN = "Vendor=1b36:Device=0010:CC=010802:REV=02:SSVID=1af4:SSID=1100"
#: ``--mode`` choices: libspdm's requester sequence, or the Linux kernel's CMA one
MODES = ("spdm", "linux-cma")


def _read_roots(paths: Sequence[str]) -> list[bytes]:
    roots = []
    for name in paths:
        try:
            roots.append(Path(name).read_bytes())
        except OSError as exc:
            raise RequesterError(f"--root {name}: {exc.strerror}") from None
    return roots


async def probe_device(
    requester: Any,
    report: dict[str, Any],
    *,
    mode: str = "spdm",
    root_files: Sequence[str] = (),
    san: str | None = QEMU_NVME_SAN,
    no_auth: bool = False,
) -> None:
    """Authenticate the device after VCA and add what it showed to ``report``.

    ``mode`` ``spdm``: digests, slot certificate chain (checked against ``root_files``
    when given), CHALLENGE and measurements as the device's capabilities allow (none of
    them with ``no_auth``); ``linux-cma``: the Linux CMA sequence, trusting ``root_files``
    and expecting ``san``.  Sets ``ok`` False and ``error`` in ``report`` on a failure.
    """
    if not report.get("ok"):
        return
    roots = _read_roots(root_files)
    if mode == "linux-cma":
        from emulator.requester.linux_cma import authenticate_linux_cma

        if not roots:
            report.update(ok=False, error="--mode linux-cma needs --root (the trusted root)")
            return
        result = await authenticate_linux_cma(requester.channel, roots, san or None)
        report["linux_cma"] = result.as_dict()
        if not result.ok:
            report.update(ok=False, error="; ".join(result.log[-1:]) or "rejected")
        return
    if no_auth:
        return
    flags = requester.neg.rsp_flags
    try:
        if flags & ResponderCap.CERT_CAP:
            from emulator.requester.identity import flow_for

            flow = flow_for(requester, trusted_roots=roots or None)
            digests = await flow.get_digests()
            report["provisioned_slots"] = sorted(digests.digests)
            slot = min(digests.digests) if digests.digests else 0
            chain = await flow.get_certificate(slot)
            report["certificate"] = {
                "slot": slot,
                "subjects": [c.subject.rfc4514_string() for c in chain.certs],
                "chain_bytes": len(chain.chain),
                "trusted_root": bool(roots),
            }
            if flags & ResponderCap.CHAL_CAP:
                await flow.challenge(slot)
                report["challenge"] = "signature verified"
        if flags & (ResponderCap.MEAS_CAP_NO_SIG | ResponderCap.MEAS_CAP_SIG):
            from emulator.requester.measurements import get_all_measurements

            signed = bool(flags & ResponderCap.MEAS_CAP_SIG and flags & ResponderCap.CERT_CAP)
            blocks = await get_all_measurements(requester, signed=signed)
            algo = requester.neg.measurement_hash
            report["measurements"] = {
                "hash": MeasurementHashAlgo(algo).name if algo else "-",
                "signed": signed,
                "blocks": [
                    {"index": b.index, "type": b.value_type, "value": b.value.hex()} for b in blocks
                ],
            }
        if requester.version >= 0x13:
            await _probe_13(requester, report, flags)
    except EmulatorError as exc:
        report.update(ok=False, error=str(exc))


async def _probe_13(requester: Any, report: dict[str, Any], flags: int) -> None:
    """SPDM 1.3 extras the device offers: its key pairs, its measurement extension log
    (replayed against its hash-extended blocks) and its endpoint info (signed when it
    can sign and slot 0's chain was verified)."""
    if flags & ResponderCap.GET_KEY_PAIR_INFO_CAP:
        from emulator.requester.provisioning import get_key_pair_info

        first = await get_key_pair_info(requester, 1)
        pairs = [first] + [
            await get_key_pair_info(requester, n) for n in range(2, first.total_key_pairs + 1)
        ]
        report["key_pairs"] = [
            {
                "id": p.key_pair_id,
                "asym": f"0x{p.current_asym_algo:X}",
                "usage": f"0x{p.current_key_usage:04X}",
                "slots": f"0x{p.assoc_cert_slot_mask:02X}",
                "caps": f"0x{p.capabilities:02X}",
            }
            for p in pairs
        ]
    alg = requester.neg.algorithms
    if flags & ResponderCap.MEL_CAP and alg is not None and alg.mel_spec_sel:
        from emulator.requester.measurements import get_measurements
        from emulator.requester.mel import get_mel, replay

        mel = await get_mel(requester)
        checked = []
        for index in sorted({e.meas_index for e in mel.entries}):
            block = (await get_measurements(requester, index)).blocks[0]
            if block.value != replay(mel.entries, index, requester.neg.measurement_hash):
                raise RequesterError(f"MEL: block {index} does not replay from the log")
            checked.append(index)
        report["mel"] = {"entries": len(mel.entries), "bytes": len(mel.log), "replayed": checked}
    if flags & (ResponderCap.EP_INFO_CAP_NO_SIG | ResponderCap.EP_INFO_CAP_SIG):
        from emulator.requester.endpoint_info import get_endpoint_info

        flow = requester.identity_flow
        signed = bool(flags & ResponderCap.EP_INFO_CAP_SIG) and (
            flow is not None and 0 in flow.chains
        )
        ep = await get_endpoint_info(requester, signed=signed)
        report["endpoint_info"] = {
            "signed": signed,
            "identifiers": [
                {
                    "registry": i.registry_id,
                    "vendor_id": i.vendor_id.hex(),
                    "sub_ids": [s.hex() for s in i.sub_ids],
                }
                for i in ep.identifiers
            ],
        }

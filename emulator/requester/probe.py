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
    except EmulatorError as exc:
        report.update(ok=False, error=str(exc))

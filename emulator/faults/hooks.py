"""The one helper request families call to tell a lie on cue.

A fault rule ``do=lie:KIND`` that fires on an exchange puts the lie in
``r.family["faults.lies"]`` before the responder runs; a family module that can
tell that lie asks::

    from emulator.faults.hooks import lie
    if lie(r, "wrong_measurement"):
        value = bytes(b ^ 0xFF for b in value)   # sign the wrong value consistently

``lie`` returns True at most for the exchange the rule fired on, and marks the lie
as told so that the event (telemetry) records it.  Lies nobody asked for are
logged as not applicable.  Lies the engine tells by itself (bad_signature,
chain_digest_mismatch, reused_nonce) never reach this helper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emulator.faults.model import LieKind

#: r.family key of the lies wanted in the current exchange
LIES_KEY = "faults.lies"


@dataclass(slots=True)
class ActiveLies:
    """Lies wanted in the current exchange (kind -> rule id) and those told."""

    wanted: dict[LieKind, str] = field(default_factory=dict)
    told: set[LieKind] = field(default_factory=set)


def lie(r: Any, kind: LieKind | str) -> bool:
    """True when a fault asks the current exchange to tell ``kind`` (marks it told)."""
    family = getattr(r, "family", None)
    active = family.get(LIES_KEY) if isinstance(family, dict) else None
    if not isinstance(active, ActiveLies):
        return False
    k = kind if isinstance(kind, LieKind) else LieKind(kind)
    if k in active.wanted:
        active.told.add(k)
        return True
    return False

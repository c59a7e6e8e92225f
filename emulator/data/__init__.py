"""The shipped device profiles and test certificate chains, wherever the package is.

The repository keeps them at its top level (``profiles/``, ``certs/``).  A wheel carries
them as package data of ``emulator.data.profiles`` and ``emulator.data.certs`` (setup.py
maps those two packages onto the top-level directories), so an installed package has
``<site-packages>/emulator/data/{profiles,certs}``; an editable install or a checkout on
``PYTHONPATH`` has no such directory and uses the top-level ones.  Either way profiles
find their chains as ``../certs/...``, relative to the profile file.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

__all__ = ["shipped_dir"]

#: the checkout's top level (editable installs, PYTHONPATH=checkout)
_CHECKOUT = Path(__file__).resolve().parent.parent.parent


def shipped_dir(kind: Literal["profiles", "certs"]) -> Path:
    """The directory of the shipped profiles or certificate chains."""
    packaged = Path(str(files(__name__).joinpath(kind)))
    marker = "default.toml" if kind == "profiles" else "README.md"
    if (packaged / marker).is_file():
        return packaged
    return _CHECKOUT / kind

"""The platform-socket frame codec, where the server and its clients have always found it.

The codec itself lives in :mod:`emulator.transport.platform`: the frame is the wire every
platform-socket binding speaks, and bindings (the core) must not import the server.
"""

from __future__ import annotations

from emulator.transport.platform import *  # noqa: F403  (the same names)
from emulator.transport.platform import __all__ as __all__

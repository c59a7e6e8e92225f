"""The project's own exception types.

Everything that can go wrong because of *input* (a request, a socket frame, a
profile file, a command-line flag) is reported with one of these, never with a
bare ``ValueError`` or a traceback.  Fuzz targets treat any other exception as
a bug.
"""

from __future__ import annotations


class EmulatorError(Exception):
    """Base class of every error the emulator reports on purpose."""


class ProfileError(EmulatorError):
    """A device profile is invalid: the message names the file, field and problem."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}")


class CodecError(EmulatorError):
    """Bytes do not parse as the SPDM message layout they claim to be."""


class TransportError(EmulatorError):
    """A transport message (DOE data object, MCTP message) is malformed."""


class FrameError(EmulatorError):
    """A platform-socket frame is malformed (bad header, over the size limit...)."""


class CryptoError(EmulatorError):
    """A cryptographic operation failed (bad key, bad signature format...)."""


class SessionError(EmulatorError):
    """A DSP0277 secured message could not be decoded or authenticated."""


class RequesterError(EmulatorError):
    """The built-in requester found the responder's answer wrong or unverifiable."""


class StateError(EmulatorError):
    """The persisted device state (``--state-dir``) cannot be read, written or locked."""

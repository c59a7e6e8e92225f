"""Where a device's provisioned state lives between runs (``--state-dir``).

:class:`StateStore` is what :class:`~emulator.device.provisioning.Provisioning` writes
through (the app injects one, as it injects the clock): :class:`MemoryStore` forgets
everything with the process (``--ephemeral``, tests); :class:`DirectoryStore` keeps one
JSON document, ``state.json``, in a per-device directory:

* written atomically: a temporary file in the same directory, flushed and fsync'ed, then
  ``os.replace`` over the old one (and the directory fsync'ed), so a reader, another
  process or a crash sees the old document or the new one, never a part;
* one writer: the first write takes an exclusive ``flock`` on ``lock`` in the directory,
  held until the emulator stops; a second emulator writing the same directory (its
  provisioning request answers OperationFailed), or ``state reset`` while one holds it,
  is refused with a message naming the directory and the process.  Nothing is written,
  and no directory made, before something is provisioned.

The document holds certificate chains and the private keys the device generated (test
keys, PKCS#8 PEM, unencrypted: the directory is created mode 0700).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from emulator.errors import StateError

__all__ = ["STATE_FILE", "DirectoryStore", "MemoryStore", "StateStore", "default_state_dir"]

STATE_FILE = "state.json"
LOCK_FILE = "lock"


class StateStore(Protocol):
    """Persistence of one device's state document."""

    @property
    def location(self) -> str:
        """Where the state lives, for messages (a path, or ``memory``)."""
        ...

    def load(self) -> dict[str, Any] | None:
        """The stored document (None: nothing stored yet); StateError when unreadable."""
        ...

    def save(self, document: dict[str, Any]) -> None:
        """Replace the stored document atomically; StateError when that fails."""
        ...


class MemoryStore:
    """A store that lives as long as the process (``--ephemeral``)."""

    def __init__(self) -> None:
        self.document: dict[str, Any] | None = None
        self.saves = 0

    @property
    def location(self) -> str:
        return "memory (ephemeral)"

    def load(self) -> dict[str, Any] | None:
        return json.loads(json.dumps(self.document)) if self.document is not None else None

    def save(self, document: dict[str, Any]) -> None:
        self.document = json.loads(json.dumps(document))
        self.saves += 1


def default_state_dir(device_name: str, port: int) -> Path:
    """``$XDG_DATA_HOME/spdm-emulator/state/<device>-<port>`` (``~/.local/share`` when
    XDG_DATA_HOME is unset): one directory per emulated device and port."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "spdm-emulator" / "state" / f"{device_name}-{port}"


class DirectoryStore:
    """``state.json`` in ``path`` (module docstring); :meth:`lock` before serving."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def file(self) -> Path:
        return self.path / STATE_FILE

    # ---- the writer lock -------------------------------------------------------------

    def _ensure_dir(self) -> None:
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot create the state directory ({exc})") from None
        if not self.path.is_dir():
            raise StateError(f"{self.path}: not a directory")

    def lock(self) -> None:
        """Become the one writer of this directory (StateError if another process is)."""
        import fcntl

        self._ensure_dir()
        lock_path = self.path / LOCK_FILE
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"{lock_path}: cannot open ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise StateError(
                f"{self.path}: the state directory is in use by another emulator{who}; "
                "give this one its own --state-dir, or --ephemeral"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)
            self._lock_fd = None

    def locked_by_other(self) -> str | None:
        """The pid text of another process holding the lock, or None if it is free."""
        import fcntl

        lock_path = self.path / LOCK_FILE
        if self._lock_fd is not None or not lock_path.exists():
            return None
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return holder or "?"
        finally:
            os.close(fd)
        return None

    # ---- the document ----------------------------------------------------------------

    def load(self) -> dict[str, Any] | None:
        try:
            text = self.file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateError(f"{self.file}: cannot read ({exc})") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StateError(
                f"{self.file}: not valid JSON ({exc}); 'spdm-emulator state reset' clears it"
            ) from None
        if not isinstance(doc, dict):
            raise StateError(f"{self.file}: not a JSON object")
        return doc

    def save(self, document: dict[str, Any]) -> None:
        if self._lock_fd is None:
            self.lock()
        data = json.dumps(document, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        try:
            fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=self.path)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot write ({exc.strerror})") from None
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.file)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StateError(f"{self.file}: cannot write ({exc.strerror})") from None
        with contextlib.suppress(OSError):
            dfd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def clear(self) -> bool:
        """Delete the stored document (``state reset``); True if there was one."""
        try:
            self.file.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StateError(f"{self.file}: cannot delete ({exc.strerror})") from None
        return True

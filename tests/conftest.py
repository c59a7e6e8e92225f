"""Shared fixtures.  The repository root goes on sys.path so the tests also run from a
plain checkout (``python3 -m pytest``) without installing the package."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

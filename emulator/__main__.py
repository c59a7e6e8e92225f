"""``python -m emulator`` runs the ``spdm-emulator`` command."""

import sys

from emulator.cli import main

sys.exit(main())

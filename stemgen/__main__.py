"""``python -m stemgen`` runs the ``stemgen`` command."""

import sys

from .cli import main

sys.exit(main())

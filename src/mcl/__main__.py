"""``python -m mcl`` (also what ``torchrun -m mcl`` runs)."""

import sys

from mcl.cli import main

sys.exit(main())

"""``python -m mcl`` (also what ``torchrun -m mcl`` runs): :func:`mcl.cli.main`."""

import sys

from mcl.cli import main

sys.exit(main())

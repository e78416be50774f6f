"""Skip tests/zoo cleanly where the peer libraries are not installed (the default `make test` venv).

The zoo venv (`make install-zoo`) has lightly, open_clip and timm; elsewhere the modules here are not
collected at all, so `make test` neither imports a missing package nor pays for importing a present one.
"""

from __future__ import annotations

import importlib.util

ZOO_MODULES = ("lightly", "open_clip", "timm")
MISSING = [name for name in ZOO_MODULES if importlib.util.find_spec(name) is None]

# find_spec only looks the package up (no import), so this costs nothing in the default venv.
collect_ignore_glob = ["test_*.py"] if MISSING else []


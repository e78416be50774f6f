"""The names other layers need of the aligned stage 0 (the config value, the cache variable); imports nothing."""

from __future__ import annotations

# ``multimodal.stage0_checkpoint: aligned``: the cached aligned stage 0 of the packaged settings.
ALIGNED = "aligned"
# Where aligned models are cached (default ~/.cache/mcl).
CACHE_ENV = "MCL_CACHE_DIR"

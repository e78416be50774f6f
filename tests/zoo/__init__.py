"""Parity tests against peer libraries (lightly, open_clip, timm); run in the zoo venv with `make test-zoo`."""

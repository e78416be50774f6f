"""The examples under examples/ run as written (smoke settings), in the zoo environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_simclr_with_lightly_loss() -> None:
    pytest.importorskip("lightly")
    out = _run("simclr_lightly.py", "--stages", "2", "--epochs", "1", "--n-train", "512", "--batch-size", "64")
    assert "stage 2:" in out and "mcl-2 shape=" in out


def test_clip_finetuning_with_open_clip() -> None:
    pytest.importorskip("open_clip")
    out = _run("clip_openclip.py", "--tiny", "--stages", "2", "--epochs", "1", "--n-train", "256",
               "--batch-size", "32")
    assert "stage 2:" in out

"""A synthetic MMVP-VLM directory in the published layout, for tests (the real one cannot be downloaded here)."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from mcl.evaluation.mmvp import IMAGES_DIR, MMVP_CATEGORIES, QUESTIONS_FILE
from mcl.files import write_bytes


def write_mmvp_fixture(directory: str | os.PathLike, n_categories: int = 9, pairs_per_category: int = 15,
                       image_size: int = 32) -> Path:
    """Write a synthetic MMVP-VLM directory in the published layout (for tests and demos).

    Pair ``p`` of category ``c`` shows a red image (statement ``"the square is red"``) and a green
    image (``"the square is green"``); odd pairs swap the order. Categories take the real MMVP names.
    """
    root = Path(directory)
    colors = {"red": (220, 20, 20), "green": (20, 200, 20)}
    lines = ['"Question ID","Type","Statement"']
    qid = 1
    for c in range(n_categories):
        category = MMVP_CATEGORIES[c] if c < len(MMVP_CATEGORIES) else f"Category {c + 1}"
        folder = root / IMAGES_DIR / category
        folder.mkdir(parents=True, exist_ok=True)
        for p in range(pairs_per_category):
            for name in (("red", "green") if p % 2 == 0 else ("green", "red")):
                Image.new("RGB", (image_size, image_size), colors[name]).save(folder / f"{qid}.jpg")
                lines.append(f'{qid},"{category}","the square is {name}"')
                qid += 1
    write_bytes(root / QUESTIONS_FILE, ("\n".join(lines) + "\n").encode())
    return root

"""The captioned sets of the issue-22 benchmark: rare-mention variants change captions only."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import captioned_sets  # noqa: E402


def _names_edge(caption: str, edge: str) -> bool:
    return "bar" in caption and edge in caption


def test_rare_mentions_keep_the_images_and_name_the_blind_attribute_in_about_one_caption_in_five():
    images, columns, captions = captioned_sets.SETS["shapes-bar"](400, 100, 16, 3)
    rare_images, rare_columns, rare_captions = captioned_sets.SETS["shapes-bar-rare"](400, 100, 16, 3)
    assert np.array_equal(images, rare_images) and columns == rare_columns
    assert all(_names_edge(c, e) for c, e in zip(captions, columns["edge"], strict=True))
    named = np.mean([_names_edge(c, e) for c, e in zip(rare_captions, columns["edge"], strict=True)])
    assert abs(named - captioned_sets.RARE_MENTION) < 0.06  # 500 draws: sd 0.018
    # Every caption still names the attributes stage 0 knows.
    assert all(s in c and k in c for c, s, k in zip(rare_captions, columns["shape"], columns["color"], strict=True))
    assert captioned_sets.BLIND["shapes-bar-rare"] == "edge"

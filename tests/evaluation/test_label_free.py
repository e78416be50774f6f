"""Evaluation without labels: label-free rows for image runs, retrieval-only rows for caption-only shards."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mcl
from data.shards import write_tar
from mcl.api import evaluate as evaluate_run
from mcl.data.table import write_table
from mcl.evaluation.tables import format_tables

IMAGE_RUN = {
    "model": {"backbone": "convnet", "width": 0.25, "projection_dim": 8, "hidden_dim": 16},
    "train": {"epochs": 1, "batch_size": 16, "threads": 1},
    "mcl": {"stages": 2, "clusters": 2, "min_group_size": 4, "kmeans_restarts": 1},
    "eval": {"ensemble": False, "view_images": 20},
}
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220)}


def _images(n: int, size: int = 12) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    names = [list(COLOURS)[i % 3] for i in range(n)]
    base = np.array([COLOURS[name] for name in names])[:, None, None, :]
    noise = rng.integers(-30, 30, (n, size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8), names


def test_an_image_run_on_data_without_attributes_gets_label_free_rows(tmp_path: Path) -> None:
    images, _ = _images(48)
    data = write_table(tmp_path / "plain", images, {}, split=["train"] * 48)
    mcl.train({**IMAGE_RUN, "data": {"source": "table", "path": str(data), "image_size": 12}}, out=tmp_path / "run",
              progress=False)
    result = evaluate_run(tmp_path / "run", progress=False)
    rows = result["rows"]
    assert {r["representation"] for r in rows} == {"stage-1", "stage-2", "mcl-2"}
    assert {r["probe"] for r in rows} == {"alignment", "uniformity", "knn-agreement", "view-match@1"}
    values = {(r["representation"], r["probe"]): r["accuracy"] for r in rows}
    assert 0 <= values[("mcl-2", "knn-agreement")] <= 1 and 0 <= values[("mcl-2", "view-match@1")] <= 1
    assert 0 <= values[("stage-1", "alignment")] <= 4 and values[("stage-1", "uniformity")] <= 0
    assert "label-free" in format_tables(result)
    off = {**IMAGE_RUN, "eval": {**IMAGE_RUN["eval"], "view_images": 0}}
    mcl.train({**off, "data": {"source": "table", "path": str(data), "image_size": 12}}, out=tmp_path / "run",
              progress=False)  # eval keys are not part of the run's identity


def caption_shards(directory: Path, n: int = 64, size: int = 16) -> Path:
    """``KEY.jpg`` + ``KEY.txt`` pairs in two tar shards: no json, no split, no attributes."""
    images, names = _images(n, size)
    directory.mkdir(parents=True)
    for shard in range(2):
        members = []
        for i in range(shard * n // 2, (shard + 1) * n // 2):
            buffer = io.BytesIO()
            Image.fromarray(images[i]).save(buffer, format="JPEG", quality=95)
            members += [(f"{i:05d}.jpg", buffer.getvalue()), (f"{i:05d}.txt", f"a {names[i]} photo".encode())]
        write_tar(directory / f"shard-{shard:06d}.tar", members)
    return directory


CLIP_RUN = {
    "objective": {"name": "clip"},
    "augment": {"color_jitter": 0.0, "crop_scale": [0.8, 1.0]},
    "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "warmup_epochs": 0, "threads": 1},
    "mcl": {"stages": 2, "clusters": 2, "min_group_size": 4, "kmeans_restarts": 1},
    "eval": {"ensemble": False, "finetune_baseline": True, "paired_pairs": 0, "clip_blind_pairs": 0},
    "multimodal": {"enabled": True, "embed_dim": 8, "image_width": 0.25, "text_width": 16, "text_layers": 1,
                   "text_heads": 2, "context_length": 8, "stage0": True},
}


def test_caption_only_shards_train_and_evaluate_with_retrieval_rows(tmp_path: Path) -> None:
    shards = caption_shards(tmp_path / "shards")
    config = {**CLIP_RUN, "data": {"source": "table", "path": str(shards), "image_size": 16, "test_fraction": 0.25}}
    mcl.train(config, out=tmp_path / "run", progress=False)
    result = evaluate_run(tmp_path / "run", progress=False)
    assert result["test_rows"] >= 1 and result["train_rows"] + result["test_rows"] == 64
    rows = result["rows"]
    assert {r["representation"] for r in rows} == {"stage-0", "stage-1", "stage-2", "mcl-2", "finetune-1",
                                                    "finetune-2"}
    assert {r["probe"] for r in rows} == {f"retrieval-{d}@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}
    assert all(0 <= r["accuracy"] <= 1 for r in rows)


def test_with_attributes_zero_turns_the_paired_and_clip_blind_probes_off(tmp_path: Path) -> None:
    config = {**CLIP_RUN, "data": {"source": "captioned-trifeature", "image_size": 16, "n_train": 48, "n_test": 24},
              "eval": {**CLIP_RUN["eval"], "finetune_baseline": False, "linear_max_iter": 20}}
    mcl.train(config, out=tmp_path / "run", progress=False)
    probes = {r["probe"] for r in evaluate_run(tmp_path / "run", progress=False)["rows"]}
    assert "paired" not in probes and "clip-blind" not in probes
    assert {"zeroshot", "linear", "retrieval-i2t@1"} <= probes


@pytest.mark.slow
def test_the_multimodal_recipe_on_caption_only_shards(tmp_path: Path, tiny_aligned_stage0: list[str]) -> None:
    from mcl.cli import main

    shards = caption_shards(tmp_path / "shards", size=16)
    sets = [*tiny_aligned_stage0, "data.image_size=16", "train.epochs=1", "train.batch_size=16", "mcl.clusters=2",
            "mcl.min_group_size=4", "mcl.kmeans_restarts=1", "train.threads=1", "data.test_fraction=0.25",
            "mcl.allow_single_group=true"]  # the tiny aligned stage 0 may put nearly every image in one cluster
    args = [part for key in sets for part in ("--set", key)]
    assert main(["train", "configs/multimodal.yaml", "--data", str(shards), "--out", str(tmp_path / "run"),
                 "--quiet", *args]) == 0
    assert main(["eval", str(tmp_path / "run"), "--quiet"]) == 0
    rows = __import__("json").loads((tmp_path / "run" / "eval.json").read_text())["rows"]
    names = {r["representation"] for r in rows if r["probe"].startswith("retrieval-")}
    assert {"stage-0", "stage-1", "stage-2", "finetune-1", "finetune-2"} <= names

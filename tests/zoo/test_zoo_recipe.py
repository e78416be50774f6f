"""The paper's multimodal recipe (``configs/multimodal.yaml``) end to end on third-party towers.

``mcl.train`` + ``mcl.evaluate`` of the recipe, made tiny by overrides, on the models real users bring:
an open_clip ViT named by a registered config (random init, and from a local checkpoint file saved in
open_clip's own format) and a Hugging Face ``CLIPModel`` read from a directory. Checked: every
representation the recipe reports is scored, the locks hold (text tower and locked image groups
bit for bit stage 0's in stage 2 and finetune-2, an unlocked image parameter moved) and finetune-k
takes the optimiser steps of stages 1..k. Every model is tiny and random; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import mcl
from mcl.files import read_jsonl
from mcl.run import RunDirectory
from mcl.stages import stage_steps

torch.set_num_threads(1)

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "multimodal.yaml"
TINY = ["data.n_train=64", "data.n_test=40", "data.image_size=16", "train.epochs=1", "train.batch_size=16",
        "train.threads=1", "train.warmup_steps=1", "mcl.clusters=2", "mcl.min_group_size=4", "mcl.kmeans_restarts=1",
        "eval.paired_pairs=10", "eval.clip_blind_pairs=5", "eval.linear_max_iter=50",
        "multimodal.stage0_checkpoint=", "multimodal.image_resolution="]  # empty value: null
MEMBERS = {"stage-0", "stage-1", "stage-2", "mcl-2", "finetune-1", "finetune-2"}


@dataclass(frozen=True)
class Towers:
    """Which parameters (state-dict prefixes of the adapter) the recipe's locks must keep or let train."""

    text: tuple[str, ...]  # the whole text tower (multimodal.lock_text, no unlocked groups)
    image: tuple[str, ...]  # the image tower
    unlocked_image: tuple[str, ...]  # its last unlocked_image_groups=2 groups


# open_clip ViT groups: [conv1, class/pos embedding, ln_pre], resblocks[:-1], [resblocks[-1], ln_post], proj
OPEN_CLIP = Towers(text=("model.token_embedding.", "model.positional_embedding", "model.transformer.",
                         "model.ln_final.", "model.text_projection"),
                   image=("model.visual.",),
                   unlocked_image=("model.visual.transformer.resblocks.1.", "model.visual.ln_post.",
                                   "model.visual.proj"))
# HFCLIPAdapter groups: [embeddings, pre_layrnorm], each layer, [post_layernorm, visual_projection]
HF_CLIP = Towers(text=("model.text_model.", "model.text_projection."),
                 image=("model.vision_model.", "model.visual_projection."),
                 unlocked_image=("model.vision_model.encoder.layers.1.", "model.vision_model.post_layernorm.",
                                 "model.visual_projection."))


@pytest.fixture(scope="module")
def open_clip() -> Iterator[object]:  # the module, with a tiny ViT config registered
    open_clip = pytest.importorskip("open_clip")
    text = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,
                                              "patch_size": 8}, "text_cfg": text}
    open_clip.factory._MODEL_CONFIGS["mcl-tiny-recipe-vit"] = config
    yield open_clip
    open_clip.factory._MODEL_CONFIGS.pop("mcl-tiny-recipe-vit", None)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated captioned-trifeature-marked table for every run (the first run writes it)."""
    return tmp_path_factory.mktemp("recipe") / "data"


def _run_recipe(run_dir: Path, data: Path, model: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Train + evaluate the tiny recipe, check its rows and step budgets; the state dicts of three members."""
    mcl.train(RECIPE, out=run_dir, overrides=[*TINY, f"data.path={data}", *model], progress=False)
    rows = mcl.evaluate(run_dir, progress=False)["rows"]
    assert {row["representation"] for row in rows} >= MEMBERS
    run = RunDirectory(run_dir)
    # finetune-k continues finetune-(k-1) for as many optimiser steps as stage k took: finetune-2 has had 1+2's
    finetune = [sum(record["steps"] for record in read_jsonl(run_dir / f"finetune-{k}" / "metrics.jsonl"))
                for k in (1, 2)]
    stages = [stage_steps(run, k) for k in (1, 2)]
    assert finetune == stages and min(stages) > 0
    return {name: mcl.load_member(run_dir, name).state_dict() for name in ("stage-0", "stage-2", "finetune-2")}


def _check_locks(states: dict[str, dict[str, torch.Tensor]], towers: Towers) -> None:
    """Text tower and locked image groups equal stage 0's after stage 2 and finetune-2; an unlocked one moved.

    Only the unlocked image groups and the temperature (``logit_scale``) may differ from stage 0.
    """
    start = states["stage-0"]
    text = [name for name in start if name.startswith(towers.text)]
    image = [name for name in start if name.startswith(towers.image)]
    unlocked = [name for name in image if name.startswith(towers.unlocked_image)]
    locked = [name for name in image if name not in unlocked]
    assert text and locked and unlocked
    for member in ("stage-2", "finetune-2"):
        state = states[member]
        changed = {name for name in start if not torch.equal(state[name], start[name])}
        moved_locked = changed & {*text, *locked}
        assert not moved_locked, f"{member}: locked parameters changed: {sorted(moved_locked)}"
        assert changed <= {*unlocked, "model.logit_scale"}, sorted(changed - {*unlocked})
        assert changed & set(unlocked), f"{member}: no unlocked image parameter changed"


def test_recipe_on_open_clip_vit_random_init(open_clip, data_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    model = ["multimodal.model=open_clip", "multimodal.arch=mcl-tiny-recipe-vit", "multimodal.embed_dim=16",
             "multimodal.context_length=16"]
    states = _run_recipe(tmp_path / "run", data_dir, model)
    _check_locks(states, OPEN_CLIP)


def test_recipe_on_open_clip_vit_from_a_local_checkpoint(open_clip, data_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    torch.manual_seed(1)
    source = open_clip.create_model("mcl-tiny-recipe-vit")
    checkpoint = tmp_path / "epoch_1.pt"  # what open_clip's training script saves
    torch.save({"epoch": 1, "name": "tiny", "state_dict": source.state_dict()}, checkpoint)
    states = _run_recipe(tmp_path / "run", data_dir, ["multimodal.model=open_clip:mcl-tiny-recipe-vit",
                                                      f"multimodal.pretrained={checkpoint}", "multimodal.embed_dim=16",
                                                      "multimodal.context_length=16"])
    for name, value in source.state_dict().items():  # stage 0 is the checkpoint
        assert torch.equal(states["stage-0"][f"model.{name}"], value), name
    _check_locks(states, OPEN_CLIP)


def test_recipe_on_hf_clip_from_a_directory(data_dir: Path, tmp_path: Path, tiny_hf_clip_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    checkpoint = tiny_hf_clip_dir
    states = _run_recipe(tmp_path / "run", data_dir, ["multimodal.model=hf-clip", f"multimodal.pretrained={checkpoint}",
                                                      "multimodal.embed_dim=8", "multimodal.context_length=24"])
    for name, value in transformers.CLIPModel.from_pretrained(checkpoint).state_dict().items():  # stage 0: the files
        assert torch.equal(states["stage-0"][f"model.{name}"], value), name
    _check_locks(states, HF_CLIP)

"""Multimodal evaluation: a tiny 2-stage CLIP run trained with mcl.train, scored through evaluate_run."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import mcl
from evaluation.mmvp_fixture import write_mmvp_fixture
from mcl.api import evaluate as evaluate_run
from mcl.api import load_member, load_table_for, read_run_config
from mcl.cli.mmvp import run as cmd_eval_mmvp
from mcl.evaluation.clip_blind import score_clip_blind
from mcl.evaluation.mmvp import load_mmvp, score_mmvp
from mcl.evaluation.multimodal_runner import (
    clip_blind_pairs,
    paired_benchmarks,
    row,
    score_representation,
    two_tower_representations,
)
from mcl.evaluation.tables import compare
from mcl.evaluation.zeroshot import zeroshot_attributes
from mcl.files import read_json
from mcl.modalities import IMAGE_TEXT
from mcl.modalities.image_text.multistage import MultistageTwoTower
from mcl.run import RunDirectory

format_tables = IMAGE_TEXT.format_results  # the multimodal tables (moved from multimodal_runner)

pytestmark = pytest.mark.slow

TINY = {
    "data": {"source": "captioned-trifeature", "image_size": 16, "n_train": 64, "n_test": 40},
    "objective": {"name": "clip"},
    "augment": {"color_jitter": 0.0, "crop_scale": [0.8, 1.0]},
    "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "warmup_epochs": 0},
    "mcl": {"stages": 2, "clusters": 3, "min_group_size": 4, "kmeans_restarts": 1},
    "eval": {"ensemble": True, "paired_pairs": 10, "linear_max_iter": 50},
    "multimodal": {"enabled": True, "embed_dim": 8, "image_width": 0.25, "text_width": 16, "text_layers": 1,
                   "text_heads": 2, "context_length": 12, "stage0": True,
                   "caption_drop_prob": {"texture": 0.5}},
}
# The same tiny run through the demo's shipped config.
TINY_OVERRIDES = ["data.image_size=16", "data.n_train=64", "data.n_test=40", "train.epochs=1",
                  "train.batch_size=16", "mcl.stages=2", "mcl.clusters=3", "mcl.min_group_size=4",
                  "mcl.kmeans_restarts=1", "eval.ensemble=false", "multimodal.embed_dim=8",
                  "multimodal.image_width=0.25", "multimodal.text_width=16", "eval.paired_pairs=10",
                  "eval.linear_max_iter=50"]
REPRESENTATIONS = ["stage-0", "stage-1", "stage-2", "mcl-2", "ensemble-2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clip") / "run"
    mcl.train(TINY, out=out, progress=False)
    return out


@pytest.fixture(scope="module")
def result(run_dir: Path) -> dict:
    return evaluate_run(run_dir, progress=False)


def test_eval_json_rows_for_every_representation_and_probe(run_dir: Path, result: dict) -> None:
    assert read_json(run_dir / "eval.json") == result
    assert result["kind"] == "multimodal" and result["test_rows"] == 40
    rows = result["rows"]
    assert list(dict.fromkeys(r["representation"] for r in rows)) == REPRESENTATIONS
    assert all(set(r) == {"representation", "attribute", "probe", "accuracy"} for r in rows)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    for name in REPRESENTATIONS:
        mine = {(r["probe"], r["attribute"]) for r in rows if r["representation"] == name}
        for probe in ("zeroshot", "paired", "linear"):
            assert {a for p, a in mine if p == probe} == {"shape", "texture", "color"}
        assert {p for p, a in mine if a == "caption"} == {"retrieval-i2t@1", "retrieval-t2i@1", "retrieval-i2t@5",
                                                          "retrieval-t2i@5", "retrieval-i2t@10",
                                                          "retrieval-t2i@10"}


def test_rows_are_the_scores_of_the_loaded_models(run_dir: Path, result: dict) -> None:
    config = read_run_config(run_dir)
    test = load_table_for(config, progress=False).subset("test")
    stage2 = zeroshot_attributes(load_member(run_dir, "stage-2", config), test)
    integrated = mcl.load(run_dir)
    assert isinstance(integrated, MultistageTwoTower) and integrated.members == [1, 2]
    assert integrated.member(0) is not None  # stage 0 is loaded too, though not integrated by default
    mcl2 = zeroshot_attributes(integrated, test)
    for name, expected in (("stage-2", stage2), ("mcl-2", mcl2)):
        got = {r["attribute"]: r["accuracy"] for r in result["rows"]
               if r["representation"] == name and r["probe"] == "zeroshot"}
        assert got == pytest.approx(expected)
    assert integrated.embed(test.images[:3]).shape == (3, 16)


def test_rows_equal_encoding_each_representation_directly(run_dir: Path, result: dict) -> None:
    """eval.json reuses each member's embeddings; encoding every representation's model anew gives the same rows."""
    config = read_run_config(run_dir)
    table = load_table_for(config, progress=False)
    train, test = table.subset("train"), table.subset("test")
    models = two_tower_representations(RunDirectory(run_dir), config, lambda m: load_member(run_dir, m, config))
    benchmarks = paired_benchmarks(test, config)
    blind = clip_blind_pairs(models, test, config)  # mined on stage 0's own encoding
    rows = []
    for name, model in models.items():
        rows += score_representation(name, model, train, test, config, benchmarks)
        rows += [row(name, a, "clip-blind", v) for a, v in score_clip_blind(model, test, blind).items() if v == v]
    assert {r["probe"] for r in rows} >= {"zeroshot", "paired", "linear", "clip-blind", "retrieval-t2i@5"}
    assert rows == result["rows"]


def test_tables_and_comparison(result: dict) -> None:
    text = format_tables(result)
    for header in ("zeroshot probe", "paired probe", "linear probe", "retrieval probe", "i2t@1"):
        assert header in text
    lines = compare(result, "zeroshot", "stage-1", "mcl-2").splitlines()
    assert lines[0] == "zeroshot: stage-1 -> mcl-2" and len(lines) == 4


def test_eval_mmvp_writes_rows(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mmvp = write_mmvp_fixture(tmp_path / "mmvp", n_categories=2, pairs_per_category=2, image_size=16)
    cmd_eval_mmvp(argparse.Namespace(run_dir=str(run_dir), mmvp=str(mmvp), image_size=None))
    rows = read_json(run_dir / "mmvp.json")["rows"]
    assert {r["representation"] for r in rows} == set(REPRESENTATIONS)
    config = read_run_config(run_dir)  # members' embeddings reused: the scores of each model encoding anew
    models = two_tower_representations(RunDirectory(run_dir), config, lambda m: load_member(run_dir, m, config))
    benchmark = load_mmvp(mmvp, image_size=config.data.image_size)
    for name, model in models.items():
        direct = score_mmvp(model, benchmark)
        assert {r["attribute"]: r["accuracy"] for r in rows if r["representation"] == name} == {
            **direct["categories"], "average": direct["average"]}
    assert {r["attribute"] for r in rows} == {"Orientation and Direction", "Presence of Specific Features", "average"}
    assert "mmvp probe" in capsys.readouterr().out



def test_eval_zeroshot_prompts_replace_the_prompts_of_an_attribute(run_dir: Path) -> None:
    config = read_run_config(run_dir)
    table = load_table_for(config, progress=False)
    model = two_tower_representations(RunDirectory(run_dir), config, lambda m: load_member(run_dir, m))["stage-1"]
    prompts = {"shape": ["a drawing of a {shape}", "{value}"]}
    expected = zeroshot_attributes(model, table.subset("test"), ["shape"], templates=prompts)["shape"]
    overridden = evaluate_run(run_dir, progress=False, overrides=["eval.zeroshot_prompts={shape: ['a drawing of a "
                                                                    "{shape}', '{value}']}", "eval.linear_max_iter=0"])
    assert not [r for r in overridden["rows"] if r["probe"] == "linear"]  # 0: the linear probe is off
    got = [r["accuracy"] for r in overridden["rows"]
           if r["representation"] == "stage-1" and r["probe"] == "zeroshot" and r["attribute"] == "shape"]
    assert got == [pytest.approx(expected)]

"""``mcl demo`` (both modes) ends with the time of every phase and the total."""

import json

import pytest

from mcl.cli import main

TINY = ["data.n_train=64", "data.n_test=32", "data.image_size=16", "train.epochs=1", "train.batch_size=32",
        "mcl.stages=2", "mcl.clusters=2", "mcl.min_group_size=4", "mcl.kmeans_restarts=1", "eval.ensemble=false",
        "eval.linear_max_iter=50"]
UNIMODAL = ["model.width=0.25", "model.hidden_dim=32", "model.projection_dim=16"]
MULTIMODAL = ["eval.paired_pairs=10", "eval.clip_blind_pairs=5", "train.warmup_steps=1"]


def phase_table(out: str) -> dict[str, float]:
    lines = out[out.index("time per phase:"):].splitlines()[1:]
    table = {}
    for line in lines:
        if not line.startswith("  "):
            break
        label, seconds, unit = line.strip().rsplit(maxsplit=2)
        assert unit == "s"
        table[label] = float(seconds)
    return table


@pytest.mark.slow
@pytest.mark.parametrize(("flags", "overrides", "headline"), [
    ([], UNIMODAL, "linear: stage-1 -> mcl-2"),
    (["--multimodal"], MULTIMODAL, "zeroshot: finetune-2 -> mcl-2"),
])
def test_demo_prints_phase_times(tmp_path, capsys, request, flags, overrides, headline):
    if flags:  # the recipe: fine-tune a (tiny) aligned stage 0 beside the finetune-k baseline
        overrides = overrides + request.getfixturevalue("tiny_aligned_stage0")
    sets = [arg for key in TINY + overrides for arg in ("--set", key)]
    assert main(["demo", *flags, "--out", str(tmp_path / "demo"), "--quiet", *sets]) == 0
    out = capsys.readouterr().out
    assert headline in out and "demo finished" in out
    table = phase_table(out)
    for label in ("data generation", "stage-1 train", "stage-1 embed", "stage-1 cluster", "stage-2 train",
                  "evaluation", "report", "other", "total"):
        assert label in table, f"{label} missing from {list(table)}"
    assert list(table)[-1] == "total"
    assert table["total"] == pytest.approx(sum(v for k, v in table.items() if k != "total"), abs=0.1 * len(table))
    assert (tmp_path / "demo" / "eval.json").exists() and (tmp_path / "demo" / "report" / "report.html").exists()
    if flags:  # the recipe's rows: every representation the issue names, the mark among the attributes
        rows = json.loads((tmp_path / "demo" / "eval.json").read_text())["rows"]
        assert {"stage-0", "stage-2", "mcl-2", "finetune-2"} <= {r["representation"] for r in rows}
        # 32 test images: too few for pairs that differ in exactly one of four attributes (paired, clip-blind rows)
        assert {"zeroshot", "linear"} <= {r["probe"] for r in rows}
        assert "mark" in {r["attribute"] for r in rows} and "zeroshot: stage-0 -> mcl-2" in out

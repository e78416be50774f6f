"""``mcl demo`` (both modes) ends with the time of every phase and the total."""

import pytest

from mcl.cli import main

TINY = ["data.n_train=64", "data.n_test=32", "data.image_size=16", "train.epochs=1", "train.batch_size=32",
        "mcl.stages=2", "mcl.clusters=2", "mcl.min_group_size=4", "mcl.kmeans_restarts=1", "eval.ensemble=false",
        "eval.linear_max_iter=50"]
UNIMODAL = ["model.width=0.25", "model.hidden_dim=32", "model.projection_dim=16"]
MULTIMODAL = ["multimodal.embed_dim=8", "multimodal.image_width=0.25", "multimodal.text_width=16",
              "eval.paired_pairs=10"]


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
    (["--multimodal"], MULTIMODAL, "zeroshot: stage-1 -> mcl-2"),
])
def test_demo_prints_phase_times(tmp_path, capsys, flags, overrides, headline):
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

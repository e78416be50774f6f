import argparse
import json

import numpy as np
import pytest

from mcl.cli import cluster, main
from mcl.clustering import kmeans
from mcl.errors import ConfigError, DataError
from mcl.files import load_arrays
from mcl.pseudolabels import combine_cluster_labels, group_centroids, merge_small_groups


def _run(*argv):
    parser = argparse.ArgumentParser(prog="mcl")
    cluster.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["cluster", *map(str, argv)])
    assert args.func is cluster.run
    args.func(args)


def _embeddings(tmp_path, name, seed, n=240, dim=8, dtype=np.float32):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, dim)) * 3
    points = (centres[rng.integers(0, 6, n)] + rng.normal(size=(n, dim))).astype(dtype)
    path = tmp_path / name
    np.save(path, points)
    return path, points


def test_two_stages_match_combine_and_merge(tmp_path, capsys):
    first, x1 = _embeddings(tmp_path, "s1.npy", 0)
    second, x2 = _embeddings(tmp_path, "s2.npy", 1, dim=5, dtype=np.float64)
    _run("--embeddings", first, "--clusters", 4, "--seed", 3, "--min-group-size", 15, "--out", tmp_path / "c1")
    _run("--embeddings", second, "--clusters", 5, "--seed", 4, "--min-group-size", 15, "--previous", tmp_path / "c1",
         "--out", tmp_path / "c2")
    assert "stage 2: 240 samples in 5 clusters" in capsys.readouterr().out

    k1 = kmeans(x1, 4, seed=3)
    k2 = kmeans(x2.astype(np.float32), 5, seed=4)
    stage1 = {name: np.load(tmp_path / "c1" / f"{name}.npy") for name in ("cluster_labels", "pseudo_labels")}
    assert np.array_equal(stage1["cluster_labels"], k1.labels)
    combined1 = combine_cluster_labels([k1.labels], 4)
    expected1 = merge_small_groups(combined1, group_centroids([k1.labels], [k1.centroids], combined1), 15)[0]
    assert np.array_equal(stage1["pseudo_labels"], expected1)

    out = tmp_path / "c2"
    labels, pseudo = np.load(out / "cluster_labels.npy"), np.load(out / "pseudo_labels.npy")
    assert labels.dtype == np.int64 and pseudo.dtype == np.int64
    assert np.array_equal(labels, k2.labels)
    assert np.array_equal(np.load(out / "centroids.npy"), k2.centroids)
    combined = combine_cluster_labels([k1.labels, k2.labels], [4, 5])
    centroids = group_centroids([k1.labels, k2.labels], [k1.centroids, k2.centroids], combined)
    expected, merged = merge_small_groups(combined, centroids, 15)
    assert np.array_equal(pseudo, expected)
    stages = load_arrays(out / "stages.safetensors")
    assert sorted(stages) == ["centroids_1", "centroids_2", "labels_1", "labels_2"]
    summary = json.loads((out / "cluster.json").read_text())
    assert summary["stage"] == 2 and summary["pseudo_labels"]["groups_merged"] == merged
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary files left behind"


def test_without_previous_pseudo_labels_are_this_stages_clusters(tmp_path):
    path, _ = _embeddings(tmp_path, "x.npy", 2)
    _run("--embeddings", path, "--clusters", 3, "--min-group-size", 2, "--out", tmp_path / "o")
    assert np.array_equal(np.load(tmp_path / "o" / "pseudo_labels.npy"), np.load(tmp_path / "o" / "cluster_labels.npy"))


def _bad(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array, allow_pickle=True)
    return path


@pytest.mark.parametrize(("make", "match"), [
    (lambda t: _bad(t, "a.npy", np.zeros(10, np.float32)), "expected a non-empty 2-D"),
    (lambda t: _bad(t, "a.npy", np.zeros((10, 2), np.int64)), "expected floats"),
    (lambda t: _bad(t, "a.npy", np.array([[0.0, 1.0], [np.nan, 0.0]] * 5)), "row 1 holds NaN"),
    (lambda t: _bad(t, "a.npy", np.array([{"x": 1}] * 3, dtype=object)), "not a readable .npy"),
    (lambda t: t / "missing.npy", "file not found"),
])
def test_bad_embeddings_are_one_line_data_errors(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(DataError, match=match) as error:
        _run("--embeddings", path, "--clusters", 2, "--out", tmp_path / "o")
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "o").exists()


def test_previous_with_other_n_is_an_error(tmp_path):
    small, _ = _embeddings(tmp_path, "small.npy", 0, n=100)
    large, _ = _embeddings(tmp_path, "large.npy", 1, n=120)
    _run("--embeddings", small, "--clusters", 3, "--out", tmp_path / "c1")
    with pytest.raises(DataError, match="120 rows, but --previous .* clustered 100 samples"):
        _run("--embeddings", large, "--clusters", 3, "--previous", tmp_path / "c1", "--out", tmp_path / "c2")
    with pytest.raises(DataError, match="stages.safetensors: file not found"):
        _run("--embeddings", large, "--clusters", 3, "--previous", tmp_path, "--out", tmp_path / "c2")


def test_bad_cluster_counts(tmp_path):
    path, _ = _embeddings(tmp_path, "x.npy", 0, n=20)
    with pytest.raises(ConfigError, match="--clusters: expected an integer >= 2"):
        _run("--embeddings", path, "--clusters", 1, "--out", tmp_path / "o")
    with pytest.raises(DataError, match="20 rows, fewer than --clusters 30"):
        _run("--embeddings", path, "--clusters", 30, "--out", tmp_path / "o")


def test_mcl_main_runs_cluster_and_reports_bad_input_in_one_line(tmp_path, capsys):
    path, _ = _embeddings(tmp_path, "x.npy", 0)
    assert main(["cluster", "--embeddings", str(path), "--clusters", "3", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "pseudo_labels.npy").exists()
    bad = _bad(tmp_path, "bad.npy", np.zeros((5, 2), np.int32))
    capsys.readouterr()
    assert main(["cluster", "--embeddings", str(bad), "--clusters", "2", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}: dtype int32; expected floats" in err

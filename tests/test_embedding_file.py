"""Each stage's embeddings go to stage-s/embeddings.npy chunk by chunk: exact rows, atomic, recorded, reused on resume.

Also two real gloo ranks writing their shards into one file (no all-gather of N x D).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mcl.config import config_from_dict
from mcl.embedding_file import FLOAT32_MAX_BYTES, EmbeddingFile, choose_dtype, open_embeddings, temporary_path
from mcl.errors import RunDirError
from mcl.pseudolabels import cluster_stage
from mcl.run import EMBEDDINGS_FILE, RunDirectory
from mcl.stages import cluster_or_load, embed_or_reuse, stage_seed
from mcl.tasks import ImageContrastiveTask

SRC = str(Path(__file__).resolve().parents[1] / "src")
N = 37  # not a multiple of the chunk, and uneven over two ranks


def _config(**mcl):
    return config_from_dict({"data": {"image_size": 16}, "train": {"device": "cpu", "threads": 1},
                             "model": {"width": 0.25, "hidden_dim": 32, "projection_dim": 16},
                             "mcl": {"clusters": 3, "kmeans_restarts": 1, **mcl}})


def _images(n=N):
    return np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def _task(config=None, n=N):
    torch.set_num_threads(1)
    return ImageContrastiveTask(config or _config(), _images(n), torch.device("cpu"))


def _chunks(rows, width=5, size=4, seed=0):
    data = torch.from_numpy(np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32))
    return data, list(data.split(size))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_rows_are_written_in_order_with_the_chosen_dtype(tmp_path, dtype):
    data, chunks = _chunks(11)
    out = EmbeddingFile(tmp_path / "embeddings.npy", 11, dtype)
    out.write_shard(np.arange(11), chunks)
    stored = open_embeddings(out.path, 11)
    assert stored.dtype == np.dtype(dtype) and stored.shape == (11, 5)
    assert np.array_equal(stored, data.numpy().astype(dtype))  # float16: exactly the float16 rounding
    assert not temporary_path(out.path).exists()


def test_auto_dtype_is_float32_up_to_one_gib():
    assert choose_dtype("auto", FLOAT32_MAX_BYTES // (4 * 512), 512) == np.float32
    assert choose_dtype("auto", FLOAT32_MAX_BYTES // (4 * 512) + 1, 512) == np.float16
    assert choose_dtype("float16", 10, 4) == np.float16 and choose_dtype("float32", 10**9, 512) == np.float32


def test_a_failed_pass_leaves_no_file_under_either_name(tmp_path):
    def failing():
        yield torch.zeros(4, 5)
        raise RuntimeError("encoder failed")

    out = EmbeddingFile(tmp_path / "embeddings.npy", 11)
    with pytest.raises(RuntimeError, match="encoder failed"):
        out.write_shard(np.arange(11), failing())
    assert list(tmp_path.iterdir()) == []


def test_a_killed_pass_leaves_only_its_temporary_which_resume_removes(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.start(_config(), {"train_rows": 11})
    path = run.stage_dir(1) / EMBEDDINGS_FILE
    code = ("import numpy as np, torch\nfrom mcl.embedding_file import EmbeddingFile\n"
            f"EmbeddingFile({str(path)!r}, 11).write_shard(np.arange(11), torch.ones(11, 5).split(4))\n")
    env = {**os.environ, "PYTHONPATH": SRC, "MCL_TEST_KILL_AT": "write:1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert temporary_path(path).exists() and not path.exists()  # complete rows, never renamed
    run.start(_config(), {"train_rows": 11})
    assert not temporary_path(path).exists()


def test_written_rows_equal_the_in_memory_embeddings(tmp_path):
    task = _task()
    model = task.build_model(seed=1)
    expected = task.embed(model)
    for dtype in ("float32", "float16"):
        out = EmbeddingFile(tmp_path / f"{dtype}.npy", N, dtype)
        assert task.embed(model, out=out) is None
        assert np.array_equal(open_embeddings(out.path, N), expected.numpy().astype(dtype))


def test_bad_embeddings_file_is_a_run_dir_error(tmp_path):
    path = tmp_path / "embeddings.npy"
    np.save(path, np.zeros((4, 3), np.float32))
    with pytest.raises(RunDirError, match=r"embeddings.npy: \(4, 3\) float32 embeddings, expected \(5, D\)"):
        open_embeddings(path, 5)
    with pytest.raises(RunDirError, match="file not found"):
        open_embeddings(tmp_path / "missing.npy", 5)


class _CountingTask:
    """A task whose embedding passes are counted."""

    def __init__(self, task):
        self.task, self.calls = task, 0
        self.num_samples, self.device = task.num_samples, task.device

    def embed(self, model, out=None):
        self.calls += 1
        return self.task.embed(model, out)


def test_stage_clusters_the_recorded_file_and_a_resumed_phase_reuses_it(tmp_path):
    config = _config(kmeans_sample=16)  # N > 16: k-means fits a sample and assigns the map chunk by chunk
    run = RunDirectory(tmp_path / "run")
    run.start(config, {"train_rows": N})
    task = _CountingTask(_task(config))
    model = task.task.build_model(seed=1)
    expected = cluster_stage(task.task.embed(model), 3, stage_seed(config, 1), restarts=1, sample_size=16)

    path = embed_or_reuse(task, model, config, run, 1)  # the run is killed after this, before k-means
    assert path == run.stage_dir(1) / EMBEDDINGS_FILE and task.calls == 1
    assert json.loads(run.manifest_path.read_text())["files"].keys() == {f"stage-1/{EMBEDDINGS_FILE}"}
    result = cluster_or_load(task, model, config, run, 1)  # resumed: the recorded embeddings are reused
    assert task.calls == 1
    assert np.array_equal(result.labels, expected.labels) and np.array_equal(result.centroids, expected.centroids)
    assert run.is_finished(path, run.stage_dir(1) / "clusters.safetensors")


def test_float16_map_clusters_like_its_float32_rounding(tmp_path):
    config = _config(embedding_dtype="float16")
    run = RunDirectory(tmp_path / "run")
    run.start(config, {"train_rows": N})
    task = _task(config)
    model = task.build_model(seed=1)
    rounded = task.embed(model).numpy().astype(np.float16).astype(np.float32)
    expected = cluster_stage(rounded, 3, stage_seed(config, 1), restarts=1)
    result = cluster_or_load(task, model, config, run, 1)
    assert open_embeddings(run.stage_dir(1) / EMBEDDINGS_FILE, N).dtype == np.float16
    assert np.array_equal(result.labels, expected.labels) and np.array_equal(result.centroids, expected.centroids)


def _rank_worker(rank, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=2)
    task = _task()
    model = task.build_model(seed=1)
    task.embed(model, out=EmbeddingFile(Path(out_dir) / "embeddings.npy", N, "float32"))  # no all-gather
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # gloo's threads can abort the interpreter's teardown; the file is on disk


def test_two_ranks_write_their_shards_into_one_file(tmp_path):
    mp.spawn(_rank_worker, args=(str(tmp_path),), nprocs=2, join=True)
    task = _task()
    expected = task.embed(task.build_model(seed=1)).numpy()
    assert np.array_equal(open_embeddings(tmp_path / "embeddings.npy", N), expected)
    assert not temporary_path(tmp_path / "embeddings.npy").exists()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_rows_read_with_pread_equal_the_memory_map(tmp_path, dtype):
    path = tmp_path / "embeddings.npy"
    data = np.random.default_rng(3).normal(size=(301, 7)).astype(dtype)
    np.save(path, data)
    rows, mapped = open_embeddings(path, 301), np.load(path, mmap_mode="r")
    assert rows.shape == (301, 7) and rows.dtype == dtype and len(rows) == 301
    picks = np.random.default_rng(4).choice(301, 50, replace=False)
    for key in (slice(None), slice(5, 77), slice(290, 400), slice(10, 3), slice(1, 200, 7), 0, -1, 300,
                np.sort(picks), picks, np.array([], np.int64), np.array([4, 4, 2]), picks % 2 == 0):
        key = np.arange(301) % 3 == 0 if isinstance(key, np.ndarray) and key.dtype == bool else key
        got = rows[key]
        assert got.flags.writeable and np.array_equal(got, mapped[key]), key
    assert np.array_equal(np.asarray(rows), data) and np.array_equal(rows[3, 2:4], data[3, 2:4])
    with pytest.raises(IndexError):
        rows[301]
    with pytest.raises(IndexError):
        rows[np.array([0, 301])]


def test_gathers_across_read_blocks(tmp_path, monkeypatch):
    import mcl.embedding_file as embedding_file

    monkeypatch.setattr(embedding_file, "READ_BLOCK_BYTES", 3 * 4 * 4)  # three rows of 4 float32 per block
    path = tmp_path / "embeddings.npy"
    data = np.arange(40 * 4, dtype=np.float32).reshape(40, 4)
    np.save(path, data)
    picks = np.array([39, 0, 1, 2, 3, 7, 8, 20, 21, 22, 23, 38])
    assert np.array_equal(open_embeddings(path, 40)[picks], data[picks])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_kmeans_over_the_file_equals_kmeans_over_the_map(tmp_path, dtype):
    from mcl.clustering import kmeans

    path = tmp_path / "embeddings.npy"
    np.save(path, np.random.default_rng(5).normal(size=(3000, 8)).astype(dtype))
    for sample_size in (None, 500):  # all points in one fit; a sampled fit then the chunked pass
        by_map = kmeans(np.load(path, mmap_mode="c"), 6, restarts=2, seed=1, sample_size=sample_size, chunk_size=256)
        by_rows = kmeans(open_embeddings(path, 3000), 6, restarts=2, seed=1, sample_size=sample_size,
                         chunk_size=256)
        assert np.array_equal(by_map.labels, by_rows.labels)
        assert np.array_equal(by_map.centroids, by_rows.centroids) and by_map.inertia == by_rows.inertia


def _rss_file_kib():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("RssFile:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssFile from /proc")
def test_reading_every_row_does_not_charge_the_file_to_rss(tmp_path):
    path = tmp_path / "embeddings.npy"
    np.save(path, np.ones((8192, 1024), np.float32))  # 32 MiB
    rows = open_embeddings(path, 8192)
    before = _rss_file_kib()
    total = sum(float(rows[start:start + 512].sum()) for start in range(0, 8192, 512))  # chunked, as k-means reads
    assert total == 8192 * 1024
    assert _rss_file_kib() - before < 8 * 1024, "a map would add the whole 32 MiB of file pages"

import numpy as np
import pytest

from mcl.clustering import faiss_available, kmeans


def _blobs(seed=0, per=60, k=4, dim=5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 20
    points = np.concatenate([c + rng.normal(size=(per, dim)) for c in centres]).astype(np.float32)
    truth = np.repeat(np.arange(k), per)
    return points, truth


def _same_partition(a, b):
    return all(len(set(b[a == label])) == 1 for label in set(a.tolist()))


def test_kmeans_recovers_separated_blobs():
    points, truth = _blobs()
    result = kmeans(points, 4, restarts=3, seed=0)
    assert _same_partition(truth, result.labels) and _same_partition(result.labels, truth)
    assert sorted(result.sizes.tolist()) == [60, 60, 60, 60]
    assert result.centroids.shape == (4, 5)
    expected = sum(((points[result.labels == c] - result.centroids[c]) ** 2).sum() for c in range(4))
    assert result.inertia == pytest.approx(expected, rel=1e-4)


def test_kmeans_is_deterministic_for_a_seed():
    points, _ = _blobs(1)
    a, b = kmeans(points, 6, seed=7), kmeans(points, 6, seed=7)
    assert np.array_equal(a.labels, b.labels) and a.inertia == b.inertia


def test_no_empty_clusters_even_with_duplicates():
    points = np.concatenate([np.zeros((50, 3)), np.ones((3, 3))]).astype(np.float32)
    result = kmeans(points, 5, restarts=2, seed=0)
    assert (result.sizes > 0).sum() >= 2
    assert result.sizes.sum() == 53


def test_spherical_kmeans_on_normalised_points():
    points, truth = _blobs(2)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    result = kmeans(points, 4, spherical=True, seed=0)
    assert np.allclose(np.linalg.norm(result.centroids, axis=1), 1, atol=1e-5)
    assert _same_partition(truth, result.labels)


def test_more_clusters_than_points_is_an_error():
    with pytest.raises(ValueError, match="cannot make"):
        kmeans(np.zeros((3, 2), np.float32), 5)


def test_close_to_sklearn_inertia():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    points = rng.normal(size=(2000, 16)).astype(np.float32)
    ours = kmeans(points, 10, restarts=3, seed=0).inertia
    theirs = KMeans(10, n_init=3, random_state=0).fit(points).inertia_
    assert ours <= theirs * 1.01


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
def test_faiss_backend_agrees():
    points, truth = _blobs(3)
    result = kmeans(points, 4, backend="faiss", seed=0)
    assert _same_partition(truth, result.labels)
    assert result.backend == "faiss"


def test_subsampled_restarts_then_full_refinement_stay_close_to_sklearn():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(10, 16)) * 1.5  # overlapping blobs: Lloyd has real work to do
    points = (centres[rng.integers(0, 10, 6000)] + rng.normal(size=(6000, 16))).astype(np.float32)
    theirs = KMeans(10, n_init=3, random_state=0).fit(points).inertia_
    for seed in range(3):
        ours = kmeans(points, 10, restarts=5, seed=seed, sample_per_cluster=64)  # restarts on 640 of 6000 points
        assert ours.inertia <= theirs * 1.01
        assert ours.iterations >= 1 and ours.sizes.sum() == 6000
    assert np.array_equal(ours.labels, kmeans(points, 10, restarts=5, seed=2, sample_per_cluster=64).labels)


def test_assign_and_centroid_sums_match_brute_force():
    import torch

    from mcl.clustering import assign, centroid_sums

    rng = np.random.default_rng(2)
    data, centroids = torch.from_numpy(rng.normal(size=(300, 7)).astype(np.float32)), torch.randn(5, 7)
    labels, distances = assign(data, centroids)
    brute = ((data[:, None, :] - centroids[None]) ** 2).sum(-1)
    assert torch.equal(labels, brute.argmin(1))
    assert torch.allclose(distances, brute.min(1).values, atol=1e-4)
    sums, counts = centroid_sums(data, labels, 5)
    assert torch.allclose(sums, torch.zeros(5, 7).index_add_(0, labels, data), atol=1e-5)
    assert torch.equal(counts, torch.bincount(labels, minlength=5))


def test_greedy_seeding_picks_distinct_well_spread_points():
    import torch

    from mcl.clustering import greedy_kmeans_plus_plus, squared_norms

    points, truth = _blobs(4, per=50, k=6)
    data = torch.from_numpy(points)
    seeds = greedy_kmeans_plus_plus(data, squared_norms(data), 6, torch.Generator().manual_seed(0))
    rows = [int(np.flatnonzero((points == s.numpy()).all(1))[0]) for s in seeds]
    assert len(set(truth[rows].tolist())) == 6, "one seed in each well-separated blob"


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
def test_faiss_inertia_is_that_of_its_labels():
    points, _ = _blobs(5)
    result = kmeans(points, 4, backend="faiss", seed=0, restarts=2)
    expected = sum(((points[result.labels == c] - result.centroids[c]) ** 2).sum() for c in range(4))
    assert result.inertia == pytest.approx(expected, rel=1e-4)


def _overlapping_blobs(n=6000, k=10, dim=16, seed=1):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 1.5
    return (centres[rng.integers(0, k, n)] + rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("spherical", [False, True])
def test_sampled_fit_assigns_every_point_and_reports_its_inertia(spherical):
    points = _overlapping_blobs()
    if spherical:
        points /= np.linalg.norm(points, axis=1, keepdims=True)
    sampled = kmeans(points, 10, seed=0, sample_size=1000, chunk_size=700, spherical=spherical)
    full = kmeans(points, 10, seed=0, sample_size=len(points), spherical=spherical)
    assert sampled.labels.shape == (6000,) and sampled.sizes.sum() == 6000 and (sampled.sizes > 0).all()
    exact = float(((points - sampled.centroids[sampled.labels]) ** 2).sum(dtype=np.float64))
    assert sampled.inertia == pytest.approx(exact, rel=1e-5)
    assert sampled.inertia <= full.inertia * 1.01
    if spherical:
        assert np.allclose(np.linalg.norm(sampled.centroids, axis=1), 1, atol=1e-5)
    else:  # one Lloyd update on all points: every centroid is its cluster's mean
        means = np.stack([points[sampled.labels == c].mean(0) for c in range(10)])
        assert np.allclose(sampled.centroids, means, atol=1e-4)
    again = kmeans(points, 10, seed=0, sample_size=1000, chunk_size=700, spherical=spherical)
    assert np.array_equal(sampled.labels, again.labels) and sampled.inertia == again.inertia


def test_chunk_size_does_not_change_the_result():
    points = _overlapping_blobs(seed=2)
    a, b = (kmeans(points, 10, seed=1, sample_size=2000, chunk_size=c) for c in (333, 6000))
    assert (a.labels == b.labels).mean() > 0.999
    assert a.inertia == pytest.approx(b.inertia, rel=1e-5)


def test_small_data_never_takes_the_sampled_path():
    from mcl.clustering import SAMPLE_FIT_MIN_POINTS, default_sample_size

    assert default_sample_size(2) == SAMPLE_FIT_MIN_POINTS > 4000, "the demo's 4000 points are fitted in full"
    assert default_sample_size(1000) == 64_000
    points = _overlapping_blobs(n=3000)
    a, b = kmeans(points, 10, seed=5), kmeans(points, 10, seed=5, sample_size=3000)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.centroids, b.centroids)
    assert a.iterations == b.iterations and a.iterations > 1  # full-data Lloyd ran


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
def test_faiss_backend_reads_a_float16_memory_map_in_chunks(tmp_path):
    points = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float16, shape=(3000, 8))
    centres = np.random.default_rng(1).normal(size=(3, 8)) * 5
    points[:] = centres[np.arange(3000) % 3] + np.random.default_rng(2).normal(size=(3000, 8))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    result = kmeans(mapped, 3, backend="faiss", seed=0, sample_per_cluster=100, chunk_size=256)
    assert result.labels.shape == (3000,) and result.backend == "faiss"
    truth = np.arange(3000) % 3
    pairs = {(t, int(c)) for t, c in zip(truth, result.labels, strict=True)}
    assert len(pairs) == 3, "the three blobs found from a 300-point sample"


def _first_seen_ids(labels) -> list[int]:
    """Cluster ids renamed in order of first appearance: the same partition gives the same list on any CPU."""
    order: dict[int, int] = {}
    return [order.setdefault(int(label), len(order)) for label in labels]


@pytest.mark.parametrize("spherical", [False, True])
def test_small_data_full_fit_is_pinned(spherical):
    """N <= default_sample_size(K) runs the full fit, unchanged: values recorded before the sampled path's speed-ups.

    Pinned up to a relabelling of the clusters: which k-means++ restart wins (and so the ids it hands out)
    depends on the CPU's last bits (an AMD and an Intel machine give the same partition with permuted ids).
    """
    points = _overlapping_blobs(n=3000)
    if spherical:
        points /= np.linalg.norm(points, axis=1, keepdims=True)
    result = kmeans(points, 10, seed=5, spherical=spherical)
    if spherical:
        inertia = 1247.048534154892
        sizes = [307, 297, 340, 313, 299, 296, 296, 279, 296, 277]
        first = [4, 8, 8, 3, 3, 1, 5, 1, 8, 2, 2, 0, 7, 2, 8, 9, 4, 1, 4, 8, 8, 1, 1, 1]
    else:
        inertia = 47331.99102830887
        sizes = [308, 292, 296, 272, 307, 298, 293, 302, 295, 337]
        first = [7, 5, 5, 4, 4, 2, 6, 2, 5, 9, 9, 0, 1, 9, 5, 3, 7, 2, 7, 5, 5, 2, 2, 2]
    assert sorted(result.sizes.tolist()) == sorted(sizes)
    assert _first_seen_ids(result.labels[:24].tolist()) == _first_seen_ids(first)
    # each recorded cluster (by its first 24 members) has the size recorded for it
    assert [int(result.sizes[result.labels[i]]) for i in range(24)] == [sizes[i] for i in first]
    assert result.inertia == pytest.approx(inertia, rel=1e-6)


@pytest.mark.parametrize("clusters", [1, 7, 10, 30, 64, 100, 257])
def test_fast_row_min_matches_torch_min(clusters):
    import torch

    from mcl.clustering.lloyd import assign, assign_fast, row_min

    generator = torch.Generator().manual_seed(clusters)
    block = torch.randn(777, clusters, generator=generator)
    block[::3, clusters // 2] = block[::3].min(1).values  # ties: the first minimum wins, as in torch.min
    values, labels = torch.empty(777), torch.empty(777, dtype=torch.long)
    row_min(block, values, labels)
    expected = torch.min(block, dim=1)
    assert torch.equal(labels, expected.indices) and torch.equal(values, expected.values)
    data, centroids = torch.randn(5000, 9, generator=generator), torch.randn(clusters, 9, generator=generator)
    fast, reference = assign_fast(data, centroids), assign(data, centroids)
    assert torch.equal(fast[0], reference[0]) and torch.equal(fast[1], reference[1])


def test_sampled_fit_is_deterministic_and_close_to_the_full_fit_on_clustered_data():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 24)).astype(np.float32)
    points = centres[rng.integers(0, 40, 20_000)] + 0.6 * rng.normal(size=(20_000, 24)).astype(np.float32)
    full = kmeans(points, 30, seed=1, sample_size=len(points))
    for seed in (1, 2):
        sampled = kmeans(points, 30, seed=seed)  # 20k > default_sample_size(30) = 8192: the sampled path
        assert sampled.iterations == 1 and sampled.sizes.sum() == 20_000
        # Separated blobs (40 of them, K = 30) are hard for a one-restart fit on 8192 points: measured 0.5-4.6%
        # above the full fit (seeds 0-3, before and after the speed-ups alike); the bound only catches breakage.
        assert sampled.inertia <= full.inertia * 1.08
        again = kmeans(points, 30, seed=seed)
        assert np.array_equal(sampled.labels, again.labels) and sampled.inertia == again.inertia

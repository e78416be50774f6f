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

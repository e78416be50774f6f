import numpy as np

from mcl.evaluation.probes import knn_probe, linear_predictions, linear_probe


def _data(seed=0, n=300, informative=True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 8))
    if informative:
        x[np.arange(n), y] += 6  # each class shifted along its own axis: separable, also by cosine
    return x[: n // 2], y[: n // 2], x[n // 2 :], y[n // 2 :]


def test_linear_probe_learns_a_learnable_attribute():
    assert linear_probe(*_data()) > 0.9


def test_linear_probe_is_at_chance_on_noise():
    assert linear_probe(*_data(informative=False)) < 0.5


def test_linear_probe_agrees_with_sklearn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x_train, y_train, x_test, y_test = _data(1)
    scaler = StandardScaler().fit(x_train)
    reference = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(x_train), y_train)
    expected = (reference.predict(scaler.transform(x_test)) == y_test).mean()
    assert abs(linear_probe(x_train, y_train, x_test, y_test) - expected) <= 0.02


def test_linear_predictions_are_the_probes_per_row_answers():
    x_train, y_train, x_test, y_test = _data(2)
    predicted = linear_predictions(x_train, y_train, x_test, classes=3)
    assert predicted.shape == (len(x_test),) and set(np.unique(predicted)) <= {0, 1, 2}
    assert (predicted == y_test).mean() == linear_probe(x_train, y_train, x_test, y_test)


def test_knn_probe():
    assert knn_probe(*_data(), k=5) > 0.8
    assert knn_probe(*_data(informative=False), k=5) < 0.5


def test_closed_form_gradient_equals_autograd():
    import torch
    import torch.nn.functional as F

    from mcl.evaluation.probes import _loss_and_gradient

    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(50, 6)))
    y = torch.from_numpy(rng.integers(0, 4, 50))
    weight = torch.from_numpy(rng.normal(size=(6, 4))).requires_grad_()
    bias = torch.from_numpy(rng.normal(size=4)).requires_grad_()
    penalty = 0.01
    loss = F.cross_entropy(x @ weight + bias, y) + penalty * (weight * weight).sum()
    loss.backward()
    with torch.no_grad():
        closed, grad_w, grad_b = _loss_and_gradient(x, x.T.contiguous(), F.one_hot(y, 4).double(), weight, bias,
                                                    penalty)
    torch.testing.assert_close(closed, loss.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_w, weight.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad_b, bias.grad, rtol=1e-10, atol=1e-12)

"""Per-attribute probes on frozen features: what a representation has learned.

Fixed protocol (documented in the README so numbers are comparable):

- **linear**: features standardised with the training rows' mean/std; multinomial logistic
  regression minimising ``mean CE + ||W||^2 / (2 C n)`` (scikit-learn's objective, ``C = 1``) by
  full-batch L-BFGS (at most ``max_iter`` iterations), in float64 on the CPU; accuracy on the test rows.
  The gradient is the closed form of :func:`_loss_and_gradient` (the same function autograd would
  differentiate, without building a graph per step: the probes are most of ``mcl eval``'s time).
- **knn**: cosine similarity on L2-normalised features, the ``k = 20`` nearest training rows vote,
  weighted by ``exp(similarity / 0.07)`` (the kNN monitor of InstDisc/solo-learn).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _as_tensor(x: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to("cpu", dtype)


def _loss_and_gradient(x_train: torch.Tensor, x_train_t: torch.Tensor, onehot: torch.Tensor, weight: torch.Tensor,
                       bias: torch.Tensor, penalty: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``mean CE + penalty * ||W||^2`` and its gradient in closed form (no autograd graph per L-BFGS step).

    With ``p = softmax(x W + b)``: ``dL/dW = x^T (p - onehot) / n + 2 penalty W`` and
    ``dL/db = sum_rows (p - onehot) / n``.
    ``x_train_t`` is ``x_train.T`` made contiguous once, so every step's gradient GEMM reads it in order.
    """
    n = len(x_train)
    log_p = torch.addmm(bias, x_train, weight).log_softmax(1)
    loss = -(log_p * onehot).sum() / n + penalty * (weight * weight).sum()
    residual = (log_p.exp() - onehot) / n
    return loss, x_train_t @ residual + (2 * penalty) * weight, residual.sum(0)


def linear_predictions(train_x: np.ndarray | torch.Tensor, train_y: np.ndarray, test_x: np.ndarray | torch.Tensor,
                       classes: int, c: float = 1.0, max_iter: int = 1000) -> np.ndarray:
    """Predicted classes ``(n_test,)`` of the linear probe (module docstring) fitted on the training rows."""
    x_train, x_test = _as_tensor(train_x, torch.float64), _as_tensor(test_x, torch.float64)
    y_train = _as_tensor(train_y, torch.long)
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-8)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    onehot = F.one_hot(y_train, classes).to(torch.float64)
    x_train_t = x_train.T.contiguous()
    weight = torch.zeros(x_train.shape[1], classes, dtype=torch.float64)
    bias = torch.zeros(classes, dtype=torch.float64)
    penalty = 1.0 / (2.0 * c * len(x_train))
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, tolerance_grad=1e-6,
                                  tolerance_change=1e-9, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        loss, weight.grad, bias.grad = _loss_and_gradient(x_train, x_train_t, onehot, weight, bias, penalty)
        return loss

    with torch.no_grad():
        optimizer.step(closure)
        return (x_test @ weight + bias).argmax(1).numpy()


def linear_probe(train_x: np.ndarray | torch.Tensor, train_y: np.ndarray, test_x: np.ndarray | torch.Tensor,
                 test_y: np.ndarray, c: float = 1.0, max_iter: int = 1000) -> float:
    """Test accuracy of an L2-regularised logistic regression fitted on the training rows."""
    classes = int(max(np.max(np.asarray(train_y)), np.max(np.asarray(test_y)))) + 1
    predictions = linear_predictions(train_x, train_y, test_x, classes, c, max_iter)
    return float((predictions == np.asarray(test_y)).mean())


def knn_probe(train_x: np.ndarray | torch.Tensor, train_y: np.ndarray, test_x: np.ndarray | torch.Tensor,
              test_y: np.ndarray, k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> float:
    """Test accuracy of a similarity-weighted kNN vote over the training rows."""
    x_train = F.normalize(_as_tensor(train_x, torch.float32), dim=1)
    x_test = F.normalize(_as_tensor(test_x, torch.float32), dim=1)
    y_train, y_test = _as_tensor(train_y, torch.long), _as_tensor(test_y, torch.long)
    classes = int(max(y_train.max(), y_test.max())) + 1
    k = min(k, len(x_train))
    correct = 0
    for start in range(0, len(x_test), chunk):
        similarity, index = (x_test[start : start + chunk] @ x_train.T).topk(k, dim=1)
        votes = torch.zeros(len(index), classes).scatter_add_(1, y_train[index], (similarity / temperature).exp())
        correct += int((votes.argmax(1) == y_test[start : start + chunk]).sum())
    return correct / max(1, len(x_test))


PROBES = {"linear": linear_probe, "knn": knn_probe}

"""l2_normalize / upcast: dtype kept for float32/float64, half precision normalised in float32."""

import torch

from mcl.objectives import l2_normalize, upcast


def test_l2_normalize_keeps_float64_precision() -> None:
    x = torch.randn(5, 7, dtype=torch.float64)
    unit = l2_normalize(x)
    assert unit.dtype == torch.float64
    assert torch.allclose(unit, x / x.norm(dim=1, keepdim=True), rtol=0, atol=1e-15)


def test_l2_normalize_half_is_safe_and_cast_back() -> None:
    # 300^2 overflows fp16 and 1e-4^2 underflows it; a zero row must stay zero, not NaN.
    x = torch.tensor([[300.0, 400.0], [1e-4, 0.0], [0.0, 0.0]]).half()
    for dtype in (torch.float16, torch.bfloat16):
        unit = l2_normalize(x.to(dtype))
        assert unit.dtype == dtype
        assert torch.isfinite(unit).all()
        assert torch.allclose(unit.float(), torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, 0.0]]), atol=1e-2)


def test_upcast_only_widens_half_precision() -> None:
    assert upcast(torch.zeros(1, dtype=torch.float16)).dtype == torch.float32
    assert upcast(torch.zeros(1, dtype=torch.bfloat16)).dtype == torch.float32
    assert upcast(torch.zeros(1, dtype=torch.float64)).dtype == torch.float64
    assert upcast(torch.zeros(1)).dtype == torch.float32


def test_l2_normalize_keeps_float32() -> None:
    assert l2_normalize(torch.randn(2, 3)).dtype == torch.float32

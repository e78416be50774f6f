"""Objective registry: decorator and call registration, check_objective's one-line ConfigErrors."""

import pytest
import torch
from torch import nn

from mcl.errors import ConfigError
from mcl.objectives import OBJECTIVES, DCLLoss, NTXentLoss, build_objective, check_objective, register_objective


@pytest.fixture
def registry():
    """Restore the registry after a test registers into it."""
    saved = dict(OBJECTIVES)
    yield OBJECTIVES
    OBJECTIVES.clear()
    OBJECTIVES.update(saved)


def test_builtin_objectives_registered_beside_their_definitions() -> None:
    assert OBJECTIVES["ntxent"] is NTXentLoss and OBJECTIVES["simclr"] is NTXentLoss
    assert OBJECTIVES["dcl"] is DCLLoss and "moco" in OBJECTIVES
    assert isinstance(build_objective("dcl", temperature=0.2), DCLLoss)


def test_decorator_registers_an_objective_that_builds_and_runs(registry) -> None:
    @register_objective("cosine-align")
    class CosineAlign(nn.Module):
        def __init__(self, weight: float = 1.0) -> None:
            super().__init__()
            self.weight = weight

        def forward(self, z_a: torch.Tensor, z_b: torch.Tensor, pseudo_labels=None) -> torch.Tensor:
            return -self.weight * nn.functional.cosine_similarity(z_a, z_b).mean()

    assert CosineAlign.__name__ == "CosineAlign"  # the decorator returns the class unchanged
    check_objective("cosine-align", {"weight": 2.0})
    loss_fn = build_objective("cosine-align", weight=2.0)
    z = torch.randn(3, 4)
    assert loss_fn(z, z).item() == pytest.approx(-2.0)


def test_call_form_still_works(registry) -> None:
    def factory(temperature: float = 0.1) -> nn.Module:
        return NTXentLoss(temperature)

    assert register_objective("my-simclr", factory) is factory
    assert build_objective("my-simclr", temperature=0.3).temperature == 0.3


def test_unknown_name_lists_names_and_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        check_objective("ntxnet", {}, key="objective.name")
    message = str(info.value)
    assert "\n" not in message and message.startswith("objective.name:")
    assert "did you mean 'ntxent'" in message and "dcl, moco, ntxent, simclr" in message
    with pytest.raises(ConfigError, match="unknown objective 'zzz'; expected one of"):
        build_objective("zzz")


def test_unexpected_argument_is_named_with_the_accepted_ones() -> None:
    with pytest.raises(ConfigError) as info:
        check_objective("moco", {"temperature": 0.2, "queue_szie": 8})
    message = str(info.value)
    assert "\n" not in message
    assert "'queue_szie' (did you mean 'queue_size'?)" in message and "accepted: temperature" in message
    check_objective("moco", {"temperature": 0.2, "queue_size": 8})


def test_factory_taking_any_kwargs_accepts_everything(registry) -> None:
    register_objective("anything", lambda **kwargs: NTXentLoss())
    check_objective("anything", {"whatever": 1})

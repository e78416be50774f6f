"""mcl.models.registry: name -> factory, checks before building, prefixes, safe local weights."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mcl.errors import ConfigError
from mcl.models.registry import IDENTITY, Entry, Preprocess, Registry, load_weights, read_state_dict


def _registry() -> tuple[Registry, list[dict]]:
    calls: list[dict] = []
    registry = Registry("widget", key="section.widget")

    @registry.register("linear")
    def linear(features: int = 4, bias: bool = True) -> nn.Module:
        calls.append({"features": features, "bias": bias})
        return nn.Linear(3, features, bias=bias)

    registry.register("anything", lambda **kwargs: kwargs, preprocess=Preprocess((0.5,) * 3, (0.25,) * 3, 16))
    return registry, calls


def test_register_names_build() -> None:
    registry, calls = _registry()
    assert registry.names() == ["anything", "linear"] and "linear" in registry and list(registry) == registry.names()
    model = registry.build("linear", features=2, bias=False)
    assert isinstance(model, nn.Linear) and model.out_features == 2 and model.bias is None
    assert calls == [{"features": 2, "bias": False}]
    assert registry.build("anything", x=1) == {"x": 1}  # **kwargs factories accept every keyword
    assert registry.preprocess("anything").input_size == 16 and registry.preprocess("linear") is IDENTITY


def test_unknown_name_is_one_line_with_did_you_mean() -> None:
    registry, calls = _registry()
    with pytest.raises(ConfigError) as info:
        registry.build("linaer")
    message = str(info.value)
    assert "\n" not in message and message.startswith("config key 'section.widget': unknown widget 'linaer'")
    assert "did you mean 'linear'?" in message and "registered: anything, linear" in message
    assert calls == []


def test_unexpected_keyword_named_before_building() -> None:
    registry, calls = _registry()
    with pytest.raises(ConfigError, match=r"widget 'linear' takes no argument\(s\) 'featurs' \(did you mean "
                                          r"'features'\?\); it takes: features, bias"):
        registry.check("linear", {"featurs": 3})
    with pytest.raises(ConfigError, match="'depth'"):
        registry.build("linear", depth=3)
    assert calls == []  # nothing was built
    registry.check("linear", {"features": 3})


def test_prefixes_resolve_lazily_and_names_reserve_colon() -> None:
    resolved: list[str] = []

    def resolver(rest: str) -> Entry:
        resolved.append(rest)
        return Entry(f"lib:{rest}", lambda scale=1: (rest, scale))

    registry = Registry("widget", prefixes={"lib": resolver})
    assert resolved == []
    assert registry.build("lib:thing", scale=2) == ("thing", 2)
    assert resolved == ["thing"]
    with pytest.raises(ConfigError, match="takes no argument"):
        registry.check("lib:thing", {"size": 1})
    with pytest.raises(ConfigError, match="expected 'lib:<model name>'"):
        registry.check("lib:", {})
    with pytest.raises(ConfigError, match="lib:<name>"):
        registry.check("other:thing", {})
    with pytest.raises(ValueError, match="reserved"):
        registry.register("a:b", lambda: None)


def test_missing_third_party_package_names_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcl.models import check_backbone

    monkeypatch.setitem(sys.modules, "timm", None)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ConfigError, match=r"'timm:vit_tiny_patch16_224' needs the 'timm' package .*pip install timm$"):
        check_backbone("timm:vit_tiny_patch16_224")
    with pytest.raises(ConfigError, match="pip install torchvision"):
        check_backbone("torchvision:resnet18")


def test_preprocess_identity() -> None:
    assert Preprocess().is_identity and IDENTITY.is_identity
    assert not Preprocess(input_size=32).is_identity and not Preprocess(std=(0.5,) * 3).is_identity


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_load_weights_round_trip(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(0)
    source, target = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    load_weights(target, path)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values(),
                                                  strict=True))


def test_load_weights_errors(tmp_path: Path) -> None:
    model = nn.Linear(3, 4)
    with pytest.raises(ConfigError, match="not found"):
        load_weights(model, tmp_path / "nope.pt")
    path = tmp_path / "other.pt"
    torch.save({**nn.Linear(3, 5).state_dict(), "head.weight": torch.zeros(1)}, path)
    with pytest.raises(ConfigError, match=r"wrong shape bias, weight") as info:
        load_weights(model, path)
    assert "unexpected head.weight" in str(info.value)
    load_weights(nn.Linear(3, 5), path, ignore_prefixes=("head",))  # a dropped classifier head is skipped
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read weights"):
        read_state_dict(tmp_path / "bad.pt")
    # Pickled objects other than tensors are refused (weights_only=True).
    torch.save({"weight": torch.zeros(1), "evil": object()}, tmp_path / "pickle.pt")
    with pytest.raises(ConfigError, match="cannot read weights"):
        read_state_dict(tmp_path / "pickle.pt")

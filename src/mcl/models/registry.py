"""Name -> factory registries (timm-style), per-model preprocessing, safe local weight loading.

A :class:`Registry` maps names to factories. Factories register themselves next to their definition::

    BACKBONES = Registry("backbone", key="model.backbone")

    @BACKBONES.register("mine")
    class Mine(nn.Module): ...

    BACKBONES.check("mine", {"depth": 3})   # ConfigError before anything is built, if the name/kwargs are wrong
    model = BACKBONES.build("mine", depth=3)

:meth:`Registry.check` validates a name and keyword arguments without building: an unknown name
gives a one-line :class:`~mcl.errors.ConfigError` with a did-you-mean (``difflib``) and the registered
names; a keyword the factory's signature does not accept is named (factories taking ``**kwargs``
accept anything). Names with a *prefix* (``timm:vit_tiny_patch16_224``) are resolved lazily by the
prefix's resolver, which may import a third-party package only then.

:class:`Preprocess` is what a model expects of its input images, which arrive as float RGB in
[0, 1] at ``data.image_size``: ``(x - mean) / std``, after a resize to ``input_size`` when that is
set. The identity (mean 0, std 1, no resize) is the default of every backbone defined here.

:func:`load_weights` reads a local ``.safetensors`` file or a ``torch.save`` file with
``torch.load(weights_only=True)``; nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mcl.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """What a model expects of images given as float RGB in [0, 1]: ``(resize(x, input_size) - mean) / std``.

    ``input_size`` None keeps the images' size (``data.image_size``); the default is the identity.
    """

    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    input_size: int | None = None

    @property
    def is_identity(self) -> bool:
        """True when applying it would leave images unchanged."""
        return self.input_size is None and all(m == 0 for m in self.mean) and all(s == 1 for s in self.std)


IDENTITY = Preprocess()


@dataclasses.dataclass
class Entry:
    """A registered factory, its preprocessing and (optionally) how a config maps to its kwargs.

    ``from_config(config, **context) -> kwargs`` lets a registry entry pick its own keyword arguments
    from a config section (used by the two-tower registry).
    """

    name: str
    factory: Callable[..., Any]
    preprocess: Preprocess = IDENTITY
    from_config: Callable[..., dict[str, Any]] | None = None

    def accepts(self, keyword: str) -> bool:
        """Whether the factory takes ``keyword`` (a ``**kwargs`` factory takes everything)."""
        return keyword in self.parameters() or self.takes_any_keyword()

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The factory's keyword-passable parameters."""
        try:
            signature = inspect.signature(self.factory)
        except (TypeError, ValueError):  # builtins without a signature: accept anything
            return {}
        return {name: p for name, p in signature.parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.VAR_KEYWORD)}

    def takes_any_keyword(self) -> bool:
        """True if the factory has ``**kwargs`` (or no inspectable signature)."""
        params = self.parameters()
        return not params and not _has_signature(self.factory) or any(
            p.kind == p.VAR_KEYWORD for p in params.values())


def _has_signature(factory: Callable[..., Any]) -> bool:
    try:
        inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    return True


class Registry:
    """Name -> :class:`Entry`; ``prefixes`` resolve ``"<prefix>:<rest>"`` names lazily.

    Args:
        kind: what is registered, for messages ("backbone").
        key: the config key the name comes from, for messages ("model.backbone").
        prefixes: ``{prefix: resolver}``; ``resolver(rest)`` returns an :class:`Entry` or raises ConfigError.
    """

    def __init__(self, kind: str, key: str | None = None,
                 prefixes: Mapping[str, Callable[[str], Entry]] | None = None) -> None:
        self.kind = kind
        self.key = key
        self.prefixes: dict[str, Callable[[str], Entry]] = dict(prefixes or {})
        self._entries: dict[str, Entry] = {}
        self._resolved: dict[str, Entry] = {}

    # -- registration --------------------------------------------------------------------------------

    def register(self, name: str, factory: Callable[..., Any] | None = None, *, preprocess: Preprocess = IDENTITY,
                 from_config: Callable[..., dict[str, Any]] | None = None) -> Any:
        """Register ``factory`` under ``name``; without ``factory``, a decorator. Re-registering replaces."""
        if ":" in name:
            raise ValueError(f"{self.kind} name {name!r}: ':' is reserved for prefixes ({', '.join(self.prefixes)})")

        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._entries[name] = Entry(name, fn, preprocess, from_config)
            return fn

        return add if factory is None else add(factory)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register temporary entries clean up with this)."""
        self._entries.pop(name, None)

    # -- lookup --------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Registered names, sorted (prefix names are not listed)."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> Callable[..., Any]:
        return self.entry(name).factory

    def entry(self, name: str) -> Entry:
        """The entry of ``name`` (resolving a prefix), or a one-line ConfigError with a did-you-mean."""
        if not isinstance(name, str):
            raise ConfigError(f"{self._where()}expected a {self.kind} name, got {name!r}")
        if name in self._entries:
            return self._entries[name]
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self.prefixes:
            if not rest:
                raise ConfigError(f"{self._where()}{name!r}: expected '{prefix}:<model name>'")
            if name not in self._resolved:  # resolve once: a resolver may import a package, list its models
                self._resolved[name] = self.prefixes[prefix](rest)
            return self._resolved[name]
        raise ConfigError(f"{self._where()}unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; "
                          f"registered: {', '.join(self.names())}{self._prefix_hint()}")

    def preprocess(self, name: str) -> Preprocess:
        """The preprocessing registered with ``name``."""
        return self.entry(name).preprocess

    # -- check and build -----------------------------------------------------------------------------

    def check(self, name: str, kwargs: Mapping[str, Any] | None = None) -> None:
        """Raise a one-line ConfigError if ``name`` is unknown or the factory rejects a keyword of ``kwargs``."""
        self._check_entry(self.entry(name), name, kwargs)

    def _check_entry(self, entry: Entry, name: str, kwargs: Mapping[str, Any] | None) -> None:
        unexpected = [k for k in (kwargs or {}) if not entry.accepts(k)]
        if unexpected:
            accepted = [k for k, p in entry.parameters().items() if p.kind != p.VAR_KEYWORD]
            hint = did_you_mean(unexpected[0], accepted)
            raise ConfigError(f"{self._where()}{self.kind} {name!r} takes no argument(s) "
                              f"{', '.join(map(repr, unexpected))}{hint}; it takes: {', '.join(accepted) or 'none'}")

    def build(self, name: str, /, **kwargs: Any) -> Any:
        """Check, then call the factory of ``name`` with ``kwargs``."""
        entry = self.entry(name)
        self._check_entry(entry, name, kwargs)
        return entry.factory(**kwargs)

    def _where(self) -> str:
        return f"config key '{self.key}': " if self.key else ""

    def _prefix_hint(self) -> str:
        return "".join(f", {prefix}:<name>" for prefix in self.prefixes)


def did_you_mean(name: str, candidates: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def require_package(module: str, pip_name: str, what: str) -> Any:
    """Import ``module`` or raise a one-line ConfigError saying which pip package to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{what} needs the '{module}' package ({exc}): pip install {pip_name}") from None


# ---------------------------------------------------------------------------------------------- weights


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A local weights file: ``.safetensors``, or a ``torch.save`` file read with ``weights_only=True``.

    A checkpoint dict holding ``state_dict`` / ``model`` / ``module`` is unwrapped; a ``module.``
    prefix (DDP) is removed.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"pretrained: weights file {str(file)!r} not found (a local file is required; "
                          "nothing is downloaded)")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file), device="cpu")
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader error is one bad file
        raise ConfigError(f"pretrained: {file}: cannot read weights ({' '.join(str(exc).split())[:200]})") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ConfigError(f"pretrained: {file}: expected a state_dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: nn.Module, path: str | os.PathLike, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load a local weights file into ``model`` strictly, except keys under ``ignore_prefixes`` (a dropped head)."""
    state = read_state_dict(path)
    state = {k: v for k, v in state.items() if not any(k == p or k.startswith(p + ".") for p in ignore_prefixes)}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise ConfigError(f"pretrained: {path}: weights do not fit the model ({'; '.join(parts)})")
    model.load_state_dict(state)

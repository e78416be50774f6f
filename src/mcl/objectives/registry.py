"""Name -> factory registry of the base objectives that ``config.objective.name`` selects.

Register beside the definition with the decorator form, or later (e.g. from a plugin) with the call form::

    @register_objective("ntxent")
    class NTXentLoss(nn.Module): ...

    register_objective("simclr", NTXentLoss)          # an alias
    check_objective("ntxent", {"temperature": 0.5})   # ConfigError on an unknown name or argument
    loss_fn = build_objective("ntxent", temperature=0.5)
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import TypeVar, overload

from torch import nn

from mcl.errors import ConfigError

Factory = TypeVar("Factory", bound=Callable[..., nn.Module])

OBJECTIVES: dict[str, Callable[..., nn.Module]] = {}
"""Every registered objective factory (a class or a function returning an ``nn.Module``), by name."""


@overload
def register_objective(name: str, factory: None = None) -> Callable[[Factory], Factory]: ...
@overload
def register_objective(name: str, factory: Factory) -> Factory: ...
def register_objective(name: str, factory: Factory | None = None) -> Factory | Callable[[Factory], Factory]:
    """Register ``factory`` as ``name``; without ``factory``, a decorator that does so and returns it unchanged."""
    if factory is not None:
        OBJECTIVES[name] = factory
        return factory

    def decorator(definition: Factory) -> Factory:
        OBJECTIVES[name] = definition
        return definition

    return decorator


def _accepted_arguments(factory: Callable[..., nn.Module]) -> list[str] | None:
    """Keyword arguments ``factory`` takes, or None when it takes any (``**kwargs``) or has no signature."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def check_objective(name: str, kwargs: Mapping[str, object], key: str = "objective") -> None:
    """Raise a one-line :class:`~mcl.errors.ConfigError` if ``name`` is unknown or takes none of ``kwargs``.

    ``key`` is the config key named in the message (e.g. ``"objective.name"`` from config validation).
    """
    if name not in OBJECTIVES:
        close = difflib.get_close_matches(str(name), OBJECTIVES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: unknown objective {name!r}{hint}; expected one of: {', '.join(sorted(OBJECTIVES))}")
    accepted = _accepted_arguments(OBJECTIVES[name])
    if accepted is None:
        return
    unexpected = [arg for arg in kwargs if arg not in accepted]
    if unexpected:
        hints = []
        for arg in unexpected:
            close = difflib.get_close_matches(arg, accepted, n=1)
            hints.append(f"{arg!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"{key}: objective {name!r} takes no argument {', '.join(hints)}; "
                          f"accepted: {', '.join(accepted) or 'none'}")


def build_objective(name: str, **kwargs: object) -> nn.Module:
    """Instantiate the objective registered as ``name`` (ConfigError if the name or an argument is unknown)."""
    check_objective(name, kwargs)
    return OBJECTIVES[name](**kwargs)

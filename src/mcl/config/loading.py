"""Loading a config: YAML files and nested dicts, ``--set section.key=value`` overrides, type coercion.

Every error is one line naming the key and what was expected (an unknown key gets a "did you
mean"); the CLI turns it into exit code 2.

YAML is read with :class:`ConfigLoader`: ``yaml.safe_load``'s rules, plus YAML 1.2 floats without a dot
(``1e3`` is 1000.0, not the string ``'1e3'``); an integral float is accepted for an integer key
(``n_train: 1e4``). A free-form value (``model.backbone_args``) may hold at most :data:`MAX_FREE_NODES`
nodes counted as expanded, so a YAML alias bomb (a few hundred bytes naming billions of nodes through
``&anchor``/``*alias``) is a one-line error instead of filling memory when the config is written out.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from mcl.config.schema import FORMAT_VERSION, Config
from mcl.config.validation import check_config
from mcl.errors import ConfigError, one_line

MAX_FREE_NODES = 10_000
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e3`` / ``-2E-4`` (no dot) as floats, as YAML 1.2 does."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def read_yaml(text: str) -> Any:
    """``text`` parsed with :class:`ConfigLoader` (safe: plain data only)."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (ConfigLoader is a SafeLoader)


def _check_free_value(value: Any, key: str) -> None:
    """A free-form value must be plain data of at most MAX_FREE_NODES nodes, counting shared ones each time."""
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_FREE_NODES:
            raise ConfigError(f"config key '{key}': more than {MAX_FREE_NODES} values once YAML aliases are "
                              "expanded; write the value out plainly")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif not (item is None or isinstance(item, bool | int | float | str)):
            raise ConfigError(f"config key '{key}': expected plain YAML values, got {type(item).__name__}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list of " + str(len(typing.get_args(tp))) + " numbers"
    if origin is dict:
        return "a mapping"
    if origin is list:
        return "a list"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string",
            type(None): "null"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` or raise a one-line ConfigError."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        # YAML 1.1 reads a bare off/on as false/true: where "off"/"on" is a choice, that is what was meant.
        if isinstance(value, bool) and ("on" if value else "off") in typing.get_args(tp):
            return "on" if value else "off"
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
    elif origin is dict:
        key_type, value_type = typing.get_args(tp)
        if isinstance(value, dict):
            return {_coerce(k, key_type, key): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    elif origin is list:
        (item_type,) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return [_coerce(v, item_type, key) for v in value]
    elif origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            return int(value)  # 1e4 read as a YAML float
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str and isinstance(value, str):
        return value
    elif tp is Any:
        _check_free_value(value, key)
        return value
    raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")


def _unknown_key(key: str, known: list[str]) -> ConfigError:
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}; known keys: {', '.join(known)}")


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix or 'top level'}': expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise _unknown_key(full, list(fields))
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, full)
        else:
            kwargs[key] = _coerce(value, tp, full)
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any] | None) -> Config:
    """Validate a nested dict (e.g. parsed YAML) into a :class:`Config`."""
    return check_config(_build(Config, values or {}, ""))


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``section.key=value`` overrides, validate."""
    path = Path(path)
    try:
        values = read_yaml(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); expected a YAML config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: config file cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({one_line(getattr(exc, 'problem', None) or exc)})") \
            from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
    apply_overrides(values, overrides or [])
    return config_from_dict(values)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set a.b=value`` strings (values parsed as YAML scalars) to a nested dict in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=5")
        key, raw = item.split("=", 1)
        node = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a config section")
        try:
            node[parts[-1]] = read_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML "
                              f"({one_line(getattr(exc, 'problem', None) or exc)})") from None
    return values


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config (atomic) as YAML."""
    from mcl.files import write_bytes

    header = f"# resolved mcl config, format version {FORMAT_VERSION}\n"
    write_bytes(path, (header + yaml.safe_dump(config.to_dict(), sort_keys=False)).encode())

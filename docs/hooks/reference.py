"""Generated reference pages for the docs site: configuration keys, the CLI, the API.

An mkdocs hook (``hooks:`` in ``mkdocs.yml``): a page containing one of the markers below gets the
marker replaced by Markdown generated from the code, so the reference cannot drift from it.

- ``<!-- mcl:config-reference -->``: every key of :class:`mcl.config.Config` under its dotted ``--set``
  name, with its type and default (the dataclasses), its range (the field metadata's
  :class:`~mcl.config.schema.Range`) and its meaning (the comments beside or above the field in
  ``schema.py``, the section's docstring);
- ``<!-- mcl:cli-reference -->``: every ``mcl`` command with its usage and options (from argparse);
- ``<!-- mcl:api-reference -->``: one mkdocstrings block per name of ``mcl.__all__``.

Run as a script to print one of them: ``python docs/hooks/reference.py config|cli|api``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any

MARKERS = {
    "<!-- mcl:config-reference -->": "config",
    "<!-- mcl:cli-reference -->": "cli",
    "<!-- mcl:api-reference -->": "api",
}


def _field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment lines directly above it plus the comment at the end of its line."""
    source = inspect.getsource(cls)
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    result: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            parts = []
            above = node.lineno - 1
            block = []
            while above >= 1 and lines[above - 1].strip().startswith("#"):
                block.insert(0, comments.get(above, ""))
                above -= 1
            parts += block
            for line in range(node.lineno, node.end_lineno + 1):
                if line in comments and not lines[line - 1].strip().startswith("#"):
                    parts.append(comments[line])
            result[node.target.id] = " ".join(p for p in parts if p)
    return result


def _type_text(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        return " or ".join(_type_text(a) for a in args)
    if origin is tuple:
        return "[" + ", ".join(_type_text(a) for a in args) + "]"
    if origin is dict:
        return f"mapping {_type_text(args[0])} → {_type_text(args[1])}"
    if tp is type(None):
        return "null"
    if tp is typing.Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _default_text(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        value = list(value)
    if value == {}:
        return "`{}`"
    return f"`{value}`"


def _range_text(item: dataclasses.Field) -> str:
    valid = item.metadata.get("range")
    return valid.expected if valid is not None else ""


def config_keys() -> list[dict[str, str]]:
    """One row per config key: ``key``, ``type``, ``default``, ``range``, ``meaning``, ``section``."""
    from mcl.config import Config

    rows = []
    default = Config()
    top_hints = typing.get_type_hints(Config)
    top_comments = _field_comments(Config)
    for top in dataclasses.fields(Config):
        tp = top_hints[top.name]
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            comments = _field_comments(tp)
            for item in dataclasses.fields(tp):
                key = f"{top.name}.{item.name}"
                rows.append({"section": top.name, "key": key, "type": _type_text(hints[item.name]),
                             "default": _default_text(getattr(getattr(default, top.name), item.name)),
                             "range": _range_text(item),
                             "meaning": comments.get(item.name, "")})
        else:
            rows.append({"section": "", "key": top.name, "type": _type_text(tp),
                         "default": _default_text(getattr(default, top.name)),
                         "range": _range_text(top),
                         "meaning": top_comments.get(top.name, "")})
    return rows


def _yaml_comments(path: Path) -> dict[str, str]:
    """Top-level key -> the comment at the end of its line in a YAML file."""
    result = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith((" ", "#")) and ":" in line:
            key, _, rest = line.partition(":")
            result[key.strip()] = rest.partition("#")[2].strip()
    return result


def _align_settings() -> type:
    """The dataclass of ``mcl align``'s settings (``configs/align.yaml``)."""
    from mcl.modalities.image_text.align.settings import AlignSettings

    return AlignSettings


def align_reference() -> str:
    """The settings of ``mcl align`` (the aligned stage 0): a separate file, ``configs/align.yaml``."""
    settings = _align_settings()
    hints = typing.get_type_hints(settings)
    from mcl.modalities.image_text.align.settings import DEFAULT_SETTINGS_FILE

    comments = _yaml_comments(DEFAULT_SETTINGS_FILE)
    out = ["### `mcl align` settings (`configs/align.yaml`)", "",
           "The aligned stage 0 of the multimodal recipe (`multimodal.stage0_checkpoint: aligned`) is built from "
           "its own settings file, not from a run config; each is optional there.", "",
           "| key | type | default | meaning |", "|---|---|---|---|"]
    for item in dataclasses.fields(settings):
        out.append(f"| `{item.name}` | {_cell(_type_text(hints[item.name]))} | {_cell(_default_text(item.default))} | "
                   f"{_cell(comments.get(item.name, ''))} |")
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    """Markdown tables of every config key, one table per section."""
    from mcl.config import Config

    hints = typing.get_type_hints(Config)
    out: list[str] = []
    rows = config_keys()
    header = ["| key | type | default | range | meaning |", "|---|---|---|---|---|"]
    for section in dict.fromkeys(row["section"] for row in rows):
        if section:
            doc = inspect.cleandoc(hints[section].__doc__ or "")
            out += [f"### `{section}`", "", doc, ""]
        else:
            out += ["### top level", ""]
        out += header
        for row in rows:
            if row["section"] == section:
                range_text = _cell(row["range"]) if row["range"] else ""
                type_text = row["type"] if "\\|" in row["type"] else _cell(row["type"])
                out.append(f"| `{row['key']}` | {type_text} | {_cell(row['default'])} | {range_text} | "
                           f"{_cell(row['meaning'])} |")
        out.append("")
    return "\n".join(out) + "\n" + align_reference()


def cli_reference() -> str:
    """Every ``mcl`` command: its description, usage and options, from the argparse parser."""
    from mcl.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = ["Global options (before the command): `--debug` (show tracebacks), `--verbose` (more log output).", ""]
    for name, sub in subparsers.choices.items():
        sub.prog = f"mcl {name}"
        out += [f"### `mcl {name}`", "", sub.description or "", "", "```text", sub.format_usage().strip(), "```", ""]
        out += ["| argument | help |", "|---|---|"]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            names = ", ".join(action.option_strings) or str(action.metavar or action.dest)
            if action.option_strings and action.nargs != 0:
                names += f" {action.metavar or action.dest.upper()}"
            text = action.help or ""
            if action.choices:
                text += f" (choices: {', '.join(map(str, action.choices))})"
            if action.default not in (None, False, [], argparse.SUPPRESS) and action.option_strings \
                    and "default" not in text:
                text += f" (default: {action.default})"
            out.append(f"| `{_cell(names)}` | {_cell(text)} |")
        out.append("")
    return "\n".join(out)


def api_reference() -> str:
    """One mkdocstrings block per public name of :mod:`mcl` (``mcl.__all__``), at its defining module."""
    import mcl

    out = []
    for name in mcl.__all__:
        obj = getattr(mcl, name)
        module = getattr(obj, "__module__", None) or mcl._EXPORTS[name]
        out += [f"## `mcl.{name}`", "", f"::: {module}.{name}", "    options:", "      show_root_heading: false",
                ""]
    return "\n".join(out)


GENERATORS = {"config": config_reference, "cli": cli_reference, "api": api_reference}


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs hook: replace each marker by its generated Markdown."""
    for marker, kind in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, GENERATORS[kind]())
    return markdown


if __name__ == "__main__":
    src = Path(__file__).resolve().parents[2] / "src"
    sys.path.insert(0, str(src))
    print(GENERATORS[sys.argv[1]]())

"""``mcl.__all__`` is the documented API: every name imports, has a docstring and type hints; nothing internal."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mcl

ROOT = Path(__file__).resolve().parents[1]


def _hints_missing(obj: object) -> list[str]:
    function = obj.__init__ if inspect.isclass(obj) else obj
    if not inspect.isfunction(function):  # e.g. an exception's __init__, inherited from a builtin
        return []
    signature = inspect.signature(function)
    missing = [name for name, parameter in signature.parameters.items()
               if name not in ("self", "cls") and parameter.annotation is inspect.Parameter.empty]
    if not inspect.isclass(obj) and signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


@pytest.mark.parametrize("name", mcl.__all__)
def test_every_exported_name_imports_with_a_docstring_and_type_hints(name: str) -> None:
    obj = getattr(mcl, name)
    assert getattr(obj, "__name__", name) == name
    assert inspect.getdoc(obj), f"mcl.{name} has no docstring"
    if callable(obj) and not isinstance(obj, type(mcl)):
        assert _hints_missing(obj) == [], f"mcl.{name}: parameters without type hints"


def test_the_readme_and_the_examples_use_only_exported_names_from_the_modules_they_name() -> None:
    # every `from mcl.x import Name` in the README and examples/ names something mcl.__all__ offers too
    text = (ROOT / "README.md").read_text() + "".join(p.read_text() for p in (ROOT / "examples").glob("*.py"))
    used = {name.strip() for names in re.findall(r"^from mcl(?:\.[\w.]+)? import ([\w, ]+)$", text, re.M)
            for name in names.split(",")}
    assert used - set(mcl.__all__) - {"cli"} == set()


def test_internal_names_are_not_exported_and_submodules_are_not_imported_by_attribute() -> None:
    assert "combine_cluster_labels" not in mcl.__all__
    code = ("import mcl, sys\ntry:\n    mcl.report\nexcept AttributeError:\n    print('no')\n"
            "print('mcl.report' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["no", "False"]

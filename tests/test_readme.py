"""Every Python code block of the README runs as written, in order, as a reader would paste them.

Blocks run in one namespace (a later block may use what an earlier one defined) in a scratch
directory that has the shipped ``configs/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "configs").symlink_to(ROOT / "src" / "mcl" / "configs")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for index, block in enumerate(BLOCKS):
        try:
            exec(compile(block, f"README python block {index + 1}", "exec"), namespace)  # noqa: S102
        except Exception as exc:
            pytest.fail(f"README python block {index + 1} failed: {type(exc).__name__}: {exc}\n{block}")

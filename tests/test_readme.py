"""The README is a landing page whose every Python code block runs alone, as a reader would paste it.

Each block runs in a fresh namespace (no block leans on names from another) in a scratch directory
that has the shipped ``configs/``. The page itself: at most 200 lines, ``make demo`` and ``make test``
in its first 10 lines, and every link into ``docs/`` names a page that exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 2


def test_the_readme_is_a_landing_page() -> None:
    lines = README.splitlines()
    assert len(lines) <= 200
    head = "\n".join(lines[:10])
    assert "make demo" in head and "make test" in head
    assert re.search(r"make demo.*\d+(-\d+)? min", head, flags=re.S)  # with its time
    assert re.search(r"make test.*\d+ min", head, flags=re.S)


def test_the_readme_links_to_existing_docs_pages() -> None:
    links = re.findall(r"\]\((docs/[^)#]+)", README)
    assert {"docs/getting-started.md", "docs/configuration.md", "docs/api.md", "docs/cli.md"} <= set(links)
    for link in links:
        assert (ROOT / link).exists(), link


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs_alone(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "configs").symlink_to(ROOT / "src" / "mcl" / "configs")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    try:
        exec(compile(BLOCKS[index], f"README python block {index + 1}", "exec"), namespace)  # noqa: S102
    except Exception as exc:
        pytest.fail(f"README python block {index + 1} failed: {type(exc).__name__}: {exc}\n{BLOCKS[index]}")

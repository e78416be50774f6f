"""``mcl train`` on changed or damaged data (issue 20, items 3 and 5): one-line errors, or counted skips."""

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from data.shards import write_tar
from test_bad_input import error_line, train, write_images


def test_resume_on_a_changed_image_is_refused_naming_it(tmp_path, capsys):
    table = write_images(tmp_path / "table")
    out = tmp_path / "run"
    assert train(table, out) == 0
    capsys.readouterr()
    shutil.copy(table / "images" / "000001.png", table / "images" / "000000.png")
    assert train(table, out) == 2
    line = error_line(capsys)
    assert "images/000000.png" in line and "start afresh in a new --out directory" in line


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def shards(tmp_path):
    root = tmp_path / "shards"
    root.mkdir()
    for s in range(2):
        members = []
        for i in range(12):
            key = f"s{s}k{i:02d}"
            data = b"garbage, not a png" if (s, i) == (0, 3) else _png(10 * i + s)
            split = "test" if i >= 9 else "train"
            members += [(f"{key}.png", data), (f"{key}.json", f'{{"split": "{split}", "shape": "{i % 2}"}}'.encode())]
        write_tar(root / f"shard-{s:06d}.tar", members)
    return root


@pytest.mark.parametrize("residency", ["memory", "stream"])
def test_on_bad_image_skip_is_honoured_for_shards(shards, tmp_path, capsys, residency):
    assert train(shards, tmp_path / "run", "--set", f"data.residency={residency}", "--set", "data.workers=0",
                 "--set", "data.on_bad_image=skip") == 0
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().err


def test_a_bad_image_in_a_stream_worker_is_one_line(shards, tmp_path, capsys):
    assert train(shards, tmp_path / "run", "--set", "data.residency=stream", "--set", "data.workers=1") == 2
    line = error_line(capsys)
    assert "shard-000000.tar#s0k03: cannot be decoded" in line
    assert "Caught" not in line and "Traceback" not in line and "File " not in line

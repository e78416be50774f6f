"""StringColumn: paths and captions as bytes plus offsets, behaving as the list of str they replace;
tables load them (and split and attribute codes) without one Python object per row."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcl.data import load_table
from mcl.data.images import DiskImages
from mcl.data.table.strings import StringColumn


def test_column_behaves_like_the_list():
    texts = ["a.png", "dir/b.png", "", "ünïcode/ç.jpg", "a.png"]
    column = StringColumn.from_strings(texts)
    assert len(column) == 5 and list(column) == texts and column == texts and column != texts[:4]
    assert [column[i] for i in range(5)] == texts and column[-2] == "ünïcode/ç.jpg"
    assert column.index("dir/b.png") == 1 and "" in column and "zz" not in column and column.count("a.png") == 2
    rows = np.array([3, 0, 3])
    assert column[rows] == [texts[3], texts[0], texts[3]] and column[1:3] == texts[1:3]
    assert column[rows].data is column.data  # a view: no bytes copied
    assert np.asarray(column, dtype=str).tolist() == texts and np.asarray(column).dtype.kind == "U"
    assert pickle.loads(pickle.dumps(column)) == texts and StringColumn.from_strings(column) is column
    assert StringColumn.from_strings([]) == [] and list(StringColumn.from_strings([])[np.array([], int)]) == []
    with pytest.raises(IndexError):
        column[5]


def test_column_costs_bytes_not_objects():
    texts = [f"images/{i:06d}.jpg" for i in range(10_000)]
    column = StringColumn.from_strings(texts)
    held = column.data.nbytes + column.starts.nbytes + column.ends.nbytes
    as_list = sys.getsizeof(texts) + sum(sys.getsizeof(t) for t in texts)
    assert held < as_list / 2


def _table(root: Path, rows: int) -> Path:
    root.mkdir()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(root / "a.png")
    lines = ["path,split,caption,shape"]
    lines += [f"a.png,{'TEST' if i % 3 == 0 else 'train'},caption {i},{'zeta' if i % 2 else 'alpha'}"
              for i in range(rows)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("stream", [False, True])
def test_loaded_table_columns_are_compact_and_equal_to_before(tmp_path, stream):
    table = load_table(_table(tmp_path / "t", 7), 4, stream=stream, cache=False, progress=False)
    assert isinstance(table.paths, StringColumn) and isinstance(table.captions, StringColumn)
    assert table.paths == ["a.png"] * 7 and table.captions == [f"caption {i}" for i in range(7)]
    assert table.split.tolist() == ["test" if i % 3 == 0 else "train" for i in range(7)]
    assert table.split.dtype == np.dtype("<U5")
    assert table.attribute_values == {"shape": ["alpha", "zeta"]}
    assert table.attributes["shape"].tolist() == [i % 2 for i in range(7)]
    assert table.attributes["shape"].dtype == np.int64
    test = table.subset("test")
    assert test.captions == ["caption 0", "caption 3", "caption 6"] and isinstance(test.paths, StringColumn)
    if stream:
        assert isinstance(table.images, DiskImages) and table.images.paths is table.paths
        assert np.asarray(test.images[np.array([1])]).shape == (1, 4, 4, 3)

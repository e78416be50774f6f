"""Image tables: round trip, image conversion, the decode cache, and every user-facing error."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcl.data import ImageTable, write_table
from mcl.data.table import decode as decode_module
from mcl.data.table import load_table  # the labels.csv reader itself (mcl.data.load_table reads any source)
from mcl.errors import ConfigError, DataError


def _random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _write_csv(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text(text)
    return root


def _save(root: Path, name: str, image: Image.Image) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    image.save(root / name)


@pytest.fixture
def small_table(tmp_path: Path) -> tuple[Path, np.ndarray]:
    images = _random_images(6, 16)
    root = write_table(
        tmp_path / "t",
        images,
        {"colour": ["red", "blue", "red", "green", "blue", "red"], "size": ["s", "l", "s", "s", "l", "l"]},
        ["train", "train", "train", "train", "test", "test"],
        captions=['a, quoted "one"', "b", "c", "d", "e", "f"],
    )
    return root, images


@pytest.fixture
def no_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any image decode fail loudly, to prove that a load was served from the cache."""

    def fail(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
        raise AssertionError(f"decoded {path}")

    monkeypatch.setattr(decode_module, "decode_image", fail)


@pytest.fixture
def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = decode_module.decode_image

    def counting(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(decode_module, "decode_image", counting)
    return calls


def test_round_trip(small_table: tuple[Path, np.ndarray]) -> None:
    root, images = small_table
    table = load_table(root, 16, cache=False, progress=False)
    assert isinstance(table, ImageTable) and len(table) == 6
    np.testing.assert_array_equal(table.images, images)
    assert table.split.tolist() == ["train"] * 4 + ["test"] * 2
    assert table.attribute_names() == ["colour", "size"]
    assert table.attribute_values == {"colour": ["blue", "green", "red"], "size": ["l", "s"]}
    assert table.attributes["colour"].dtype == np.int64
    assert table.attributes["colour"].tolist() == [2, 0, 2, 1, 0, 2]
    assert table.captions == ['a, quoted "one"', "b", "c", "d", "e", "f"]
    assert table.paths[0] == "images/000000.png" and table.root == root
    header = (root / "labels.csv").read_text().splitlines()[0]
    assert header == "path,split,caption,colour,size"


def test_write_table_primes_the_cache(small_table: tuple[Path, np.ndarray], no_decode: None) -> None:
    root, images = small_table
    table = load_table(root, 16, progress=False)
    assert isinstance(table.images, np.memmap)
    np.testing.assert_array_equal(table.images, images)


def test_resize_and_subset(small_table: tuple[Path, np.ndarray]) -> None:
    root, _ = small_table
    table = load_table(root, 8, progress=False)
    assert table.images.shape == (6, 8, 8, 3) and table.images.dtype == np.uint8
    test = table.subset("test")
    assert len(test) == 2 and test.split.tolist() == ["test", "test"]
    assert isinstance(test.images, np.memmap)  # contiguous rows stay memory-mapped
    assert test.attribute_values == table.attribute_values  # codes stay comparable across splits
    assert test.attributes["colour"].tolist() == [0, 2]
    assert test.captions == ["e", "f"]
    picked = table.take(np.array([0, 2, 5]))
    np.testing.assert_array_equal(picked.images, table.images[[0, 2, 5]])
    with pytest.raises(ValueError):
        table.subset("val")


def test_modes_and_sizes_are_converted(tmp_path: Path) -> None:
    root = tmp_path / "modes"
    palette = Image.new("P", (20, 10))
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.paste(1, (0, 0, 20, 10))
    transparent = palette.copy()
    transparent.info["transparency"] = 0
    images = {
        "grey.png": Image.new("L", (9, 13), 77),
        "rgba.png": Image.new("RGBA", (12, 12), (10, 20, 30, 0)),
        "la.png": Image.new("LA", (7, 7), (200, 128)),
        "palette.png": palette,
        "palette_transparent.png": transparent,
        "wide.png": Image.fromarray(np.full((10, 6), 128 * 257, dtype=np.uint16)),
        "photo.jpg": Image.new("RGB", (40, 20), (250, 250, 250)),
        "cmyk.jpg": Image.new("CMYK", (8, 8), (0, 0, 0, 0)),
    }
    for name, image in images.items():
        _save(root, name, image)
    assert Image.open(root / "wide.png").mode.startswith("I")
    _write_csv(root, "path\n" + "\n".join(images) + "\n")
    table = load_table(root, 4, cache=False, progress=False)
    assert table.images.shape == (len(images), 4, 4, 3)
    by_name = dict(zip(table.paths, table.images, strict=True))
    assert (by_name["grey.png"] == 77).all()
    assert (by_name["rgba.png"] == [10, 20, 30]).all()
    assert (by_name["la.png"] == 200).all()
    assert (by_name["palette.png"] == [10, 200, 30]).all()
    assert (by_name["palette_transparent.png"] == [10, 200, 30]).all()
    assert (by_name["wide.png"] == 128).all()  # 16-bit grey is rescaled, not clipped to white
    assert (np.abs(by_name["photo.jpg"].astype(int) - 250) <= 3).all()
    assert (by_name["cmyk.jpg"] >= 250).all()
    assert table.split.tolist() == ["train"] * len(images)  # no split column: everything is train
    assert table.attributes == {} and table.captions is None


def test_cache_hit_and_invalidation(small_table: tuple[Path, np.ndarray], count_decodes: list[Path]) -> None:
    root, _ = small_table
    first = load_table(root, 8, progress=False)
    assert len(count_decodes) == 6
    assert (root / ".mcl_cache" / "images_8.npy").exists()
    second = load_table(root, 8, progress=False)
    assert len(count_decodes) == 6, "second load must come from the cache"
    assert isinstance(second.images, np.memmap)
    np.testing.assert_array_equal(first.images, second.images)

    csv_path = root / "labels.csv"
    csv_path.write_text(csv_path.read_text().replace(",red,", ",purple,"))
    changed = load_table(root, 8, progress=False)
    assert len(count_decodes) == 12, "a changed labels.csv invalidates the cache"
    assert "purple" in changed.attribute_values["colour"]

    image_path = root / "images" / "000003.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(image_path)
    os.utime(image_path, ns=(1, 1))
    reloaded = load_table(root, 8, progress=False)
    assert len(count_decodes) == 18, "a changed image invalidates the cache"
    assert (reloaded.images[3] == [1, 2, 3]).all()


def test_unwritable_directory_skips_the_cache(small_table: tuple[Path, np.ndarray]) -> None:
    root, images = small_table
    for leftover in (root / ".mcl_cache").iterdir():
        leftover.unlink()
    (root / ".mcl_cache").rmdir()
    (root / ".mcl_cache").write_text("a file where the cache folder should be")
    table = load_table(root, 16, progress=False)
    np.testing.assert_array_equal(table.images, images)
    assert not isinstance(table.images, np.memmap)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda root: None, "image table directory not found"),
        (lambda root: root.mkdir(), "labels.csv: file not found"),
        (lambda root: _write_csv(root, ""), "labels.csv: empty file"),
        (lambda root: _write_csv(root, "file,split\na.png,train\n"), "labels.csv line 1: no 'path' column"),
        (lambda root: _write_csv(root, "path,split\n"), "labels.csv: no image rows"),
        (
            lambda root: _write_csv(root, "path,split\na.png,train\nb.png,val\n"),
            "labels.csv line 3: column 'split'",
        ),
        (
            lambda root: _write_csv(root, "path,colour\na.png,red,extra\n"),
            "labels.csv line 2: 3 fields, expected 2",
        ),
        (lambda root: _write_csv(root, "path,path\na.png,b.png\n"), "column 'path' appears more than once"),
        (lambda root: _write_csv(root, "path,\na.png,x\n"), "line 1: column 2 has an empty name"),
        (lambda root: _write_csv(root, "path\n \n"), "line 2: column 'path' is empty"),
    ],
)
def test_table_errors(tmp_path: Path, setup: Callable[[Path], object], expected: str) -> None:
    root = tmp_path / "table"
    setup(root)
    with pytest.raises(DataError, match=expected.replace("(", r"\(")) as info:
        load_table(root, 8, progress=False)
    assert "\n" not in str(info.value)
    assert str(root) in str(info.value)


@pytest.fixture
def broken_table(tmp_path: Path) -> Path:
    root = tmp_path / "broken"
    for name in ("a.png", "c.png", "e.png"):
        _save(root, name, Image.new("RGB", (8, 8), (9, 9, 9)))
    (root / "d.png").write_bytes(b"not a png at all")
    return _write_csv(root, "path,kind\na.png,x\nb.png,y\nc.png,x\nd.png,y\ne.png,x\n")


def test_bad_image_error_names_path_and_line(broken_table: Path) -> None:
    with pytest.raises(
        DataError, match=r"labels\.csv line 3: column 'path': image 'b\.png' .*file not found"
    ):
        load_table(broken_table, 8, progress=False)
    (broken_table / "b.png").write_bytes(b"")
    with pytest.raises(
        DataError, match=r"labels\.csv line 3: .*'b\.png' cannot be read \(UnidentifiedImageError"
    ):
        load_table(broken_table, 8, progress=False)
    assert not (broken_table / ".mcl_cache" / "images_8.npy").exists()


def test_bad_image_skip_drops_and_logs(broken_table: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mcl"):
        table = load_table(broken_table, 8, on_bad_image="skip", progress=False)
    assert table.paths == ["a.png", "c.png", "e.png"]
    assert table.images.shape == (3, 8, 8, 3) and (table.images == 9).all()
    assert table.attribute_values["kind"] == ["x"]  # values only of the rows kept
    assert "skipped 2 unreadable image(s): 'b.png', 'd.png'" in caplog.text
    # The cache remembers the bad rows: 'skip' again is served from it, 'error' still fails.
    again = load_table(broken_table, 8, on_bad_image="skip", progress=False)
    assert isinstance(again.images, np.memmap) and again.paths == table.paths
    with pytest.raises(DataError, match="'b.png'"):
        load_table(broken_table, 8, progress=False)


def test_skip_with_no_readable_image_is_an_error(tmp_path: Path) -> None:
    root = _write_csv(tmp_path / "gone", "path\nx.png\ny.png\n")
    with pytest.raises(DataError, match=r"labels\.csv: none of the 2 images can be read"):
        load_table(root, 8, on_bad_image="skip", progress=False)


def test_invalid_arguments(small_table: tuple[Path, np.ndarray]) -> None:
    root, _ = small_table
    with pytest.raises(ConfigError, match="on_bad_image"):
        load_table(root, 8, on_bad_image="ignore")
    with pytest.raises(ConfigError, match="image_size"):
        load_table(root, 0)
    with pytest.raises(ValueError, match="reserved"):
        write_table(root / "x", _random_images(1, 4), {"split": ["a"]}, ["train"])
    with pytest.raises(ValueError, match="'colour' has 1 values for 2 images"):
        write_table(root / "x", _random_images(2, 4), {"colour": ["a"]}, ["train", "test"])


def test_interrupted_write_leaves_no_table(
    small_table: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, images = small_table
    real_save = Image.Image.save

    def failing_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        if str(fp).endswith("000004.png"):
            raise OSError("disk full")
        real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_table(root, images, {"colour": ["x"] * 6}, ["train"] * 6)
    assert not (root / "labels.csv").exists()


# ---------------------------------------------------------------------------------------------- issue 12


@pytest.fixture
def outside_table(tmp_path: Path) -> Path:
    """A table whose line-3 path points into a sibling directory."""
    _save(tmp_path / "other" / "images", "1.png", Image.new("RGB", (4, 4), (5, 6, 7)))
    root = tmp_path / "table"
    _save(root, "a.png", Image.new("RGB", (4, 4), (1, 1, 1)))
    return _write_csv(root, "path\na.png\n../other/images/1.png\n")


def test_path_outside_the_table_is_an_error(outside_table: Path) -> None:
    with pytest.raises(DataError, match=r"labels\.csv line 3: column 'path': '\.\./other/images/1\.png' resolves to "
                                        r".*other/images/1\.png, outside .*allow_outside_paths=True") as info:
        load_table(outside_table, 4, progress=False)
    assert "\n" not in str(info.value)
    table = load_table(outside_table, 4, progress=False, allow_outside_paths=True)
    assert (table.images[1] == [5, 6, 7]).all()


@pytest.mark.parametrize("path", ["../../../../etc/hostname", "/etc/hostname", "images/../../x.png"])
def test_escaping_paths_are_refused_before_reading(tmp_path: Path, path: str) -> None:
    root = _write_csv(tmp_path / "t", f"path\n{path}\n")
    with pytest.raises(DataError, match=rf"line 2: column 'path': {path!r}.* outside "):
        load_table(root, 4, progress=False)


def test_symlink_out_of_the_table_is_an_error(tmp_path: Path) -> None:
    _save(tmp_path / "elsewhere", "x.png", Image.new("RGB", (4, 4)))
    root = _write_csv(tmp_path / "t", "path\nlink.png\nsub/x.png\n")
    (root / "link.png").symlink_to(tmp_path / "elsewhere" / "x.png")
    with pytest.raises(DataError, match=r"line 2: column 'path': 'link\.png' resolves to .*elsewhere"):
        load_table(root, 4, progress=False)
    (root / "link.png").unlink()
    _save(root, "real.png", Image.new("RGB", (4, 4)))
    (root / "link.png").symlink_to(root / "real.png")  # a symlink inside the table is fine
    (root / "sub").symlink_to(tmp_path / "elsewhere")  # a symlinked folder is followed too
    with pytest.raises(DataError, match=r"line 3: column 'path': 'sub/x\.png' resolves to .*elsewhere"):
        load_table(root, 4, progress=False)


def test_absolute_path_inside_the_table_is_allowed(tmp_path: Path) -> None:
    root = tmp_path / "t"
    _save(root, "a.png", Image.new("RGB", (4, 4), (3, 3, 3)))
    _write_csv(root, f"path\n{(root / 'a.png').resolve()}\n")
    assert (load_table(root, 4, progress=False).images == 3).all()


def test_non_bool_allow_outside_paths_is_a_config_error(small_table: tuple[Path, np.ndarray]) -> None:
    with pytest.raises(ConfigError, match="allow_outside_paths"):
        load_table(small_table[0], 8, allow_outside_paths="yes")  # type: ignore[arg-type]


def test_resize_is_logged_once_with_the_size_range(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "sizes"
    for name, size in (("a.png", 28), ("b.png", 64), ("c.png", 32), ("d.png", 40)):
        _save(root, name, Image.new("RGB", (size, size)))
    _write_csv(root, "path\na.png\nb.png\nc.png\nd.png\n")
    for cached in (False, True):  # the second load reads the sizes from the cache
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mcl"):
            load_table(root, 32, progress=False)
        resized = [r.getMessage() for r in caplog.records if "resized" in r.getMessage()]
        assert resized == [f"{root / 'labels.csv'}: images 28x28..64x64 resized to 32x32 (3 of 4)"], cached
        assert caplog.records[0].levelno == logging.INFO


def test_no_resize_no_log_and_rotation_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "same"
    _save(root, "a.png", Image.new("RGB", (8, 8)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: a 40x20 JPEG is a 20x40 picture
    Image.new("RGB", (40, 20)).save(root / "b.jpg", exif=exif)
    _write_csv(root, "path\na.png\n")
    with caplog.at_level(logging.INFO, logger="mcl"):
        load_table(root, 8, progress=False)
    assert "resized" not in caplog.text
    _write_csv(root, "path\na.png\nb.jpg\n")
    with caplog.at_level(logging.INFO, logger="mcl"):
        load_table(root, 8, cache=False, progress=False)
    assert "images 8x8..20x40 resized to 8x8 (1 of 2)" in caplog.text


def test_non_utf8_labels_name_the_line(tmp_path: Path) -> None:
    root = tmp_path / "latin"
    root.mkdir()
    (root / "labels.csv").write_bytes(b"\xef\xbb\xbfpath,colour\na.png,red\nb.png,rouge\xe9\n")  # BOM, then Latin-1
    with pytest.raises(DataError, match=r"labels\.csv line 3: not UTF-8 text \(.* at byte \d+\); save the file as"):
        load_table(root, 8, progress=False)

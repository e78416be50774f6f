"""``mcl generate``: writes a table; ``--quiet`` draws no progress bars even on a terminal."""

import io
import sys

import pytest

from mcl.cli import main


class FakeTerminal(io.StringIO):
    """A stderr that says it is a terminal, so progress bars are drawn unless switched off."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_quiet_draws_no_bars(tmp_path, monkeypatch, capsys, quiet):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    argv = ["generate", "trifeature", "--out", str(tmp_path / "t"), "--n-train", "12", "--n-test", "6",
            "--image-size", "16"]
    assert main(argv + (["--quiet"] if quiet else [])) == 0
    assert (tmp_path / "t" / "labels.csv").read_text().count("\n") == 1 + 18
    assert "wrote the trifeature image table" in capsys.readouterr().out
    assert ("rendering trifeature" in terminal.getvalue()) == (not quiet)


CAPTIONED = ["captioned-trifeature", "captioned-trifeature-marked", "captioned-fashion-mnist"]


@pytest.mark.parametrize("kind", ["trifeature", *CAPTIONED])
@pytest.mark.parametrize("fmt", ["jpeg", "webdataset"])
def test_every_generator_writes_every_format(tmp_path, capsys, kind, fmt):
    from mcl.data import open_source
    from mcl.data.captions import fashion_mnist_dir

    if kind == "captioned-fashion-mnist":
        try:
            fashion_mnist_dir()
        except Exception:
            pytest.skip("Fashion-MNIST (Debian dataset-fashion-mnist) not installed")
    out = tmp_path / "data"
    argv = ["generate", kind, "--out", str(out), "--n-train", "10", "--n-test", "10", "--image-size", "16",
            "--format", fmt, "--shard-size", "8", "--quiet"]
    assert main(argv) == 0
    assert ("WebDataset shards" if fmt == "webdataset" else "image table") in capsys.readouterr().out
    if fmt == "webdataset":
        assert len(list(out.glob("*.tar"))) == 3  # 20 samples, 8 per shard
    else:
        assert list(out.rglob("*.jpg")) or list(out.rglob("*.jpeg"))
    table = open_source(out, image_size=16, cache=False, progress=False)
    assert len(table) == 20
    assert len(table.subset("test")) == 10
    if kind in CAPTIONED:
        assert all(table.captions)

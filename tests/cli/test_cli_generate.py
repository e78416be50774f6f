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

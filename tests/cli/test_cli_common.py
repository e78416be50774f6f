"""``mcl.cli``: the parser lists every command; logging is quiet on ranks > 0; the phase-time table."""

import logging

import pytest

from mcl.cli import build_parser, main
from mcl.cli.common import format_phase_times, setup_logging

logger = logging.getLogger("mcl")


@pytest.fixture
def restore_logger():
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def test_every_command_is_registered(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for command in ("demo", "train", "eval", "embed", "report", "generate", "eval-mmvp", "cluster"):
        assert command in out


@pytest.mark.parametrize("command", ["demo", "train", "eval", "embed", "report", "generate", "eval-mmvp"])
def test_shared_options_defined_once(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    assert "--quiet" in capsys.readouterr().out


@pytest.mark.parametrize(("rank", "info_shown"), [("0", True), ("1", False), ("3", False)])
def test_only_rank_0_logs_info(monkeypatch, capsys, restore_logger, rank, info_shown):
    monkeypatch.setenv("RANK", rank)
    setup_logging(verbose=False)
    logger.info("epoch 1 done")
    logger.warning("disk almost full")
    err = capsys.readouterr().err
    assert ("epoch 1 done" in err) == info_shown
    assert "disk almost full" in err


def test_missing_run_directory_is_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mcl: error: ") and err.count("\n") == 1 and "config.yaml" in err


def test_phase_table_lists_phases_other_and_total():
    text = format_phase_times([("data generation", 1.0), ("stage-1 train", 2.5)], 4.0)
    lines = text.splitlines()
    assert lines[0] == "time per phase:"
    assert [line.split()[0] for line in lines[1:]] == ["data", "stage-1", "other", "total"]
    assert lines[-2].split()[-2:] == ["0.5", "s"] and lines[-1].split()[-2:] == ["4.0", "s"]

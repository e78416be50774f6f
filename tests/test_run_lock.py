"""The run directory's writer lock and the --out checks (issue 20, item 1 and 4), through the CLI."""

import socket
import subprocess
import sys
import time

import pytest

from mcl.cli import main
from mcl.run_lock import LOCK_FILE, writer_lock
from test_bad_input import error_line, train, write_images

HOLD = """
import sys, time
from pathlib import Path
from mcl.run_lock import writer_lock
with writer_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("table"))


def test_second_writer_is_refused_at_once_naming_pid_and_host(table, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in out.iterdir())
        started = time.perf_counter()
        assert train(table, out) == 2
        assert time.perf_counter() - started < 1.0
        line = error_line(capsys)
        assert f"in use by process {holder.pid} on host {socket.gethostname()}" in line
        assert sorted(p.name for p in out.iterdir()) == before  # the refused writer wrote nothing
        # --resume is a writer too
        assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 2
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: the directory is usable again
    assert train(table, out) == 0
    # readers work while a writer holds the lock
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["eval", str(out), "--quiet"]) == 0
        assert main(["report", str(out)]) == 0
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_reentrant_within_a_process(tmp_path):
    with writer_lock(tmp_path), writer_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().split()[0].isdigit()
    with writer_lock(tmp_path):  # released and taken again
        pass


def test_out_refuses_a_foreign_directory(table, tmp_path, capsys):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "config.yaml").write_text("# my own config\nfoo: 1\n")
    assert train(table, project) == 2
    assert "holds a config.yaml but no manifest.json" in error_line(capsys)
    assert (project / "config.yaml").read_text() == "# my own config\nfoo: 1\n"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert train(table, other) == 2
    assert "not empty and not an mcl run (holds 'notes.txt')" in error_line(capsys)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert train(table, afile) == 2
    assert "--out names a file" in error_line(capsys)

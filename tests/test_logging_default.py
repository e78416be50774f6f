"""The Python API logs to stderr at INFO by default, and yields to the application's own logging config."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import logging, sys
    if sys.argv[1] == "configured":
        logging.basicConfig(level=logging.INFO, format="APP %(name)s %(message)s")
    from mcl.logging_utils import configure_logging, phase
    if sys.argv[1] == "warning":
        configure_logging("WARNING")
    with phase("stage-1", "embed", "embedding the training set"):
        pass
""")


def _stderr(mode: str) -> str:
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return result.stderr


def test_api_logs_one_line_per_phase_event_at_info_by_default() -> None:
    lines = _stderr("default").splitlines()
    assert lines[0] == "[mcl] stage-1: embedding the training set ..."
    assert lines[1].startswith("[mcl] stage-1: embed done in ")
    assert len(lines) == 2


def test_application_logging_config_takes_over_without_duplicates() -> None:
    lines = _stderr("configured").splitlines()
    assert lines == [line for line in lines if line.startswith("APP mcl")] and len(lines) == 2


def test_configure_logging_warning_silences_mcl() -> None:
    assert _stderr("warning") == ""


def test_notebook_detection_is_false_outside_jupyter() -> None:
    from mcl.logging_utils import in_notebook

    assert in_notebook() is False

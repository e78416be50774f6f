"""The report's stage-diagnostics table: groups trained per stage and the label-free diagnostics."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from mcl.config import Config
from mcl.files import write_json
from mcl.report.sections import _diagnostics_table
from mcl.run import RunDirectory


def test_the_table_shows_groups_trained_and_diagnostics_per_stage(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    write_json(tmp_path / "stage-1" / "diagnostics.json", {"stage": 1, "groups_trained": 1, "mean_negatives": 255.0,
                                                           "rankme": 40.0, "novelty": None})
    # a stage recorded before diagnostics existed: the groups come from its pseudo_labels.json
    write_json(tmp_path / "stage-2" / "pseudo_labels.json", {"groups": 9, "group_sizes": [40] * 8 + [1]})
    html = _diagnostics_table(SimpleNamespace(run=run, config=Config(), finished=[1, 2]))
    assert "<th>stage-1</th><td>1</td><td>255</td><td>-</td><td>-</td><td>40</td>" in html  # novelty, view novelty
    assert "<th>stage-2</th><td>8</td>" in html
    assert _diagnostics_table(SimpleNamespace(run=run, config=Config(), finished=[])) == ""

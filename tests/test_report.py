"""``mcl report``: a self-contained HTML page, its PNGs, notes for missing pieces, a real browser check."""

import base64
import json
import re
import shutil
import subprocess

import pytest

from mcl.cli import main
from mcl.report import REPORT_DIR, REPORT_FILE, probe_matrices

TINY = [
    "--quiet", "--set", "data.n_train=96", "--set", "data.n_test=48", "--set", "data.image_size=16",
    "--set", "model.width=0.25", "--set", "model.hidden_dim=32", "--set", "model.projection_dim=16",
    "--set", "train.epochs=2", "--set", "train.batch_size=32", "--set", "mcl.stages=2", "--set", "mcl.clusters=3",
    "--set", "mcl.min_group_size=4", "--set", "mcl.kmeans_restarts=1", "--set", "eval.linear_max_iter=50",
    "--set", "eval.ensemble=false", "--set", "eval.references=false",
]
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([\w.]+)">')
PICTURES = {"training_curves.png", "cluster_sizes.png", "pseudo_label_groups.png", "suppression.png",
            "probe_linear.png", "probe_knn.png", "feature_map.png", "pair_similarity.png"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "configs/demo.yaml", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
    out = shutil.copytree(trained, tmp_path_factory.mktemp("evaluated") / "run")
    assert main(["eval", str(out), "--quiet"]) == 0
    assert main(["report", str(out)]) == 0
    return out


def inline_pictures(page: str) -> dict[str, bytes]:
    return {name: base64.b64decode(data) for data, name in IMG.findall(page)}


@pytest.mark.slow
def test_report_is_self_contained_and_complete(evaluated):
    page = (evaluated / REPORT_DIR / REPORT_FILE).read_text()
    pictures = inline_pictures(page)
    assert set(pictures) == PICTURES
    for name, png in pictures.items():
        assert png.startswith(b"\x89PNG") and (evaluated / REPORT_DIR / name).read_bytes() == png
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing to fetch: no network, no files
    assert "http://" not in page and "https://" not in page
    assert 'class="note"' not in page  # nothing is missing
    assert "<th>stage-2</th>" in page and "<th>shape</th>" in page  # the accuracy tables


@pytest.mark.slow
def test_missing_pieces_become_notes(trained, tmp_path, capsys):
    run = shutil.copytree(trained, tmp_path / "run")
    (run / "stage-2" / "clusters.json").unlink()
    assert main(["report", str(run)]) == 0
    assert str(run / REPORT_DIR / REPORT_FILE) in capsys.readouterr().out
    page = (run / REPORT_DIR / REPORT_FILE).read_text()
    assert "no eval.json yet; run &#x27;mcl eval" in page
    assert set(inline_pictures(page)) == PICTURES - {"suppression.png", "probe_linear.png", "probe_knn.png"}


@pytest.mark.slow
def test_unknown_probe_kinds_are_plotted(evaluated, tmp_path):
    run = shutil.copytree(evaluated, tmp_path / "run")
    result = json.loads((run / "eval.json").read_text())
    result["rows"] += [
        {"representation": "mcl-2", "attribute": "color", "probe": "zeroshot", "accuracy": 0.4},
        {"representation": "mcl-2", "benchmark": "mmvp", "probe": "paired", "score": 0.25},
    ]
    (run / "eval.json").write_text(json.dumps(result))
    assert main(["report", str(run)]) == 0
    pictures = inline_pictures((run / REPORT_DIR / REPORT_FILE).read_text())
    assert {"probe_zeroshot.png", "probe_paired.png"} <= set(pictures)


def test_probe_matrices_of_any_kind():
    rows = [
        {"representation": "stage-1", "attribute": "shape", "probe": "linear", "accuracy": 0.5},
        {"representation": "stage-1", "attribute": "color", "probe": "linear", "accuracy": 1.0},
        {"representation": "stage-2", "attribute": "shape", "probe": "linear", "accuracy": 0.75},
        {"representation": "clip", "task": "retrieval", "probe": "zeroshot", "recall_at_5": 0.3},
        {"representation": "clip", "probe": "paired", "note": "no score"},
    ]
    matrices = probe_matrices(rows)
    names, columns, values = matrices["linear"]
    assert names == ["stage-1", "stage-2"] and columns == ["shape", "color"]
    assert values[0].tolist() == [0.5, 1.0] and values[1, 0] == 0.75 and values[1, 1] != values[1, 1]  # NaN
    assert matrices["zeroshot"][1] == ["retrieval"] and matrices["zeroshot"][2][0, 0] == 0.3
    assert "paired" not in matrices


def test_report_of_a_non_run_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory (no config.yaml)" in capsys.readouterr().err


@pytest.mark.slow
def test_report_renders_in_a_headless_browser(evaluated, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); the browser check needs one")
    page = (evaluated / REPORT_DIR / REPORT_FILE).read_text()
    counter = ("<script>window.addEventListener('load', () => { const images = [...document.images]; "
               "document.body.dataset.images = images.length; document.body.dataset.loaded = "
               "images.filter(i => i.complete && i.naturalWidth > 0).length; });</script></body>")
    checked = tmp_path / "report.html"  # a copy with the counter; the report itself has no script
    checked.write_text(page.replace("</body>", counter))
    shot = tmp_path / "shot.png"
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,4000", f"--screenshot={shot}",
         "--dump-dom", checked.as_uri()],
        capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", result.stdout)
    assert body, result.stderr[-2000:]
    assert f'data-images="{len(PICTURES)}"' in body.group(0) and f'data-loaded="{len(PICTURES)}"' in body.group(0)
    assert shot.stat().st_size > 10_000  # kept in the test's tmp dir to look at


@pytest.mark.slow
def test_a_failing_plot_becomes_a_note(trained, tmp_path, monkeypatch):
    import mcl.report

    def broken(run):
        raise ValueError("an encoder layout the report does not know")

    broken.__name__ = "feature_maps"
    sections = [broken if s is mcl.report.feature_maps else s for s in mcl.report.SECTIONS]
    monkeypatch.setattr(mcl.report, "SECTIONS", sections)
    run = shutil.copytree(trained, tmp_path / "run")
    assert main(["report", str(run)]) == 0
    page = (run / REPORT_DIR / REPORT_FILE).read_text()
    assert "could not be drawn (ValueError: an encoder layout the report does not know)" in page
    assert "pair_similarity.png" in inline_pictures(page)


@pytest.mark.slow
def test_umap_feature_map_on_request(trained, tmp_path):
    pytest.importorskip("umap", reason="umap-learn is an optional extra")
    run = shutil.copytree(trained, tmp_path / "run")
    assert main(["report", str(run), "--map", "umap"]) == 0
    page = (run / REPORT_DIR / REPORT_FILE).read_text()
    assert "UMAP of the backbone features" in page and "feature_map.png" in inline_pictures(page)


def test_umap_missing_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "umap", None)
    assert main(["report", str(tmp_path), "--map", "umap"]) == 2
    assert "'umap-learn' package is not installed" in capsys.readouterr().err

"""``mcl report``: a self-contained page with a headline, STALE/PARTIAL eval.json warnings, image and image-text runs.

Pure pieces (headline, plots) are tested in ``tests/report/``; these tests train tiny runs.
"""

import base64
import json
import os
import re
import shutil
import subprocess

import pytest

import mcl.report.sections
from mcl.cli import main
from mcl.report import REPORT_DIR, REPORT_FILE
from mcl.run import CLUSTERS_INFO_FILE, EVAL_FILE, RunDirectory

TINY = [
    "--quiet", "--set", "data.n_train=96", "--set", "data.n_test=48", "--set", "data.image_size=16",
    "--set", "model.width=0.25", "--set", "model.hidden_dim=32", "--set", "model.projection_dim=16",
    "--set", "train.epochs=2", "--set", "train.batch_size=32", "--set", "mcl.stages=2", "--set", "mcl.clusters=3",
    "--set", "mcl.min_group_size=4", "--set", "mcl.kmeans_restarts=1", "--set", "eval.linear_max_iter=50",
    "--set", "eval.ensemble=true", "--set", "eval.references=false",
]
TINY_MULTIMODAL = [
    "--quiet", "--set", "data.n_train=96", "--set", "data.n_test=48", "--set", "data.image_size=16",
    "--set", "multimodal.image_width=0.25", "--set", "multimodal.embed_dim=16", "--set", "multimodal.text_width=16",
    "--set", "multimodal.text_heads=2", "--set", "train.epochs=1", "--set", "train.batch_size=32",
    "--set", "mcl.stages=2", "--set", "mcl.clusters=3", "--set", "mcl.min_group_size=4",
    "--set", "mcl.kmeans_restarts=1", "--set", "eval.linear_max_iter=50", "--set", "eval.paired_pairs=20",
]
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([\w.]+)">')
PICTURES = {"training_curves.png", "cluster_sizes.png", "pseudo_label_groups.png", "suppression.png",
            "probe_linear.png", "probe_knn.png", "feature_map.png", "pair_similarity.png"}
EVAL_PICTURES = {"suppression.png", "probe_linear.png", "probe_knn.png"}


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


def read_page(run) -> str:
    return (run / REPORT_DIR / REPORT_FILE).read_text()


@pytest.mark.slow
def test_report_is_self_contained_and_complete(evaluated):
    page = read_page(evaluated)
    pictures = inline_pictures(page)
    assert set(pictures) == PICTURES
    for name, png in pictures.items():
        assert png.startswith(b"\x89PNG") and (evaluated / REPORT_DIR / name).read_bytes() == png
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing to fetch: no network, no files
    assert "http://" not in page and "https://" not in page
    assert 'class="note"' not in page and 'class="warning"' not in page  # nothing is missing, nothing stale
    assert "<th>stage-2</th>" in page and "<th>shape</th>" in page  # the accuracy tables
    assert "colour" not in page.lower()  # one spelling: the data's attribute is "color"


@pytest.mark.slow
def test_headline_opens_the_page(evaluated):
    page = read_page(evaluated)
    headline = re.search(r'<p class="headline">(By linear probe, stage 1 [^<]+)</p>', page)
    assert headline, page[:3000]
    assert "vs chance 10%" in headline.group(1) and "mcl-2" in headline.group(1) and "ensemble-2" in headline.group(1)
    assert page.index('class="headline"') < page.index("<dl>") < page.index("<h2>")


@pytest.mark.slow
def test_stale_eval_json_is_flagged(evaluated, tmp_path, capsys):
    run = shutil.copytree(evaluated, tmp_path / "run")
    written = (run / EVAL_FILE).stat().st_mtime
    os.utime(RunDirectory(run).weights("stage-2"), (written + 60, written + 60))  # retrained after mcl eval
    assert main(["report", str(run)]) == 0
    assert "STALE" in capsys.readouterr().err  # the log says so too
    page = read_page(run)
    warning = re.search(r'<p class="warning">(STALE: [^<]+)</p>', page)
    assert warning and "re-run &#x27;mcl eval" in warning.group(1)
    assert '<p class="headline">' not in page
    assert '<p class="headline stale">Describes earlier weights (STALE eval.json)' in page
    assert "Per-attribute probe accuracy (eval.json): STALE" in page
    assert "<dt>eval.json</dt><dd>STALE</dd>" in page


@pytest.mark.slow
def test_partial_eval_json_is_flagged(evaluated, tmp_path):
    run = shutil.copytree(evaluated, tmp_path / "run")
    result = json.loads((run / EVAL_FILE).read_text())
    (run / EVAL_FILE).write_text(json.dumps({**result, "unfinished_stages": [2]}))
    assert main(["report", str(run)]) == 0
    page = read_page(run)
    assert re.search(r'<p class="warning">PARTIAL: [^<]*stage-2 not trained then', page)
    assert "<dt>eval.json</dt><dd>PARTIAL</dd>" in page and '<p class="headline">' not in page


@pytest.mark.slow
def test_missing_pieces_become_notes(trained, tmp_path, capsys):
    run = shutil.copytree(trained, tmp_path / "run")
    (run / "stage-2" / CLUSTERS_INFO_FILE).unlink()
    assert main(["report", str(run)]) == 0
    assert str(run / REPORT_DIR / REPORT_FILE) in capsys.readouterr().out
    page = read_page(run)
    assert "no eval.json yet; run &#x27;mcl eval" in page
    assert set(inline_pictures(page)) == PICTURES - EVAL_PICTURES
    assert 'class="headline' not in page


@pytest.mark.slow
def test_a_moved_data_set_is_a_note(trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    config = (run / "config.yaml").read_text()
    data = re.search(r"^  path: (.+)$", config, re.MULTILINE).group(1)
    (run / "config.yaml").write_text(config.replace(data, str(tmp_path / "moved")))
    assert main(["report", str(run)]) == 0
    page = read_page(run)
    assert "the run&#x27;s data set could not be read" in page
    assert "feature_map.png" not in inline_pictures(page)


@pytest.mark.slow
def test_unknown_probe_kinds_are_plotted(evaluated, tmp_path):
    run = shutil.copytree(evaluated, tmp_path / "run")
    result = json.loads((run / EVAL_FILE).read_text())
    result["rows"] += [
        {"representation": "mcl-2", "attribute": "color", "probe": "zeroshot", "accuracy": 0.4},
        {"representation": "mcl-2", "benchmark": "mmvp", "probe": "paired", "score": 0.25},
    ]
    (run / EVAL_FILE).write_text(json.dumps(result))
    assert main(["report", str(run)]) == 0
    pictures = inline_pictures(read_page(run))
    assert {"probe_zeroshot.png", "probe_paired.png"} <= set(pictures)


@pytest.mark.slow
def test_a_failing_plot_is_an_error_not_a_note(trained, tmp_path, monkeypatch):
    def feature_maps(run):
        raise ValueError("an encoder layout the report does not know")

    sections = tuple(feature_maps if s is mcl.report.sections.feature_maps else s
                     for s in mcl.report.sections.SECTIONS["images"])
    monkeypatch.setitem(mcl.report.sections.SECTIONS, "images", sections)
    run = shutil.copytree(trained, tmp_path / "run")
    with pytest.raises(ValueError, match="an encoder layout the report does not know"):
        main(["report", str(run)])
    assert not (run / REPORT_DIR / REPORT_FILE).exists()  # no page that hides the failure


@pytest.mark.slow
def test_report_of_an_image_text_run(tmp_path):
    import mcl

    run = tmp_path / "run"
    assert main(["train", "configs/multimodal-scratch.yaml", "--out", str(run), *TINY_MULTIMODAL]) == 0
    mcl.evaluate(run, progress=False)
    assert main(["report", str(run)]) == 0
    page = read_page(run)
    pictures = inline_pictures(page)
    assert {"training_curves.png", "cluster_sizes.png", "suppression.png", "probe_linear.png", "probe_zeroshot.png",
            "probe_paired.png", "feature_map.png", "pair_similarity.png"} <= set(pictures)
    assert "probe_knn.png" not in pictures  # image-text runs have no kNN rows
    assert "Positive and negative pairs (image and caption)" in page and "image embeddings of" in page
    assert '<p class="headline">By linear probe, stage 1' in page and 'class="note"' not in page


def test_report_of_a_non_run_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory (no config.yaml)" in capsys.readouterr().err


@pytest.mark.slow
def test_report_renders_in_a_headless_browser(evaluated, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); the browser check needs one")
    page = read_page(evaluated)
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
def test_umap_feature_map_on_request(trained, tmp_path):
    pytest.importorskip("umap", reason="umap-learn is an optional extra")
    run = shutil.copytree(trained, tmp_path / "run")
    assert main(["report", str(run), "--map", "umap"]) == 0
    page = read_page(run)
    assert "UMAP of the backbone features" in page and "feature_map.png" in inline_pictures(page)


def test_umap_missing_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "umap", None)
    assert main(["report", str(tmp_path), "--map", "umap"]) == 2
    assert "'umap-learn' package is not installed" in capsys.readouterr().err

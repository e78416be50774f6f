"""The report page of runs built from a config and a hand-written eval.json (no training): headline and header.

The multimodal recipe (``configs/multimodal.yaml``: an aligned stage 0 fine-tuned by MCL beside the
finetune-k baseline) gets the stage-0 / finetune-k headline and a header of what that run does; a
unimodal run keeps its headline and ``mcl.init`` / temperature.
"""

import json
import re

import pytest

from mcl.config import load_config, save_config
from mcl.report import REPORT_DIR, REPORT_FILE, write_report
from mcl.run import CONFIG_FILE, EVAL_FILE, RunDirectory

from .test_findings import FINETUNE_RESULT, RESULT


def make_run(root, config_file: str, result: dict, overrides: list[str] | None = None):
    config = load_config(config_file, [f"data.path={root / 'data'}", *(overrides or [])])  # as training resolves it
    RunDirectory(root).start(config, {"data": "hand-written"})
    save_config(config, root / CONFIG_FILE)
    (root / EVAL_FILE).write_text(json.dumps(result))
    return root


def page_of(root) -> tuple[str, dict[str, str]]:
    """The page's headline and its header (``dt -> dd``)."""
    assert write_report(root) == root / REPORT_DIR / REPORT_FILE
    page = (root / REPORT_DIR / REPORT_FILE).read_text()
    found = re.search(r'<p class="headline">([^<]+)</p>', page)
    header = dict(re.findall(r"<dt>([^<]+)</dt><dd>([^<]*)</dd>", page))
    return (found.group(1) if found else "").replace("&#x27;", "'"), {k: v.replace("&#x27;", "'")
                                                                       for k, v in header.items()}


def test_multimodal_fine_tuning_run(tmp_path):
    headline, header = page_of(make_run(tmp_path / "run", "configs/multimodal.yaml", FINETUNE_RESULT))
    assert headline == ("Stage 0 is weakest at mark (zero-shot 21.8%, chance 25%). MCL: stage-1 40.3% vs plain "
                        "fine-tuning (finetune-1, same steps) 35.1% (+5.2 points); mcl-2 43.5% vs finetune-2 43.9% "
                        "(-0.4 points).")
    assert header["MCL"] == ("2 stages, K=10, negatives=batch, init=previous (stage 1 from stage 0, stage k from "
                             "stage k-1)")  # multimodal.init, not mcl.init (scratch in this config)
    assert header["objective"] == ("clip, learnable logit scale (from the stage-0 checkpoint's); identical captions "
                                   "are no negatives")  # no objective.temperature: the CLIP loss does not read it
    assert header["stage 0"].startswith("the aligned model of 'mcl align' (stage0_checkpoint: aligned")
    assert "stage 1's pseudo-labels; not part of mcl-k" in header["stage 0"]
    assert header["locks"] == ("image tower locked except its last 2 layer groups; text tower locked; "
                               "BatchNorm statistics frozen")
    assert header["training"] == "10 epochs per stage, batch 128, lr 0.0002 (constant after 30 warm-up steps)"
    assert header["baseline"].startswith("finetune-k (none finished yet): plain fine-tuning from stage 0")
    page = (tmp_path / "run" / REPORT_DIR / REPORT_FILE).read_text()
    caption = re.search(r'alt="suppression.png"><figcaption>([^<]+)<', page).group(1)
    assert caption.startswith("Zero-shot accuracy per attribute of stage 0") and "ensemble" not in caption


@pytest.mark.parametrize(("overrides", "objective"), [
    ([], "clip, learnable logit scale (from the stage-0 checkpoint's)"),
    (["multimodal.init=scratch"], "clip, learnable logit scale (initial temperature 0.07)"),
])
def test_clip_logit_scale_starts_where_the_weights_do(tmp_path, overrides, objective):
    _, header = page_of(make_run(tmp_path / "run", "configs/multimodal.yaml", FINETUNE_RESULT, overrides))
    assert header["objective"].startswith(objective)


def test_unimodal_run_keeps_its_headline_and_header(tmp_path):
    result = {**RESULT, "attribute_classes": {"shape": 10, "texture": 10, "color": 10}}
    headline, header = page_of(make_run(tmp_path / "run", "configs/demo.yaml", result))
    assert headline == ("By linear probe, stage 1 suppressed texture (42% vs chance 10%); mcl-3 recovered it to 74% "
                        "(ensemble-3, as many seeds of stage 1: 57%).")
    assert header["objective"] == "ntxent, temperature 0.5"
    assert header["MCL"].endswith("init=scratch") and "stage 0" not in header and "locks" not in header
    assert header["baseline"].startswith("ensemble-k: stage 1 and k-1 more seeds of it")


def test_multimodal_report_names_the_data_eval_json_scored(tmp_path):
    """eval.json's own record of its data (mcl eval --data), not the training config's shards; no 'current'."""
    result = {**FINETUNE_RESULT, "data": "/elsewhere/held-out", "train_rows": 900, "test_rows": 300}
    root = make_run(tmp_path / "run", "configs/multimodal.yaml", result)
    _, header = page_of(root)
    assert header["eval.json data"] == "/elsewhere/held-out (900 train rows, 300 test rows); not the training data"
    assert header["training data"].endswith(f"({root / 'data'})")
    assert header["eval.json"].startswith("written ") and "newest weights" in header["eval.json"]
    page = (root / REPORT_DIR / REPORT_FILE).read_text()
    assert "current" not in page.lower()
    caption = re.search(r'alt="suppression.png"><figcaption>([^<]+)<', page).group(1)
    assert caption.endswith("Error bars: the 95% Wilson interval of each accuracy on 300 test images.")


def test_eval_json_without_a_data_record_says_so(tmp_path):
    _, header = page_of(make_run(tmp_path / "run", "configs/multimodal.yaml", FINETUNE_RESULT))
    assert header["eval.json data"] == "not recorded in eval.json"

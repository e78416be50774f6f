"""The report's HTML page: headline, warnings, summary, then every section, with the PNGs inlined.

The page is self-contained: every picture is a base64 PNG data URI, the style is inline, there is
no script and nothing to fetch. Warnings about ``eval.json`` (STALE, PARTIAL) stand at the top, above
the headline, so results that no longer describe the run's weights are never read as describing them.

The summary names what the run did: for image-text runs stage 0 (its checkpoint, what is done with
it), the towers' locks, ``multimodal.init`` (not ``mcl.init``, which only image runs use) and CLIP's
learnable logit scale (not ``objective.temperature``, which the CLIP loss does not read); for every
run the baseline MCL is compared with (:attr:`ReportRun.recipe`).
"""

from __future__ import annotations

import base64
import html

from mcl.config import Config
from mcl.modalities import IMAGES
from mcl.modalities.image_text.align import ALIGNED
from mcl.report.data import ReportRun, when
from mcl.report.recipe import ENSEMBLE, FINETUNE
from mcl.report.sections import Section

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { color: #555; font-size: 0.9em; }
.note { color: #8a5a00; background: #fff6e0; padding: 0.4em 0.8em; border-radius: 4px; }
.warning { color: #fff; background: #b00020; padding: 0.6em 0.9em; border-radius: 4px; font-weight: bold; }
.headline { font-size: 1.2em; background: #eef4ff; padding: 0.6em 0.9em; border-radius: 4px; }
.headline.stale { background: #f4f4f4; color: #666; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; } th { background: #f4f4f4; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; } dt { font-weight: bold; }
"""


def _image_text(run: ReportRun) -> bool:
    """Whether the run is image-text (its modality, :func:`mcl.modalities.modality_of`'s decision)."""
    return run.modality.name != IMAGES.name


def _objective(config: Config) -> str:
    """The loss; CLIP's temperature is a learned logit scale, so ``objective.temperature`` is not shown for it."""
    if config.objective.name != "clip":
        return f"{config.objective.name}, temperature {config.objective.temperature}"
    mm = config.multimodal
    if mm.model not in ("small", "pretrained-towers"):
        start = "from the pretrained weights"
    elif mm.stage0_checkpoint and mm.init != "scratch":
        start = "from the stage-0 checkpoint's"
    else:
        start = f"initial temperature {mm.init_temperature}"
    duplicates = "; identical captions are no negatives" if mm.mask_duplicate_captions else ""
    return f"clip, learnable logit scale ({start}){duplicates}"


def _stage0(config: Config) -> str:
    """Which model stage 0 is and what the run does with it (image-text runs)."""
    mm = config.multimodal
    if mm.stage0_checkpoint == ALIGNED:
        model = "the aligned model of 'mcl align' (stage0_checkpoint: aligned, cached)"
    elif mm.stage0_checkpoint:
        model = f"checkpoint {mm.stage0_checkpoint}"
    else:
        model = f"the initial {mm.model} model" + (f" ({mm.pretrained})" if mm.pretrained else "")
    if not mm.stage0:
        return f"not clustered (multimodal.stage0: false); stages start from {model}"
    integrated = "part of every mcl-k" if mm.integrate_stage0 else "not part of mcl-k"
    return f"{model}; its image clusters (K={config.mcl.clusters}) are stage 1's pseudo-labels; {integrated}"


def _init(config: Config, image_text: bool) -> str:
    """Where each stage's weights start: ``multimodal.init`` for image-text runs, ``mcl.init`` otherwise."""
    if not image_text:
        return f"init={config.mcl.init}"
    first = "stage 0" if config.multimodal.stage0 else "the initial model"
    meaning = {"previous": f"stage 1 from {first}, stage k from stage k-1",
               "pretrained": f"every stage from {first}",
               "scratch": "every stage a fresh seeded build"}[config.multimodal.init]
    return f"init={config.multimodal.init} ({meaning})"


def _locks(config: Config) -> str:
    mm = config.multimodal

    def tower(name: str, locked: bool, unlocked: int) -> str:
        if not locked:
            return f"{name} tower trained"
        return f"{name} tower locked" + (f" except its last {unlocked} layer groups" if unlocked else "")

    parts = [tower("image", mm.lock_image, mm.unlocked_image_groups), tower("text", mm.lock_text,
                                                                            mm.unlocked_text_groups)]
    return "; ".join(parts + (["BatchNorm statistics frozen"] if mm.freeze_bn_stats else []))


def _training(config: Config) -> str:
    train = config.train
    if train.warmup_steps is not None:
        warmup = f" after {train.warmup_steps} warm-up steps"
    else:
        warmup = f" after {train.warmup_epochs:g} warm-up epochs" if train.warmup_epochs else ""
    cap = f", at most {train.max_steps} steps per stage" if train.max_steps else ""
    return (f"{train.epochs} epochs per stage, batch {train.batch_size}, lr {train.lr} "
            f"({train.schedule}{warmup}){cap}")


def _baseline(run: ReportRun) -> str:
    """The baseline MCL is compared with (:attr:`ReportRun.recipe`), in words."""
    config, baseline = run.config, run.recipe.baseline
    if baseline == FINETUNE:
        multimodal = config.multimodal
        start = ("stage 0" if _image_text(run) and multimodal.stage0 and multimodal.init != "scratch"
                 else "where stage 1 starts")
        members = ", ".join(run.baseline_members()) or "none finished yet"
        return (f"finetune-k ({members}): plain fine-tuning from {start} on random batches, with the same locks, "
                "lr, data and as many steps as stages 1..k")
    if baseline == ENSEMBLE:
        return "ensemble-k: stage 1 and k-1 more seeds of it, integrated (mcl-k's size and training compute)"
    return "none (eval.ensemble and eval.finetune_baseline off, or not trained yet)"


def _eval_data(run: ReportRun) -> str:
    """The data eval.json was computed on, by its own record (``mcl eval --data`` may differ from training's)."""
    if run.evaluation is None:
        return ""
    result = run.evaluation.result
    data = result.get("data")
    if not data:
        return "not recorded in eval.json"
    sizes = ", ".join(f"{result[key]} {key.split('_')[0]} rows" for key in ("train_rows", "test_rows")
                      if isinstance(result.get(key), int))
    same = str(data) == str(run.config.data.path)
    return f"{data}" + (f" ({sizes})" if sizes else "") + ("" if same else "; not the training data")


def _summary(run: ReportRun) -> str:
    config = run.config
    evaluation = run.evaluation
    if evaluation is None:
        eval_state = "not yet (run 'mcl eval')"
    else:
        eval_state = "; ".join(w.split(":", 1)[0] for w in evaluation.warnings()) or (
            f"written {when(evaluation.written)}, after the run's newest weights ({when(evaluation.latest_weights)})")
    multimodal = config.multimodal
    image_text = _image_text(run)
    items = {
        "run directory": str(run.root.resolve()),
        "modality": run.modality.name,
        "training data": f"{config.data.source} ({config.data.path})",
        "model": f"two-tower {multimodal.model}, embedding {multimodal.embed_dim}"
        + (f", images at {multimodal.image_resolution} px" if multimodal.image_resolution else "") if image_text
        else f"{config.model.backbone}, width {config.model.width}",
        "stage 0": _stage0(config) if image_text else "",
        "locks": _locks(config) if image_text else "",
        "objective": _objective(config),
        "MCL": f"{config.mcl.stages} stages, K={config.mcl.clusters}, negatives={config.mcl.negatives}, "
               f"{_init(config, image_text)}",
        "training": _training(config),
        "baseline": _baseline(run),
        "finished members": ", ".join(r.name for r in run.representations
                                      if len(r.members) == 1 or r.name.startswith("ensemble-")) or "none yet",
        "eval.json": eval_state,
        "eval.json data": _eval_data(run),
    }
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                            for k, v in items.items() if v) + "</dl>"


def _section_html(section: Section) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in section.notes]
    for picture in section.pictures:
        data = base64.b64encode(picture.png).decode()
        parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(picture.name)}">'
                     f"<figcaption>{html.escape(picture.caption)}</figcaption></figure>")
    parts.append(section.table_html)
    return "\n".join(parts)


def _top(run: ReportRun, headline: str | None) -> str:
    """Warnings about eval.json, then the headline (marked when eval.json does not describe the run's weights)."""
    evaluation = run.evaluation
    warnings = evaluation.warnings() if evaluation else []
    parts = [f'<p class="warning">{html.escape(w)}</p>' for w in warnings]
    if headline:
        if warnings:
            reasons = ", ".join(w.split(":", 1)[0] for w in warnings)
            parts.append(f'<p class="headline stale">Describes earlier weights ({reasons} eval.json): '
                         f'{html.escape(headline)}</p>')
        else:
            parts.append(f'<p class="headline">{html.escape(headline)}</p>')
    return "\n".join(parts)


def render_html(run: ReportRun, sections: list[Section], headline: str | None) -> str:
    """The whole page: warnings, headline, summary, then every section (no external resources)."""
    body = "\n".join(_section_html(section) for section in sections)
    title = f"MCL report: {run.root.resolve().name}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{_top(run, headline)}\n"
            f"{_summary(run)}\n{body}\n</body></html>\n")

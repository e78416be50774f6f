"""``mcl eval``: per-attribute probes for each stage, MCL after each stage, and the references.

Representations (rows of ``eval.json``):

- ``stage-s``: stage s's backbone features alone;
- ``mcl-k``: stages 1..k integrated (``mcl.integration``);
- ``ensemble-k``: k independently seeded single-stage models integrated the same way (stage 1 +
  ``ensemble-2..k``): same feature size and training compute as ``mcl-k``, so a gain of MCL over it
  is not just extra capacity;
- ``random-init``: an untrained encoder of the same architecture;
- ``pixels``: raw pixels (downsampled to at most 32 px).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mcl.api import (
    build_stage_encoder,
    finished_ensemble_members,
    finished_stage_numbers,
    load_member,
    load_table_for,
    read_run_config,
    resolve_data,
)
from mcl.config import Config
from mcl.errors import DataError
from mcl.evaluation.probes import knn_probe, linear_probe
from mcl.integration import MultistageEncoder, integrate
from mcl.io import write_json
from mcl.stages import stage_seed

logger = logging.getLogger("mcl")

Features = tuple[torch.Tensor, torch.Tensor]  # (train rows, test rows)


def _raw_features(model: torch.nn.Module, train_images: np.ndarray, test_images: np.ndarray) -> Features:
    """One model's raw (un-normalised) backbone features: what :func:`integrate` combines across stages."""
    encoder = MultistageEncoder([model])
    return (torch.from_numpy(encoder.embed_stages(train_images)[0]),
            torch.from_numpy(encoder.embed_stages(test_images)[0]))


def _pixels(images: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float() / 255
    if tensor.shape[-1] > 32:
        tensor = F.interpolate(tensor, size=(32, 32), mode="area")
    return tensor.flatten(1)


def _integrated(raw_parts: list[Features], mode: str) -> Features:
    """Integrate raw per-model features exactly as :class:`MultistageEncoder` does (one part: normalised)."""
    return integrate([p[0] for p in raw_parts], mode), integrate([p[1] for p in raw_parts], mode)


def representations(run_dir: Path, config: Config, train_images: np.ndarray,
                    test_images: np.ndarray) -> dict[str, Features]:
    """Every representation to probe, as (train, test) feature matrices."""
    stages = finished_stage_numbers(run_dir, config)
    # Raw features, integrated afterwards like MultistageEncoder: with concat-then-normalize the
    # stages' relative norms matter, so mcl-k is not built from already normalised parts.
    raw = {s: _raw_features(load_member(run_dir, f"stage-{s}", config), train_images, test_images) for s in stages}
    mode = config.mcl.integration
    out: dict[str, Features] = {f"stage-{s}": _integrated([f], mode) for s, f in raw.items()}
    for k in range(2, len(stages) + 1):
        out[f"mcl-{k}"] = _integrated([raw[s] for s in range(1, k + 1)], mode)
    members = [raw[1]] if stages else []
    for k in range(2, 2 + finished_ensemble_members(run_dir, config)):
        members.append(_raw_features(load_member(run_dir, f"ensemble-{k}", config), train_images, test_images))
        out[f"ensemble-{k}"] = _integrated(members, mode)
    if config.eval.references:
        torch.manual_seed(stage_seed(config, 999))
        random_init = _raw_features(build_stage_encoder(config).eval(), train_images, test_images)
        out["random-init"] = _integrated([random_init], mode)
        out["pixels"] = (_pixels(train_images), _pixels(test_images))
    return out


def evaluate_run(run_dir: str | Path, data: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Probe every representation on every attribute; writes and returns ``eval.json``'s content.

    Multimodal runs are scored by :func:`mcl.evaluation.multimodal_runner.evaluate_multimodal_run`.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    if config.multimodal.enabled:
        from mcl.evaluation.multimodal_runner import evaluate_multimodal_run  # imports this module

        return evaluate_multimodal_run(run_dir, data, progress)
    config = resolve_data(config, run_dir, data, progress)
    table = load_table_for(config, progress)
    train, test = table.subset("train"), table.subset("test")
    if len(test) == 0:
        raise DataError(f"{config.data.path}/labels.csv: no rows with split=test to score the probes on")
    if not table.attribute_names():
        raise DataError(f"{config.data.path}/labels.csv: no attribute columns to evaluate")
    rows = []
    for name, (train_x, test_x) in representations(run_dir, config, train.images, test.images).items():
        for attribute in table.attribute_names():
            y_train, y_test = train.attributes[attribute], test.attributes[attribute]
            linear = linear_probe(train_x, y_train, test_x, y_test, config.eval.linear_c, config.eval.linear_max_iter)
            knn = knn_probe(train_x, y_train, test_x, y_test, config.eval.knn_k)
            rows.append({"representation": name, "attribute": attribute, "probe": "linear", "accuracy": linear})
            rows.append({"representation": name, "attribute": attribute, "probe": "knn", "accuracy": knn})
            logger.info("%s %s linear=%.3f knn=%.3f", name, attribute, linear, knn)
    result = {"data": config.data.path, "train_rows": len(train), "test_rows": len(test), "rows": rows}
    write_json(run_dir / "eval.json", result)
    return result


def format_table(result: dict[str, Any], probe: str = "linear") -> str:
    """Accuracy (%) per representation (rows) and attribute (columns) for one probe."""
    rows = [r for r in result["rows"] if r["probe"] == probe]
    attributes = list(dict.fromkeys(r["attribute"] for r in rows))
    names = list(dict.fromkeys(r["representation"] for r in rows))
    lookup = {(r["representation"], r["attribute"]): r["accuracy"] for r in rows}
    width = max([len(n) for n in names] + [14])
    lines = [f"{probe + ' probe':<{width}}  " + "  ".join(f"{a:>8}" for a in attributes)]
    for name in names:
        cells = "  ".join(f"{100 * lookup[(name, a)]:8.1f}" for a in attributes)
        lines.append(f"{name:<{width}}  {cells}")
    return "\n".join(lines)

"""One tiny stage through ImageContrastiveTask + train(): MoCo, mixed precision, channels_last, compile."""

import json
import os

import numpy as np
import pytest
import torch

from mcl import distributed
from mcl.config import config_from_dict
from mcl.sampling import ClusterBatchSampler, RandomBatchSampler
from mcl.tasks import ImageContrastiveTask
from mcl.training import train

IMAGES = np.random.default_rng(0).integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
LABELS = np.repeat([0, 1], 32)


def _config(**sections):
    values = {"model": {"width": 0.25, "hidden_dim": 32, "projection_dim": 16},
              "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "warmup_epochs": 0}}
    for section, overrides in sections.items():
        values.setdefault(section, {}).update(overrides)
    return config_from_dict(values)


def _batch(task, indices):
    """The batch the task's loader gives for ``indices``."""
    index = torch.as_tensor(indices)
    return {"index": index, "image": task.images.resident[index]}


def _train_stage(task, tmp_path, pseudo_labels=None, seed=1):
    model = task.build_model(seed)
    batch_size = task.config.train.batch_size
    if pseudo_labels is None:
        sampler = RandomBatchSampler(task.num_samples, batch_size, seed)
        labels = None
    else:
        sampler = ClusterBatchSampler(pseudo_labels, batch_size, seed)
        labels = torch.as_tensor(pseudo_labels)
    train(model, task.loss, task.loader(sampler), task.config.train, tmp_path, labels, progress=False)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return model, metrics


def _changed(model, seed=1):
    torch.manual_seed(seed)
    fresh = ImageContrastiveTask(_config(), IMAGES, torch.device("cpu")).build_model(seed)
    return any(not torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters(), strict=True))


def test_moco_stage_trains_with_labelled_queue_and_resets_per_stage(tmp_path):
    config = _config(objective={"name": "moco", "queue_size": 24, "momentum": 0.9, "temperature": 0.2},
                     train={"epochs": 2})
    task = ImageContrastiveTask(config, IMAGES, torch.device("cpu"))
    model, metrics = _train_stage(task, tmp_path, LABELS)
    assert len(metrics) == 2 and all(np.isfinite(m["loss"]) for m in metrics)
    assert _changed(model)
    queue = task.objective
    assert (queue.queue_labels >= 0).all(), "8 steps of 16 keys fill a 24-slot queue"
    assert np.array_equal(LABELS[queue.queue_indices.numpy()], queue.queue_labels.numpy()), "each key keeps its label"
    key_encoder = task.key_encoder.encoder
    assert key_encoder is not model
    assert any(not torch.equal(k, q) for k, q in zip(key_encoder.parameters(), model.parameters(), strict=True))

    next_stage = task.build_model(2)
    task.loss(next_stage, _batch(task, np.arange(16)), torch.zeros(16, dtype=torch.long))
    assert int((queue.queue_labels >= 0).sum()) == 16, "a new stage starts from an empty queue"
    assert all(torch.equal(k, q) for k, q in zip(task.key_encoder.encoder.parameters(), next_stage.parameters(),
                                                  strict=True))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last_stage(tmp_path, amp):
    config = _config(train={"amp": amp, "channels_last": True}, mcl={"negatives": "mask"})
    task = ImageContrastiveTask(config, IMAGES, torch.device("cpu"))
    model, metrics = _train_stage(task, tmp_path, LABELS)
    assert np.isfinite(metrics[0]["loss"]) and metrics[0]["steps"] == 4
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.dtype == torch.float32 for p in model.parameters()), "autocast keeps float32 master weights"
    assert _changed(model)


@pytest.mark.skipif(os.environ.get("MCL_TEST_COMPILE") != "1", reason="a cold torch.compile (inductor, C++) takes "
                    "~25 s on 2 CPU cores; set MCL_TEST_COMPILE=1")
def test_compiled_stage(tmp_path):
    task = ImageContrastiveTask(_config(train={"compile": True}), IMAGES, torch.device("cpu"))
    model = torch.compile(task.build_model(1))
    train(model, task.loss, task.loader(RandomBatchSampler(64, 16, 1)), task.config.train, tmp_path, progress=False)
    assert _changed(model._orig_mod)


def test_ranks_share_weights_but_draw_their_own_augmentations(monkeypatch):
    task = ImageContrastiveTask(_config(), IMAGES, torch.device("cpu"))
    rank0 = task.build_model(5)
    views0 = task.views(_batch(task, np.arange(8)))
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    rank1 = task.build_model(5)
    views1 = task.views(_batch(task, np.arange(8)))
    assert all(torch.equal(a, b) for a, b in zip(rank0.parameters(), rank1.parameters(), strict=True))
    assert not torch.equal(views0, views1)


class _Crash(Exception):
    pass


def _moco_run(stage_dir, crash_at_step=None):
    """A 3-epoch MoCo stage in a fresh task (as a fresh process would build it), optionally crashing."""
    config = _config(objective={"name": "moco", "queue_size": 40, "momentum": 0.9, "temperature": 0.2},
                     train={"epochs": 3})
    task = ImageContrastiveTask(config, IMAGES, torch.device("cpu"))
    model = task.build_model(1)
    calls = {"n": 0}

    def loss(model, batch, labels):
        calls["n"] += 1
        if crash_at_step is not None and calls["n"] > crash_at_step:
            raise _Crash
        return task.loss(model, batch, labels)

    train(model, loss, task.loader(ClusterBatchSampler(LABELS, 16, 1)), config.train, stage_dir,
          torch.as_tensor(LABELS), progress=False, extra_state=task.training_state(model))
    return model, task


def test_resumed_moco_stage_continues_with_its_key_encoder_and_queue(tmp_path):
    reference, reference_task = _moco_run(tmp_path / "reference")
    with pytest.raises(_Crash):
        _moco_run(tmp_path / "crashed", crash_at_step=6)  # epoch 2, step 2: the epoch-1 checkpoint is kept
    resumed, resumed_task = _moco_run(tmp_path / "crashed")
    for ours, theirs in [(resumed, reference), (resumed_task.key_encoder.encoder, reference_task.key_encoder.encoder)]:
        ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
        assert all(torch.equal(ours_state[k], theirs_state[k]) for k in theirs_state)
    for name in ("queue", "queue_labels", "queue_indices"):
        assert torch.equal(getattr(resumed_task.objective, name), getattr(reference_task.objective, name))
    assert resumed_task.objective.pointer == reference_task.objective.pointer


def test_embed_views_are_the_same_whatever_ran_before_and_leave_the_rng_and_model_alone():
    task = ImageContrastiveTask(_config(), IMAGES, torch.device("cpu"))
    model = task.build_model(1)
    model.train()
    rows = np.arange(1, 64, 2)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    first = task.embed_views(model, rows)
    assert torch.equal(torch.random.get_rng_state(), state) and model.training  # nothing else sees this pass
    assert all(torch.equal(value, weights[name]) for name, value in model.state_dict().items())  # BN stats too
    torch.manual_seed(456)
    second = task.embed_views(model, rows)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    view_a, view_b = first
    assert view_a.shape == (32, model.features(torch.zeros(1, 3, 16, 16)).shape[1]) and not np.allclose(view_a, view_b)
    assert np.allclose(np.linalg.norm(view_a, axis=1), 1.0, atol=1e-5)

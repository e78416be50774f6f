"""The epoch loop: exact resume from checkpoints, metrics.jsonl, NaN stops, safe loading, TensorBoard."""

import json
import logging
import sys

import pytest
import torch
from torch import nn

from mcl.config import TrainConfig
from mcl.data.loader import TensorLoader
from mcl.errors import ConfigError, RunDirError, TrainingError
from mcl.files import load_tensors_with_metadata, read_jsonl
from mcl.logging_utils import metrics_logging
from mcl.sampling import RandomBatchSampler
from mcl.training import CHECKPOINT, METRICS, train

DATA = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
STEPS_PER_EPOCH = 5  # 40 samples, batches of 8


def loader() -> TensorLoader:
    """Batches ``{"index", "x"}`` of the 40 toy samples, 8 at a time, reshuffled per epoch."""
    return TensorLoader({"x": DATA}, RandomBatchSampler(40, 8, seed=1), "cpu")


def toy_loss(model: nn.Module, batch: dict, labels: torch.Tensor | None) -> torch.Tensor:
    x = batch["x"]
    noise = 0.1 * torch.randn_like(x)  # drawn from torch's global RNG, like kornia's augmentations
    return ((model(x + noise) - 1) ** 2).mean()


class _Crash(Exception):
    pass


def failing_at(call: int, outcome: str = "crash"):
    """``toy_loss`` that crashes (or returns NaN) from its ``call``-th call on."""
    calls = {"n": 0}

    def loss(model, batch, labels):
        calls["n"] += 1
        if calls["n"] >= call:
            if outcome == "crash":
                raise _Crash
            return toy_loss(model, batch, labels) * float("nan")
        return toy_loss(model, batch, labels)

    return loss


def run(stage_dir, loss=toy_loss, epochs=3, model=None):
    torch.manual_seed(0)
    model = model or nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    config = TrainConfig(epochs=epochs, batch_size=8, lr=0.05, warmup_epochs=1)
    train(model, loss, loader(), config, stage_dir, stage_name="stage-1", progress=False)
    return model


def losses(stage_dir):
    return [(r["epoch"], r["loss"]) for r in read_jsonl(stage_dir / METRICS)]


def test_resume_mid_stage_is_bitwise_identical(tmp_path):
    reference = run(tmp_path / "ref")
    with pytest.raises(_Crash):
        run(tmp_path / "crashed", failing_at(STEPS_PER_EPOCH + 3))  # in the middle of epoch 2
    torch.manual_seed(12345)  # a new process starts from another RNG state
    resumed = run(tmp_path / "crashed")
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert losses(tmp_path / "crashed") == losses(tmp_path / "ref")
    assert [epoch for epoch, _ in losses(tmp_path / "ref")] == [1, 2, 3]


def test_metrics_are_rewritten_from_the_checkpoint(tmp_path):
    stage_dir = tmp_path / "stage"
    with pytest.raises(_Crash):
        run(stage_dir, failing_at(STEPS_PER_EPOCH + 1))
    lines = (stage_dir / METRICS).read_text().splitlines()
    assert len(lines) == 1
    # a line of an epoch past the checkpoint (a crash between two writes) and a torn line
    (stage_dir / METRICS).write_text(lines[0] + "\n" + lines[0].replace('"epoch": 1', '"epoch": 2') + '\n{"ep')
    run(stage_dir)
    assert [epoch for epoch, _ in losses(stage_dir)] == [1, 2, 3]
    assert not (stage_dir / METRICS).read_text().endswith('{"ep')


def test_lost_metrics_file_is_restored_on_resume(tmp_path):
    stage_dir = tmp_path / "stage"
    with pytest.raises(_Crash):
        run(stage_dir, failing_at(2 * STEPS_PER_EPOCH + 1))
    (stage_dir / METRICS).unlink()
    run(stage_dir)
    assert [epoch for epoch, _ in losses(stage_dir)] == [1, 2, 3]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    stage_dir = tmp_path / "stage"
    with pytest.raises(TrainingError) as info:
        run(stage_dir, failing_at(STEPS_PER_EPOCH + 2, outcome="nan"))
    message = str(info.value)
    assert "\n" not in message and message.startswith("stage-1 epoch 2 step 7: loss is nan")
    _, metadata = load_tensors_with_metadata(stage_dir / CHECKPOINT)
    assert json.loads(metadata["checkpoint"])["epoch"] == 1
    assert [epoch for epoch, _ in losses(stage_dir)] == [1]
    run(stage_dir)  # resumes from epoch 1
    assert [epoch for epoch, _ in losses(stage_dir)] == [1, 2, 3]


def test_planted_pickle_checkpoint_is_never_loaded(tmp_path, caplog):
    class Exploit:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    stage_dir = tmp_path / "stage"
    stage_dir.mkdir()
    torch.save({"model": Exploit()}, stage_dir / "checkpoint.pt")
    logger = logging.getLogger("mcl")
    logger.addHandler(caplog.handler)
    try:
        run(stage_dir, epochs=1)
    finally:
        logger.removeHandler(caplog.handler)
    assert not (tmp_path / "pwned").exists()
    assert "checkpoint.pt: ignored" in caplog.text


def test_corrupt_checkpoint_is_a_run_dir_error(tmp_path):
    stage_dir = tmp_path / "stage"
    stage_dir.mkdir()
    (stage_dir / CHECKPOINT).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(RunDirError, match="checkpoint.safetensors: not a valid safetensors file"):
        run(stage_dir)


def test_checkpoint_of_another_model_is_a_run_dir_error(tmp_path):
    stage_dir = tmp_path / "stage"
    with pytest.raises(_Crash):
        run(stage_dir, failing_at(STEPS_PER_EPOCH + 1))
    with pytest.raises(RunDirError, match="not a checkpoint of this run .*delete it"):
        run(stage_dir, model=nn.Sequential(nn.Linear(4, 3)))


def test_tensorboard_logs_every_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with metrics_logging(["tensorboard"], tmp_path):
        run(tmp_path / "stage", epochs=2)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("stage-1/loss")] == [1, 2]
    logged = [e.value for e in events.Scalars("stage-1/loss")]
    assert logged == pytest.approx([loss for _, loss in losses(tmp_path / "stage")])


def test_tensorboard_missing_is_a_one_line_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match="'tensorboard' package is not installed"), \
            metrics_logging(["tensorboard"], tmp_path):
        pass


class RunningMean(nn.Module):
    """Loss-side state outside the model, like MoCo's queue: changes every step."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(3))

    def loss(self, model, batch, labels):
        out = model(batch["x"] + 0.1 * torch.randn(len(batch["index"]), 4))
        loss = ((out - self.mean) ** 2).mean()
        self.mean.mul_(0.5).add_(0.5 * out.detach().mean(0))
        return loss


def run_with_state(stage_dir, extra, crash_at=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    calls = {"n": 0}

    def loss(model, batch, labels):
        calls["n"] += 1
        if crash_at and calls["n"] >= crash_at:
            raise _Crash
        return extra.loss(model, batch, labels)

    config = TrainConfig(epochs=3, batch_size=8, lr=0.05, warmup_epochs=1)
    train(model, loss, loader(), config, stage_dir, progress=False, extra_state=extra)
    return model


def test_state_outside_the_model_is_checkpointed(tmp_path):
    reference_state = RunningMean()
    reference = run_with_state(tmp_path / "ref", reference_state)
    with pytest.raises(_Crash):
        run_with_state(tmp_path / "crashed", RunningMean(), crash_at=STEPS_PER_EPOCH + 2)
    resumed_state = RunningMean()  # a fresh process: the state starts empty and must come from the checkpoint
    resumed = run_with_state(tmp_path / "crashed", resumed_state)
    assert torch.equal(resumed_state.mean, reference_state.mean)
    assert all(torch.equal(a, b) for a, b in zip(reference.parameters(), resumed.parameters(), strict=True))

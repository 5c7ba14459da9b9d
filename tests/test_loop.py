"""The loop's cadence against sd-scripts: gradient accumulation steps at an epoch's end, so epoch
saves, the epoch count in the file and the per-epoch loss fall where sd-scripts puts them."""

from __future__ import annotations

import pytest
from PIL import Image
from safetensors import safe_open
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from engine.config.schema import TrainConfig
from engine.data.plan import make_plan
from engine.events import RunStatus, SilentReporter
from engine.queue.preflight import preflight
from engine.queue.runner import run_one
from engine.run.cadence import (
    epoch_save_due,
    loss_read_due,
    planned_saves,
    step_save_due,
    text_encoder_stop_step,
)
from engine.run.train import accumulation_boundary


@pytest.fixture(scope="module")
def fifteen_images(tmp_path_factory):
    """15 images in one bucket, 1 repeat: 15 batches of 1 per epoch."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "1_thing"
    folder.mkdir()
    for i in range(15):
        Image.new("RGB", (64, 64), (10 * i, 90, 160)).save(folder / f"img{i:02d}.png")
    return root


def test_an_epoch_not_a_multiple_of_the_accumulation_steps_on_its_last_micro_batch(fifteen_images, tmp_path):
    """sd-scripts steps on an epoch's last micro-batch (accelerate syncs at the end of the data
    loader): 15 batches with accumulation 2 are 8 optimizer steps an epoch, epoch saves at 8 and 16."""
    cfg = TrainConfig.model_validate({
        "dataset": {"img_folder": str(fifteen_images), "resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 128},
        "optim": {"optimizer": "AdamW", "gradient_accumulation_steps": 2, "mixed_precision": "no"},
        "training": {"epochs": 2},
        "saving": {"output_folder": str(tmp_path / "out"), "save_every_n_epochs": 1},
        "logging": {"log_dir": str(tmp_path / "logs")},
    })
    plan = make_plan(cfg)
    assert (plan.batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (15, 8, 16)
    (planned,) = preflight([("test", cfg)])
    reporter = SilentReporter()
    result = run_one(planned, reporter)
    assert result.status == RunStatus.DONE and result.steps == 16
    assert [(s.epoch, s.step) for s in reporter.steps if s.step in (7, 8, 9, 16)] == [(1, 7), (1, 8), (2, 9), (2, 16)]
    epoch_save = result.run_dir / "last-000001.safetensors"
    with safe_open(str(epoch_save), framework="pt") as f:
        first = f.metadata()
    with safe_open(str(result.run_dir / "last.safetensors"), framework="pt") as f:
        final = f.metadata()
    assert (first["ss_epoch"], first["ss_steps"]) == ("1", "8")
    assert (final["ss_epoch"], final["ss_steps"], final["ss_num_epochs"]) == ("2", "16", "2")
    (log,) = (tmp_path / "logs").iterdir()
    events = EventAccumulator(str(log), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("loss/epoch_average")] == [1, 2]  # each epoch has its mean


def test_accumulation_boundaries():
    assert [i for i in range(15) if accumulation_boundary(i, i == 14, 2)] == [1, 3, 5, 7, 9, 11, 13, 14]
    assert [i for i in range(6) if accumulation_boundary(i, i == 5, 3)] == [2, 5]
    assert all(accumulation_boundary(i, False, 1) for i in range(4))


def test_the_cadence_predicates():
    saving = TrainConfig.model_validate({"saving": {"save_every_n_steps": 5, "save_every_n_epochs": 2}}).saving
    assert [s for s in range(1, 21) if step_save_due(saving, s, 20)] == [5, 10, 15]  # not the last step
    assert [e for e in range(1, 5) if epoch_save_due(saving, e, e * 5, 20)] == [2]  # epoch 4 ends the run
    assert planned_saves(saving, epochs=4, steps_per_epoch=5, total_steps=20) == 1 + 1 + 3
    assert loss_read_due(10, 20, epoch_end=False, stopping=False) and not loss_read_due(11, 20, epoch_end=False, stopping=False)
    assert loss_read_due(11, 20, epoch_end=True, stopping=False) and loss_read_due(20, 20, epoch_end=False, stopping=False)
    training = TrainConfig.model_validate({"training": {"stop_text_encoder_training": 30}}).training
    assert text_encoder_stop_step(training, 10) == 3
    assert text_encoder_stop_step(TrainConfig().training, 10) is None

"""TensorBoard logs: sd-scripts' tag names and values, one fresh folder per run, a null log otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from engine.config.schema import TrainConfig
from engine.run.tracking import (
    LOSS_AVERAGE,
    LOSS_CURRENT,
    LOSS_EPOCH,
    NullTrainLog,
    TrainLog,
    learning_rates,
    log_folder,
    open_train_log,
)


def config(
    log_dir: Path | None, *, prefix: str | None = None, name: str | None = "mychar", tensorboard: bool = True
) -> TrainConfig:
    cfg = TrainConfig()
    # assignment on the section: TrainConfig() would refuse these while the engine marks them unsupported
    cfg.logging.tensorboard = tensorboard
    cfg.logging.log_dir = log_dir
    cfg.logging.log_prefix = prefix
    cfg.saving.output_name = name
    return cfg


def read_events(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, pytest.approx(e.value)) for e in events.Scalars(tag)]


def test_losses_and_learning_rates_under_sd_scripts_tags(tmp_path):
    run_dir = tmp_path / "output" / "run3"
    with open_train_log(config(tmp_path / "logs"), run_dir, is_main_process=True) as log:
        assert isinstance(log, TrainLog)
        for step in range(1, 31):
            # the loop reads the loss at steps 10, 20, 25 (epoch 1 ends) and 30, as a mean over the steps since the last read
            loss = {10: 0.5, 20: 0.3, 25: 0.2, 30: 0.1}.get(step)
            log.step(step, loss, {"textencoder": 1e-5, "unet": 1e-4 * step})
            if step == 25:
                log.epoch(1)
        log.epoch(2)

    assert log.folder == tmp_path / "logs" / "mychar-run3"
    events = read_events(log.folder)
    assert scalars(events, LOSS_CURRENT) == [(10, 0.5), (20, 0.3), (25, 0.2), (30, 0.1)]
    # weighted by the steps each read covers: the exact mean of the epoch's steps
    assert scalars(events, LOSS_AVERAGE) == [(10, 0.5), (20, 0.4), (25, (5 + 3 + 1) / 25), (30, 0.1)]
    assert scalars(events, LOSS_EPOCH) == [(1, 9 / 25), (2, 0.1)]
    assert len(events.Scalars("lr/unet")) == 30
    assert events.Scalars("lr/unet")[9].step == 10 and events.Scalars("lr/unet")[9].value == pytest.approx(1e-3)
    assert [e.value for e in events.Scalars("lr/textencoder")] == pytest.approx([1e-5] * 30)
    assert (LOSS_CURRENT, LOSS_AVERAGE, LOSS_EPOCH) == ("loss/current", "loss/average", "loss/epoch_average")
    assert "config/text_summary" in events.Tags()["tensors"]


def test_epoch_mean_given_by_the_caller_wins_and_an_epoch_without_losses_logs_nothing(tmp_path):
    with open_train_log(config(tmp_path), tmp_path / "run1", is_main_process=True) as log:
        log.epoch(1)  # no loss arrived yet: nothing to log
        log.step(5, 0.8, {})
        log.epoch(2, mean_loss=0.25)
    assert scalars(read_events(log.folder), LOSS_EPOCH) == [(2, 0.25)]


def test_a_resumed_run_averages_from_its_first_step(tmp_path):
    with open_train_log(config(tmp_path), tmp_path / "run2", is_main_process=True) as log:
        for step in range(101, 121):
            log.step(step, {110: 0.5, 120: 0.3}.get(step), {})
    assert scalars(read_events(log.folder), LOSS_AVERAGE) == [(110, 0.5), (120, 0.4)]


def test_each_run_gets_its_own_folder_never_a_shared_one(tmp_path):
    logs = tmp_path / "logs"
    first = open_train_log(config(logs, prefix="exp_"), tmp_path / "a" / "run1", is_main_process=True)
    second = open_train_log(config(logs, prefix="exp_"), tmp_path / "b" / "run1", is_main_process=True)
    unnamed = open_train_log(config(logs, name=None), tmp_path / "run7", is_main_process=True)
    for log in (first, second, unnamed):
        log.close()
    assert first.folder == logs / "exp_mychar-run1"
    assert second.folder == logs / "exp_mychar-run1-2"
    assert unnamed.folder == logs / "last-run7"
    assert log_folder(config(logs), tmp_path / "run4") == logs / "mychar-run4"


def test_without_a_log_dir_a_run_logs_into_its_own_folder(tmp_path):
    run_dir = tmp_path / "output" / "run2"
    with open_train_log(config(None), run_dir, is_main_process=True) as log:
        log.step(1, 0.5, {"unet": 1e-4})
    assert log.folder == run_dir / "logs" == log_folder(config(None), run_dir)
    assert scalars(read_events(log.folder), LOSS_CURRENT) == [(1, 0.5)]


@pytest.mark.parametrize("log_dir, tensorboard, main", [(None, False, True), ("logs", False, True), ("logs", True, False)])
def test_null_log_when_turned_off_or_off_the_main_process(tmp_path, log_dir, tensorboard, main):
    cfg = config(tmp_path / log_dir if log_dir else None, tensorboard=tensorboard)
    log = open_train_log(cfg, tmp_path / "run1", is_main_process=main)
    assert isinstance(log, NullTrainLog)
    with log:
        log.step(1, 0.5, {"unet": 1e-4})
        log.epoch(1)
        log.samples(1, [tmp_path / "missing.png"])
    assert list(tmp_path.iterdir()) == []


def test_learning_rates_named_as_sd_scripts_with_adaptive_d():
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(3)]
    optimizer = torch.optim.SGD(
        [
            {"name": "text_encoder1", "lr": 1e-5, "params": [params[0]]},
            {"name": "text_encoder2", "lr": 2e-5, "params": [params[1]]},
            {"name": "unet", "lr": 1e-4, "params": [params[2]]},
        ]
    )
    assert learning_rates(optimizer) == {"textencoder1": 1e-5, "textencoder2": 2e-5, "unet": 1e-4}
    optimizer.param_groups[2]["d"] = 3.0  # D-Adaptation / Prodigy keep their estimate here
    optimizer.param_groups[0]["name"] = "text_encoder"
    assert learning_rates(optimizer) == {
        "textencoder": 1e-5,
        "textencoder2": 2e-5,
        "unet": 1e-4,
        "d*lr/unet": pytest.approx(3e-4),
    }


def test_sample_images_shown_under_stable_tags(tmp_path):
    paths = []
    for suffix, colour in (("00", "red"), ("01", "blue"), ("grid", "green")):
        path = tmp_path / f"mychar_000100_{suffix}.png"
        Image.new("RGB", (16, 8), colour).save(path)
        paths.append(path)
    with open_train_log(config(tmp_path / "logs"), tmp_path / "run1", is_main_process=True) as log:
        log.samples(100, paths)
    events = read_events(log.folder)
    assert sorted(events.Tags()["images"]) == ["samples/00", "samples/01", "samples/grid"]
    image = events.Images("samples/01")[0]
    assert (image.step, image.width, image.height) == (100, 16, 8)

"""Out of memory is retried once with a smaller batch and more accumulation (engine/queue/oom.py):
the effective batch and the step count stay those planned, the retry starts from the last state,
the summary says so, and a second out-of-memory fails the run with today's advice. The OOM is
injected on the CPU: a fake trainer raises torch's OutOfMemoryError, and in a real tiny run the
training step raises it mid-run, after a state was saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.config.schema import TrainConfig
from engine.errors import TrainingError
from engine.events import Outcome, SilentReporter
from engine.queue.oom import position_in, smaller_batch
from engine.queue.preflight import preflight
from engine.queue.runner import run_one
from tests.support.cli import one_line, run_cli, write_dataset
from tests.support.queue_fakes import fake_train, write_config

CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.69 GiB total capacity)"


def planned_run(tmp_path: Path, data: Path, **sections):
    cfg = TrainConfig().model_dump(mode="json")
    cfg["dataset"].update(img_folder=str(data), resolution=128, min_bucket_reso=64, max_bucket_reso=256)
    cfg["saving"].update(output_folder=str(tmp_path / "out"), output_name="oom")
    cfg["optim"]["optimizer"] = "AdamW"
    for section, values in sections.items():
        cfg[section].update(values)
    (planned,) = preflight([("oom", TrainConfig.model_validate(cfg))])
    return planned


@pytest.fixture
def one_bucket(tmp_path) -> Path:
    return write_dataset(tmp_path / "data", folder="2_thing", images=2)  # 4 samples, one bucket


# ------------------------------------------------------------------------------------ the batch


def test_half_the_batch_twice_the_accumulation(tmp_path, one_bucket):
    planned = planned_run(tmp_path, one_bucket, training={"batch_size": 4, "epochs": 3}, optim={"gradient_accumulation_steps": 1})
    retry = smaller_batch(planned)
    cfg, plan = retry.run.config, retry.run.plan
    assert (cfg.training.batch_size, cfg.optim.gradient_accumulation_steps, cfg.training.max_steps) == (2, 2, None)
    assert plan.effective_batch == planned.plan.effective_batch == 4
    assert plan.total_steps == planned.plan.total_steps == 3
    assert "retried with batch 2 and gradient accumulation 2 (effective batch 4 and 3 steps as planned)" in retry.note


def test_an_odd_batch_goes_to_its_largest_divisor(tmp_path, one_bucket):
    planned = planned_run(tmp_path, one_bucket, training={"batch_size": 3}, optim={"gradient_accumulation_steps": 2})
    cfg = smaller_batch(planned).run.config
    assert (cfg.training.batch_size, cfg.optim.gradient_accumulation_steps) == (1, 6)
    assert smaller_batch(planned_run(tmp_path, one_bucket)) == "the batch is already 1"


def test_buckets_that_change_the_epoch_keep_the_step_count(tmp_path):
    """3 + 1 samples in two buckets: batch 2 makes 2 + 1 = 3 steps an epoch, batch 1 with
    accumulation 2 makes 4 micro-batches, 2 steps. The retry keeps the 6 planned steps."""
    data = write_dataset(tmp_path / "data", folder="1_tall", images=3, size=(64, 192))
    write_dataset(data, folder="1_wide", images=1, size=(192, 64))
    planned = planned_run(tmp_path, data, training={"batch_size": 2, "epochs": 2})
    assert (planned.plan.steps_per_epoch, planned.plan.total_steps) == (3, 6)
    retry = smaller_batch(planned)
    assert retry.run.config.training.max_steps == 6 and retry.run.plan.total_steps == 6
    assert "an epoch is now 2 steps instead of 3" in retry.note


def test_a_state_is_placed_at_the_same_step_of_the_new_plan(tmp_path, one_bucket):
    planned = planned_run(tmp_path, one_bucket, training={"batch_size": 2, "epochs": 3})  # 2 steps an epoch
    plan = smaller_batch(planned).run.plan  # batch 1, accumulation 2: 4 micro-batches an epoch
    assert (position_in(plan, 2, 7, 1).epoch, position_in(plan, 2, 7, 1).batches_done) == (2, 0)
    assert (position_in(plan, 3, 7, 1).epoch, position_in(plan, 3, 7, 1).batches_done) == (2, 2)
    assert position_in(plan, 3, 7, 1).total_steps == 6


# ------------------------------------------------------------------------------ the command line


class OomTrainer:
    """Runs out of memory `failures` times, then trains as tests/test_queue.py's fake does."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[int, int, int, int, object]] = []

    def __call__(self, cfg, plan, run_dir, reporter, stop=None, resume_from=None):
        self.calls.append((cfg.training.batch_size, cfg.optim.gradient_accumulation_steps, plan.effective_batch, plan.total_steps, resume_from))
        if len(self.calls) <= self.failures:
            raise torch.OutOfMemoryError(CUDA_OOM)
        return fake_train(cfg, plan, run_dir, reporter, stop, resume_from)


@pytest.fixture
def config(tmp_path):
    data = write_dataset(tmp_path / "data", folder="2_thing", images=2)
    return write_config(tmp_path / "q", "oom", data, tmp_path / "out", training={"batch_size": 2, "max_steps": None, "epochs": 2})


def test_an_oom_is_retried_once_with_the_same_effective_batch(config, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    trainer = OomTrainer(failures=1)
    code, out = run_cli(capsys, "replay", config, trainer=trainer)
    assert code == Outcome.OK
    assert [c[:4] for c in trainer.calls] == [(2, 1, 2, 4), (1, 2, 2, 4)]
    assert trainer.calls[1][4] is None  # the fake saved no state: the retry starts from the start
    note = "out of memory at batch 2: retried with batch 1 and gradient accumulation 2 (effective batch 2 and 4 steps as planned), from the start"
    assert one_line(out).count(note) == 3  # while it happens, under the run, in the summary
    run_dir = config.parent.parent / "out" / "run1"
    retry_config = next(run_dir.glob("oom-oom-retry-*.json"))
    assert json.loads(retry_config.read_text())["training"]["batch_size"] == 1
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".oom-retry")] == []


def test_a_second_oom_fails_the_run_with_the_advice(config, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    code, out = run_cli(capsys, "replay", config, trainer=OomTrainer(failures=2))
    assert code == Outcome.RUN_FAILED
    assert "out of memory (CUDA out of memory. Tried to allocate 2.00 GiB" in out
    assert "set optim.gradient_checkpointing=true" in out
    assert "out of memory again after: out of memory at batch 2: retried with batch 1" in out
    assert "Traceback" not in out


def test_batch_one_has_nothing_to_halve(tmp_path, capsys):
    data = write_dataset(tmp_path / "data")
    config = write_config(tmp_path / "q", "one", data, tmp_path / "out")
    trainer = OomTrainer(failures=1)
    code, out = run_cli(capsys, "replay", config, trainer=trainer)
    assert code == Outcome.RUN_FAILED and len(trainer.calls) == 1
    assert "(no retry with a smaller batch: the batch is already 1)" in one_line(out)


# ------------------------------------------------------------------------- a real run, mid-epoch


def test_a_real_run_retries_from_its_last_state(tmp_path, one_bucket, monkeypatch):
    """The demo model, 3 epochs of 2 steps at batch 2, a state and a LoRA saved each epoch. The
    first step of epoch 2 runs out of memory; the retry at batch 1 x 2 resumes from epoch 1's
    state and ends at the planned 6 steps, with epoch 1's file kept in the result."""
    import engine.run.train as loop

    real_step = loop.training_step
    injected = []

    def step(session, batch, epoch, index, boundary=True):
        if epoch == 2 and len(batch) == 2 and not injected:
            injected.append((epoch, index))
            raise torch.OutOfMemoryError(CUDA_OOM)
        return real_step(session, batch, epoch, index, boundary)

    monkeypatch.setattr(loop, "training_step", step)
    planned = planned_run(
        tmp_path, one_bucket,
        training={"batch_size": 2, "epochs": 3},
        saving={"save_state": True, "save_every_n_epochs": 1},
    )
    reporter = SilentReporter()
    result = run_one(planned, reporter)

    assert injected == [(2, 0)]
    assert result.status == "done" and (result.steps, result.total_steps) == (6, 6)
    assert result.notes == [
        (
            "out of memory at batch 2: retried with batch 1 and gradient accumulation 2 "
            "(effective batch 2 and 6 steps as planned), from oom-000001-state (step 2)"
        )
    ]
    assert any("epoch 2, step 2 of 6" in n for n in reporter.notices)
    assert [s.step for s in reporter.steps] == [1, 2, 3, 4, 5, 6]  # the retry goes on from step 3
    names = [p.name for p in result.files]
    assert {"oom-000001.safetensors", "oom-000002.safetensors", "oom.safetensors"} <= set(names)
    assert any(n.startswith("oom-oom-retry-") for n in names)
    assert not list(result.run_dir.glob(".oom-retry-*"))


def test_the_advice_without_a_retry_is_unchanged(tmp_path, one_bucket):
    planned = planned_run(tmp_path, one_bucket)

    def trainer(*args):
        raise torch.OutOfMemoryError(CUDA_OOM)

    with pytest.raises(TrainingError, match=r"^out of memory \(CUDA out of memory\..*set optim.gradient_checkpointing=true"):
        run_one(planned, SilentReporter(), trainer=trainer)

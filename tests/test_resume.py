"""Exact resume: a run stopped (or saved) part-way and resumed from its state ends with the same
LoRA, byte for byte, as the run that was never stopped."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from engine.config.schema import TrainConfig
from engine.errors import ConfigError
from engine.events import SilentReporter, StopSignal
from engine.queue.preflight import preflight
from engine.queue.runner import run_one


def config(tmp_path, name: str, **saving) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "saving": {"output_folder": str(tmp_path / name), "save_state": True, **saving},
            "training": {"max_steps": 12},
            # dropout and caption randomness make the test stricter: they must resume exactly too
            "network": {"dropout": 0.1, "rank_dropout": 0.1},
            "dataset": {
                "shuffle_caption": True,
                "caption_tag_dropout_rate": 0.2,
                "flip_aug": True,
                # small buckets keep the four runs of this file quick
                "resolution": 128,
                "min_bucket_reso": 64,
                "max_bucket_reso": 256,
            },
        }
    )


def train(cfg: TrainConfig, reporter=None, stop=None):
    (planned,) = preflight([("test", cfg)])
    return run_one(planned, reporter or SilentReporter(), stop)


class StopAt(SilentReporter):
    """Presses Ctrl-C (the stop signal) when a given step has been reported."""

    def __init__(self, stop: StopSignal, at: int) -> None:
        super().__init__()
        self.stop, self.at = stop, at

    def step(self, stats) -> None:
        super().step(stats)
        if stats.step == self.at:
            self.stop.request()


def same_tensors(a, b) -> bool:
    ta, tb = load_file(a), load_file(b)
    return ta.keys() == tb.keys() and all((ta[k] == tb[k]).all() for k in ta)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    return train(config(tmp, "full", save_every_n_steps=5))


def test_states_are_written_with_their_position(uninterrupted):
    run = uninterrupted.run_dir
    names = sorted(p.name for p in run.iterdir() if p.name.endswith("-state"))
    assert names == ["last-state", "last-step00000005-state", "last-step00000010-state"]
    position = json.loads((run / "last-step00000005-state" / "train_state.json").read_text())
    assert position["step"] == 5 and position["epoch"] == 1 and position["batches_done"] == 5


def test_resume_from_a_step_state_gives_the_same_lora(tmp_path, uninterrupted):
    state = uninterrupted.run_dir / "last-step00000005-state"
    result = train(config(tmp_path, "resumed", resume=str(state)))
    assert result.status == "done" and result.steps == 12
    assert same_tensors(uninterrupted.run_dir / "last.safetensors", result.run_dir / "last.safetensors")


def test_ctrl_c_saves_an_interrupted_state_that_resumes_exactly(tmp_path, uninterrupted):
    stop = StopSignal()
    stopped = train(config(tmp_path, "stopped"), StopAt(stop, 7), stop)
    assert stopped.status == "interrupted" and stopped.steps == 7
    assert (stopped.run_dir / "last-interrupted.safetensors").is_file()
    state = stopped.run_dir / "last-interrupted-state"
    resumed = train(config(tmp_path, "again", resume=str(state)))
    assert resumed.steps == 12
    assert same_tensors(uninterrupted.run_dir / "last.safetensors", resumed.run_dir / "last.safetensors")


def test_resume_needs_the_same_seed(tmp_path, uninterrupted):
    cfg = config(tmp_path, "x", resume=str(uninterrupted.run_dir / "last-step00000005-state"))
    cfg.training.seed = 99
    with pytest.raises(ConfigError, match="seed"):
        train(cfg)


def test_state_folders_have_the_umasks_mode(uninterrupted):
    import os

    mask = os.umask(0)
    os.umask(mask)
    states = [p for p in uninterrupted.run_dir.iterdir() if p.name.endswith("-state")]
    assert states
    for state in states:
        assert state.stat().st_mode & 0o777 == 0o777 & ~mask
        assert {f.stat().st_mode & 0o777 for f in state.iterdir()} == {0o666 & ~mask}


def test_resume_from_a_folder_that_is_not_a_state(tmp_path):
    with pytest.raises(ConfigError, match="not a training state folder"):
        train(config(tmp_path, "x", resume=str(tmp_path)))


def test_ctrl_c_while_loading_stops_before_the_first_step(tmp_path):
    stop = StopSignal()
    stop.request()  # pressed before the model has even loaded
    result = train(config(tmp_path, "early"), stop=stop)
    assert result.status == "interrupted" and result.steps == 0
    assert not list(result.run_dir.glob("*.safetensors"))

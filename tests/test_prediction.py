"""v-prediction or epsilon, read from the model: a diffusers folder's scheduler says it, a single
SD2 file is tested as AUTOMATIC1111 tests it, the config's own word wins, and a config that
contradicts a folder is refused before any run; the LoRA file records the objective that trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from engine.config.schema import ModelFamily, TrainConfig
from engine.events import Outcome, RunStatus, SilentReporter
from engine.models.prediction import (
    Prediction,
    decide,
    looks_like_v_prediction,
    prediction_of_folder,
    prediction_of_keys,
)
from engine.models.tiny import build_tiny
from engine.queue.preflight import preflight
from engine.queue.runner import run_one
from tests.support.cli import config_file, run_cli, write_dataset

SD2 = ModelFamily.SD2


def sd2_folder(root: Path, prediction_type: str) -> Path:
    """A tiny SD2 diffusers folder whose scheduler config says `prediction_type`."""
    model = build_tiny(SD2, seed=7)
    folder = root / f"sd2-{prediction_type}"
    model.unet.save_pretrained(folder / "unet")
    model.vae.save_pretrained(folder / "vae")
    model.text_encoders[0].save_pretrained(folder / "text_encoder")
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"]}
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDIMScheduler", "prediction_type": prediction_type}))
    return folder


@pytest.fixture(scope="module")
def v_folder(tmp_path_factory) -> Path:
    return sd2_folder(tmp_path_factory.mktemp("models"), "v_prediction")


def test_a_folder_says_its_objective(v_folder, tmp_path):
    assert prediction_of_folder(v_folder) == Prediction(True, f"{v_folder / 'scheduler' / 'scheduler_config.json'} says prediction_type=v_prediction")
    eps = sd2_folder(tmp_path, "epsilon")
    assert prediction_of_folder(eps).v is False


def test_an_sd2_v_folder_trains_as_v_with_a_notice(v_folder, tmp_path):
    data = write_dataset(tmp_path / "data", size=(64, 64))
    cfg = TrainConfig.model_validate({
        "model": {"base_model": str(v_folder)},  # v_parameterization left unset: the model says
        "dataset": {"img_folder": str(data), "resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 128},
        "optim": {"optimizer": "AdamW", "mixed_precision": "no"},
        "training": {"max_steps": 1},
        "saving": {"output_folder": str(tmp_path / "out")},
    })
    assert cfg.model.v_parameterization is None
    (planned,) = preflight([("test", cfg)])
    reporter = SilentReporter()
    result = run_one(planned, reporter)
    assert result.status == RunStatus.DONE
    assert any("trains with v-prediction" in n and "prediction_type=v_prediction" in n for n in reporter.notices)
    with safe_open(str(result.run_dir / "last.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["modelspec.prediction_type"] == "v" and meta["ss_base_model_version"] == "sd_v2_v"
    assert meta["ss_clip_skip"] == "1"  # SD2 reads its encoder's last state whatever clip_skip says


def test_a_config_that_contradicts_the_folder_is_refused_before_training(v_folder, tmp_path, capsys):
    path = config_file(tmp_path, model={"base_model": str(v_folder), "v_parameterization": False})
    code, out = run_cli(capsys, "replay", str(path), "--dry-run")
    flat = " ".join(out.split())
    assert code == Outcome.BAD_INPUT and "Traceback" not in out
    assert "model.v_parameterization = false: the model's own files say it was trained with v-prediction" in flat
    assert "set it to true, or remove it to follow the model" in flat


class FakeUNet(torch.nn.Module):
    """Predicts `slope` times its input: A1111's test sees mean(pred - x) = (slope - 1) * 0.5."""

    def __init__(self, slope: float) -> None:
        super().__init__()
        self.slope = slope
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = type("C", (), {"cross_attention_dim": 1024, "in_channels": 4})()

    def forward(self, x, t, cond):
        assert t.tolist() == [999] and torch.all(cond == 0.5) and torch.all(x == 0.5)
        return type("Out", (), {"sample": x * self.slope})()


def test_the_single_file_test_is_automatic1111s():
    assert looks_like_v_prediction(FakeUNet(-4.0))  # mean(-2 - 0.5) = -2.5 < -1: v
    assert not looks_like_v_prediction(FakeUNet(1.0))  # predicts its input: epsilon
    found = prediction_of_keys(["cond_stage_model.model.ln_final.weight"], SD2)
    assert found.v is None  # the keys cannot tell
    decided = decide(None, found, FakeUNet(-4.0))
    assert decided.v is True and "AUTOMATIC1111's test" in decided.evidence
    assert decide(False, found, FakeUNet(-4.0)) == Prediction(False, "model.v_parameterization says so")  # asked: followed


def test_an_sdxl_file_with_the_v_pred_marker(tmp_path):
    assert prediction_of_keys(["conditioner.embedders.1.model.ln_final.weight", "v_pred"], ModelFamily.SDXL).v is True
    assert prediction_of_keys(["conditioner.embedders.1.model.ln_final.weight"], ModelFamily.SDXL).v is False

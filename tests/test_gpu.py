"""Precision options: the CPU refuses the GPU-only ones clearly; on a CUDA machine they train.

CI has no GPU: the CUDA tests skip there and run on the GPU machine."""

from __future__ import annotations

import pytest
import torch

from engine.config.schema import TrainConfig
from engine.errors import LoraWizardError
from engine.events import SilentReporter
from engine.queue.preflight import preflight
from engine.queue.runner import run_one

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def config(tmp_path, **optim) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "optim": {"optimizer": "AdamW", **optim},
            "dataset": {"resolution": 128, "min_bucket_reso": 64, "max_bucket_reso": 256},
            "training": {"max_steps": 3},
            "saving": {"output_folder": str(tmp_path / "out")},
        }
    )


def train(cfg: TrainConfig):
    (planned,) = preflight([("gpu", cfg)])
    reporter = SilentReporter()
    return run_one(planned, reporter), reporter


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU's refusal")
def test_full_half_precision_needs_a_gpu(tmp_path):
    with pytest.raises(LoraWizardError, match="needs a CUDA GPU"):
        train(config(tmp_path, mixed_precision="bf16", full_bf16=True))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU's notice")
def test_lowram_says_it_does_nothing_on_a_cpu(tmp_path):
    cfg = config(tmp_path)
    cfg.model.lowram = True
    _, reporter = train(cfg)
    assert any("model.lowram = true: has no effect on a CPU run" in n for n in reporter.notices)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(
    "optim",
    [
        {"mixed_precision": "fp16"},
        {"mixed_precision": "bf16"},
        {"mixed_precision": "fp16", "full_fp16": True},
        {"mixed_precision": "bf16", "full_bf16": True},
    ],
)
def test_precisions_train_on_the_gpu(tmp_path, optim):
    result, reporter = train(config(tmp_path, **optim))
    assert result.status == "done" and result.steps == 3
    assert all(s.loss is None or s.loss == s.loss for s in reporter.steps)  # no NaN

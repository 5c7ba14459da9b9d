"""The README's promise at full size: the same config and seed give the same LoRA bytes on a CPU,
however the replay is started.

The demo model is too small to show it: the random-weight SD1.5 architecture (bench/assets.py,
2 GB in bf16, built once in a temporary folder) is. A CPU run's bytes depend on torch's thread
count (engine/run/setup.py use_one_cpu_thread), which comes from outside the config; a plain
`python run_wizard.py replay` on a 2-core machine used 2 threads and `accelerate launch` exports
OMP_NUM_THREADS=1, and the two LoRAs differed in 255 of 792 tensors. 64 px (the smallest side)
and two AdamW steps keep this under a minute on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from engine.config.io import save_config
from engine.config.schema import TrainConfig
from engine.events import Outcome
from tests.support.patience import PATIENCE
from wizard.app import main

ROOT = Path(__file__).resolve().parent.parent
#: the contact sheet samples the full-size UNet about 60 times, minutes on a CPU, and reads the LoRA
#: only after it is written: the bytes under test do not depend on it
NO_REPORT = ("--no-report",)


@pytest.fixture(scope="session")
def full_size_sd15(tmp_path_factory) -> Path:
    from bench.assets import random_model_folder

    return random_model_folder("sd15", tmp_path_factory.mktemp("full-size"), torch.device("cpu"), lambda _: None)


def replay_in_process(config: Path, output: Path, threads: int) -> Path:
    """`replay` in this process, with torch set to `threads` beforehand (as a host program or
    OMP_NUM_THREADS would); the run gives the setting back when it ends."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert main(["replay", str(config), "--output", str(output), *NO_REPORT]) == Outcome.OK
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    (lora,) = output.glob("run1/*.safetensors")
    return lora


@pytest.mark.slow  # about 45 s on 2 cores: a 2 GB model is built, then trained three times
def test_full_size_replays_give_the_same_bytes_however_started(full_size_sd15, tmp_path, capsys):
    images = tmp_path / "data" / "3_thing"
    images.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (64, 64), (40 + 90 * i, 90, 160)).save(images / f"img{i}.png")
        (images / f"img{i}.txt").write_text(f"thing, pose {i}", encoding="utf-8")
    cfg = TrainConfig.model_validate(
        {
            "model": {"base_model": str(full_size_sd15)},
            "dataset": {"img_folder": str(images.parent), "resolution": 64, "enable_bucket": False},
            # the text encoder runs once (its outputs cached): the kernels that depend on the thread
            # count are the UNet's, and a rank-4 LoRA saves and hashes quickly
            "network": {"train_on": "unet_only", "dim": 4, "alpha": 4},
            "optim": {"optimizer": "AdamW"},
            "training": {"max_steps": 2},
            "saving": {"output_folder": str(tmp_path / "out"), "save_precision": "float"},
        }
    )
    config = save_config(cfg, tmp_path)

    first = replay_in_process(config, tmp_path / "two-threads", threads=2)
    # a fresh process started as `accelerate launch` starts it, with OMP_NUM_THREADS=1
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "run_wizard.py"), "replay", str(config), "--output", str(tmp_path / "launched"), *NO_REPORT]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=PATIENCE)
    assert done.returncode == Outcome.OK, done.stdout + done.stderr
    second = tmp_path / "launched" / "run1" / "last.safetensors"
    data = cfg.model_dump(mode="json")
    data["saving"]["output_name"] = "renamed"  # replays that differed only in output_name differed too
    third = replay_in_process(save_config(TrainConfig.model_validate(data), tmp_path), tmp_path / "renamed", threads=3)
    assert third.name == "renamed.safetensors"

    reference = load_file(first)
    assert len(reference) == 576  # 192 LoRA modules: the full SD1.5 UNet
    for other in (second, third):
        tensors = load_file(other)
        assert tensors.keys() == reference.keys()
        differ = [k for k in reference if not torch.equal(reference[k], tensors[k])]
        assert not differ, f"{other}: {len(differ)} of {len(reference)} tensors differ, e.g. {differ[:3]}"

"""What a run writes: LoRA files in every format and precision, their names, when they are saved,
which ones are kept (save_last_n_*), their metadata, and the tag list.

Runs use the built-in demo model at 64 px on a 2-image dataset (2 steps an epoch), on one torch
thread (tiny tensors: see test_option_effects.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config.schema import SaveFormat, SavePrecision, TagFile, TrainConfig
from engine.data.plan import make_plan
from engine.events import RunStatus, SilentReporter
from engine.network.lora_file import load_lora_file
from engine.queue.preflight import preflight
from engine.queue.runner import run_one
from engine.run.metadata import MINIMUM_KEYS
from engine.run.saving import (
    lora_file_name,
    prune_old_saves,
    save_lora,
    stale_save_numbers,
    write_tag_file,
)
from engine.run.setup import prepare_session, release

SMALL = {
    "dataset": {"resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 128},
    "network": {"dim": 4, "alpha": 2.0},
    "optim": {"optimizer": "AdamW", "mixed_precision": "no", "lr_scheduler": "constant"},
}
DTYPES = {SavePrecision.FLOAT: torch.float32, SavePrecision.FP16: torch.float16, SavePrecision.BF16: torch.bfloat16}


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """1 repeat x 2 images: 2 steps an epoch."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "1_thing"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, caption in enumerate(["thing, red, square", "thing, blue"]):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(caption, encoding="utf-8")
    return root


def make_config(dataset: Path, out: Path, **sections: dict) -> TrainConfig:
    raw = TrainConfig().model_dump(mode="json")
    for section, values in SMALL.items():
        raw[section].update(values)
    raw["dataset"]["img_folder"] = str(dataset)
    raw["saving"]["output_folder"] = str(out)
    for section, values in sections.items():
        raw[section].update(values)
    return TrainConfig.model_validate(raw)


def train_run(cfg: TrainConfig):
    """A run as the command line makes it: preflight, then a new run folder."""
    (planned,) = preflight([("test", cfg)])
    result = run_one(planned, SilentReporter())
    assert result.status == RunStatus.DONE, result
    return result


def lora_files(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir() if p.suffix in (".safetensors", ".ckpt", ".pt")}


# ---- formats and precisions ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def session(dataset, tmp_path_factory):
    """A prepared session whose LoRA has random (non-zero) up-projections."""
    cfg = make_config(dataset, tmp_path_factory.mktemp("out"))
    prepared = prepare_session(cfg, make_plan(cfg), tmp_path_factory.mktemp("run"), SilentReporter())
    network = prepared.network
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in network.loras:
            module.lora_up.weight.copy_(torch.randn(module.lora_up.weight.shape, generator=generator))
    yield prepared
    release(prepared)


@pytest.mark.parametrize("precision", list(SavePrecision))
@pytest.mark.parametrize("fmt", list(SaveFormat))
def test_every_format_and_precision_reloads_the_same_tensors(fmt, precision, session, tmp_path):
    raw = session.cfg.model_dump(mode="json")
    raw["saving"].update(save_model_as=fmt.value, save_precision=precision.value)
    path = save_lora(session.network, TrainConfig.model_validate(raw), session.metadata, tmp_path, epoch=2, step=10, suffix=None)
    assert path == tmp_path / f"last.{fmt.value}"

    tensors, metadata = load_lora_file(path)
    expected = session.network.kohya_state_dict()
    assert tensors.keys() == expected.keys()
    dtype = DTYPES[precision]
    for key, tensor in tensors.items():
        assert tensor.dtype == dtype, key
        assert torch.equal(tensor, expected[key].cpu().to(dtype)), key  # alpha too
    if fmt == SaveFormat.SAFETENSORS:
        assert metadata["ss_epoch"] == "2" and metadata["ss_steps"] == "10"
        assert metadata["sshs_model_hash"] and metadata["sshs_legacy_hash"]
    else:
        assert metadata == {}  # .ckpt/.pt hold tensors only, as in sd-scripts


def test_file_names_follow_sd_scripts(dataset, tmp_path):
    unnamed = make_config(dataset, tmp_path)
    named = make_config(dataset, tmp_path, saving={"output_name": "mine", "save_model_as": "ckpt"})
    assert lora_file_name(unnamed, None) == "last.safetensors"
    assert lora_file_name(unnamed, "000002") == "last-000002.safetensors"
    assert lora_file_name(named, None) == "mine.ckpt"
    assert lora_file_name(named, "step00000010") == "mine-step00000010.ckpt"


# ---- saves during a run, metadata ---------------------------------------------------------------


@pytest.fixture(scope="module")
def named_run(dataset, tmp_path_factory):
    """3 epochs x 2 steps; a save every epoch and every 3 steps; a name and a comment."""
    cfg = make_config(
        dataset,
        tmp_path_factory.mktemp("named"),
        training={"epochs": 3},
        saving={
            "output_name": "mine",
            "save_every_n_epochs": 1,
            "save_every_n_steps": 3,
            "training_comment": "made by the tests",
        },
    )
    return train_run(cfg)


def test_epoch_and_step_saves_during_a_run(named_run):
    run_dir = named_run.run_dir
    # epochs 1 and 2 (the last epoch is the final file), step 3 (step 6 is the last step)
    assert lora_files(run_dir) == {
        "mine-000001.safetensors",
        "mine-000002.safetensors",
        "mine-step00000003.safetensors",
        "mine.safetensors",
    }
    assert {p.name for p in named_run.files} >= lora_files(run_dir) | {"mine-tags.txt"}
    where = {}
    for name in lora_files(run_dir):
        _, metadata = load_lora_file(run_dir / name)
        where[name] = (metadata["ss_epoch"], metadata["ss_steps"])
    assert where == {
        "mine-000001.safetensors": ("1", "2"),
        "mine-000002.safetensors": ("2", "4"),
        "mine-step00000003.safetensors": ("2", "3"),
        "mine.safetensors": ("3", "6"),
    }


def test_training_comment_reaches_the_metadata(named_run):
    _, metadata = load_lora_file(named_run.run_dir / "mine.safetensors")
    assert metadata["ss_training_comment"] == "made by the tests"
    assert metadata["ss_output_name"] == "mine" and metadata["modelspec.title"] == "mine"


def test_metadata_names_the_optimizer(named_run):
    _, metadata = load_lora_file(named_run.run_dir / "mine.safetensors")
    assert metadata["ss_optimizer"] == "torch.optim.adamw.AdamW"


def test_no_metadata_keeps_only_the_minimum_and_modelspec(dataset, tmp_path):
    cfg = make_config(
        dataset, tmp_path, training={"max_steps": 1}, saving={"no_metadata": True, "training_comment": "secret"}
    )
    result = train_run(cfg)
    _, metadata = load_lora_file(result.run_dir / "last.safetensors")  # the default name
    hashes = {"sshs_model_hash", "sshs_legacy_hash"}  # sd-scripts adds them to every safetensors save
    extra = {k for k in metadata if k not in MINIMUM_KEYS and k not in hashes and not k.startswith("modelspec.")}
    assert extra == set()
    assert set(MINIMUM_KEYS) - {"ss_network_args"} <= set(metadata)  # network_args: only for LoCon/dropouts
    assert metadata["ss_network_dim"] == "4" and metadata["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert "secret" not in json.dumps(metadata)


# ---- keep the last N saves ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, saved, current, last_n, every, stale",
    [
        # epochs: N files. Every 2 epochs, keep 2: saving epoch 6 drops epoch 2 (sd-scripts: 6 - 2*2)
        ("epoch", [2, 4, 6], 6, 2, 2, [2]),
        ("epoch", [1, 2, 3], 3, 3, 1, []),
        ("epoch", [1, 2, 3, 4], 4, 1, 1, [1, 2, 3]),
        # steps: a window of N steps. Every 10, keep 30: at step 50 drop 10, keep 20..50
        ("step", [10, 20, 30, 40, 50], 50, 30, 10, [10]),
        ("step", [10, 20, 30], 30, 20, 10, []),  # step 10 is still inside 30 - 20
        ("step", [10, 20, 30, 40, 50], 50, 25, 10, [10, 20]),
    ],
)
def test_stale_save_numbers_follow_sd_scripts(kind, saved, current, last_n, every, stale):
    assert stale_save_numbers(saved, kind, current, last_n, every) == stale


def with_saving(cfg: TrainConfig, **saving) -> TrainConfig:
    """`cfg` with saving values changed (validated as any config is)."""
    raw = cfg.model_dump(mode="json")
    raw["saving"].update(saving)
    return TrainConfig.model_validate(raw)



def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"x")


def test_prune_old_saves_removes_only_this_kinds_old_numbered_files(dataset, tmp_path):
    cfg = with_saving(
        make_config(
            dataset, tmp_path, saving={"output_name": "mine", "save_every_n_epochs": 1, "save_every_n_steps": 5}
        ),
        save_last_n_epochs=2,
        save_last_n_steps=10,
    )
    run_dir, other_run = tmp_path / "run3", tmp_path / "run2"
    run_dir.mkdir()
    other_run.mkdir()
    keep = [
        "mine.safetensors",  # the final file
        "mine-interrupted.safetensors",
        "mine-tags.txt",
        "mine-20260101-120000.json",
        "mine-000001.ckpt",  # another format
        "other-000001.safetensors",  # another name
        "mine-000001-2.safetensors",  # renamed by next_free_path: not ours to judge
        "mine-000002.safetensors",
        "mine-000003.safetensors",
        "mine-step00000005.safetensors",
    ]
    touch(run_dir, "mine-000001.safetensors", *keep)
    touch(other_run, "mine-000001.safetensors")

    assert prune_old_saves(run_dir, cfg, "epoch", 3) == [run_dir / "mine-000001.safetensors"]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(keep)
    assert (other_run / "mine-000001.safetensors").exists()
    assert prune_old_saves(run_dir, cfg, "step", 15) == []  # step 5 = 15 - 10: still kept
    assert prune_old_saves(run_dir, cfg, "step", 20) == [run_dir / "mine-step00000005.safetensors"]
    assert prune_old_saves(run_dir, with_saving(cfg, save_last_n_epochs=None), "epoch", 9) == []  # option off


def test_keep_last_n_in_a_run(dataset, tmp_path):
    """5 epochs x 2 steps, saves every epoch (keep 2) and every 2 steps (keep a 4-step window)."""
    cfg = with_saving(
        make_config(
            dataset,
            tmp_path,
            training={"epochs": 5},
            saving={"output_name": "mine", "save_every_n_epochs": 1, "save_every_n_steps": 2},
        ),
        save_last_n_epochs=2,
        save_last_n_steps=4,
    )
    result = train_run(cfg)
    assert lora_files(result.run_dir) == {
        "mine-000003.safetensors",  # epochs 1, 2 removed; 5 is the final file
        "mine-000004.safetensors",
        "mine-step00000004.safetensors",  # step 2 removed at step 8 (8 - 4); 10 is the final file
        "mine-step00000006.safetensors",
        "mine-step00000008.safetensors",
        "mine.safetensors",
    }


def test_the_config_accepts_save_last_n(dataset, tmp_path):
    make_config(
        dataset,
        tmp_path,
        saving={"save_every_n_epochs": 1, "save_last_n_epochs": 2, "save_every_n_steps": 2, "save_last_n_steps": 4},
    )


def test_run_result_lists_only_files_that_exist(dataset, tmp_path):
    cfg = with_saving(
        make_config(dataset, tmp_path, training={"epochs": 4}, saving={"save_every_n_epochs": 1}),
        save_last_n_epochs=1,
    )
    result = train_run(cfg)
    assert all(path.exists() for path in result.files)


# ---- tag list ---------------------------------------------------------------------------------


CAPTIONS = {Path("a.png"): "thing, red", Path("b.png"): "thing, blue, zebra", Path("c.png"): "thing, red"}


@pytest.mark.parametrize(
    "order, lines",
    [
        (TagFile.BY_COUNT, ["[3] thing", "[2] red", "[1] blue", "[1] zebra"]),  # ties by name
        (TagFile.ALPHABETICAL, ["[1] blue", "[2] red", "[3] thing", "[1] zebra"]),
    ],
)
def test_tag_file_orders(order, lines, dataset, tmp_path):
    cfg = make_config(dataset, tmp_path, saving={"output_name": "mine", "tag_file": order.value})
    path = write_tag_file(cfg, CAPTIONS, tmp_path)
    assert path == tmp_path / "mine-tags.txt"
    assert path.read_text(encoding="utf-8").splitlines() == lines


def test_tag_file_off_writes_nothing(dataset, tmp_path):
    cfg = make_config(dataset, tmp_path, saving={"tag_file": "off"})
    assert write_tag_file(cfg, CAPTIONS, tmp_path) is None
    assert list(tmp_path.glob("*tags*")) == []


def test_a_run_writes_its_tag_file(named_run):
    lines = (named_run.run_dir / "mine-tags.txt").read_text(encoding="utf-8").splitlines()
    assert lines == ["[2] thing", "[1] blue", "[1] red", "[1] square"]


def test_network_args_metadata_matches_the_conv_alpha_the_network_uses():
    from torch import nn

    from engine.network.inject import default_rank_for
    from engine.run.metadata import network_args

    cfg = TrainConfig.model_validate({"network": {"type": "locon", "conv_dim": 8}})
    _, conv_alpha = default_rank_for(cfg.network)("x", nn.Conv2d(4, 4, 3))
    assert network_args(cfg.network)["conv_alpha"] == str(conv_alpha) == "1.0"

"""Export to sd-scripts: the files, the command, and exporting then importing gives the same config."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from engine.config.export_files import export_config
from engine.config.io import load_config, read_config
from engine.config.schema import TrainConfig
from engine.errors import ConfigError
from tests.support.cli import run_cli


def rich_config(tmp_path: Path) -> TrainConfig:
    """A config that uses most of what an export must carry: subsets with their own caption
    options, block weights, optimizer and scheduler arguments, a warm-up in steps, LoCon, noise..."""
    model = tmp_path / "models" / "sd15.safetensors"
    model.parent.mkdir()
    model.write_bytes(b"not read by an export with an explicit family")
    return TrainConfig.model_validate(
        {
            "model": {"base_model": str(model), "family": "sd1", "clip_skip": 2, "max_token_length": 225, "attention": "xformers"},
            "dataset": {
                "subsets": [
                    {"image_dir": str(tmp_path / "hoge"), "num_repeats": 10, "class_tokens": "hoge girl"},
                    {"image_dir": str(tmp_path / "fuga"), "num_repeats": 2, "class_tokens": "fuga", "keep_tokens": 3,
                     "caption_prefix": "photo of", "keep_tokens_separator": "|||", "enable_wildcard": True,
                     "token_warmup_step": 0.25, "caption_extension": ".caption"},
                    {"image_dir": str(tmp_path / "reg"), "num_repeats": 1, "class_tokens": "person", "is_reg": True},
                ],
                "resolution": [768, 512],
                "min_bucket_reso": 256,
                "max_bucket_reso": 1024,
                "shuffle_caption": True,
                "keep_tokens": 1,
                "secondary_separator": "::",
                "caption_dropout_rate": 0.05,
                "flip_aug": True,
                "cache_latents_to_disk": True,
            },
            "network": {"type": "locon", "dim": 16, "alpha": 8, "conv_dim": 8, "conv_alpha": 4, "rank_dropout": 0.1,
                        "down_lr_weight": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.5], "mid_lr_weight": 0.5, "up_lr_weight": "cosine+0.2",
                        "block_lr_zero_threshold": 0.1},
            "optim": {"optimizer": "AdamW", "optimizer_args": {"weight_decay": "0.1", "betas": "0.9,0.99"},
                      "learning_rate": 1e-4, "text_encoder_lr": 5e-5, "lr_scheduler": "polynomial", "lr_scheduler_power": 2.0,
                      "lr_scheduler_args": {"lr_end": 1e-6}, "lr_warmup_steps": 30, "max_grad_norm": 0.5,
                      "gradient_accumulation_steps": 2, "mixed_precision": "bf16"},
            "training": {"batch_size": 2, "epochs": 7, "seed": 99, "noise_offset": 0.05, "min_snr_gamma": 5,
                         "ip_noise_gamma": 0.1, "ip_noise_gamma_random_strength": True, "min_timestep": 100},
            "saving": {"output_folder": str(tmp_path / "out"), "output_name": "mine", "save_every_n_epochs": 2,
                       "save_state": True, "save_last_n_epochs_state": 2, "tag_file": "alphabetical", "training_comment": "x"},
            "sampling": {"sample_prompts": ["a hoge girl --w 512", "fuga --n blurry"], "sample_every_n_epochs": 1},
            "logging": {"log_dir": str(tmp_path / "logs"), "log_prefix": "mine-"},
        }
    )


def test_export_then_import_gives_the_same_config(tmp_path):
    cfg = rich_config(tmp_path)
    done = export_config(cfg, tmp_path / "export", "mine")
    assert load_config(done.training_toml) == cfg


@pytest.mark.parametrize(
    "changes",
    [
        {"network": {"type": "loha", "conv_dim": 4}},
        {"network": {"type": "lokr", "lokr_factor": 8}},
        {"network": {"train_on": "unet_only"}, "optim": {"unet_lr": 2e-4}},
        {"training": {"max_steps": 500, "epochs": 1}, "optim": {"lr_warmup_ratio": 0.1, "lr_warmup_steps": None}},
        {"model": {"family": "sdxl", "attention": "sdpa"}, "dataset": {"bucket_reso_steps": 32}},
        {"optim": {"optimizer": "AdaFactor", "optimizer_args": {"relative_step": "True"}, "lr_scheduler": "adafactor",
                   "lr_scheduler_args": {}, "lr_warmup_steps": None}},
    ],
)
def test_the_round_trip_holds_for_other_settings(tmp_path, changes):
    data = rich_config(tmp_path).model_dump(mode="json")
    for section, values in changes.items():
        data[section].update(values)
    if data["model"]["family"] == "sdxl":  # SDXL has other blocks
        data["network"].update(down_lr_weight=None, mid_lr_weight=None, up_lr_weight=None, block_lr_zero_threshold=0.0)
    if data["network"]["type"] in ("loha", "lokr"):
        data["network"].update(conv_alpha=None, rank_dropout=None, down_lr_weight=None, mid_lr_weight=None, up_lr_weight=None,
                               block_lr_zero_threshold=0.0)
    cfg = TrainConfig.model_validate(data)
    done = export_config(cfg, tmp_path / "export", "mine")
    back = load_config(done.training_toml)
    if cfg.optim.optimizer == "AdaFactor":  # the export states lora-wizard's Adafactor defaults
        assert back.optim.optimizer_args == {"relative_step": "True", "scale_parameter": "False", "warmup_init": "False"}
        assert back.model_dump(exclude={"optim": {"optimizer_args"}}) == cfg.model_dump(exclude={"optim": {"optimizer_args"}})
        return
    assert back == cfg


def test_the_files_sd_scripts_reads(tmp_path):
    cfg = rich_config(tmp_path)
    done = export_config(cfg, tmp_path / "export", "mine")
    training = tomllib.loads(done.training_toml.read_text(encoding="utf-8"))
    dataset = tomllib.loads(done.dataset_toml.read_text(encoding="utf-8"))
    # sd-scripts merges the tables: these are its argument names
    flat = {k: v for table in training.values() if isinstance(table, dict) for k, v in table.items()}
    assert training["dataset_config"] == str(done.dataset_toml.resolve())
    assert flat["network_module"] == "networks.lora" and "conv_dim=8" in flat["network_args"]
    assert flat["optimizer_args"] == ["weight_decay=0.1", "betas=0.9,0.99"]
    assert flat["lr_warmup_steps"] == 30 and flat["max_train_epochs"] == 7 and flat["max_token_length"] == 225
    assert flat["xformers"] is True and flat["sample_prompts"] == str(done.prompts.resolve())
    assert done.prompts.read_text(encoding="utf-8") == "a hoge girl --w 512\nfuga --n blurry\n"
    [ds] = dataset["datasets"]
    assert ds["resolution"] == [768, 512] and ds["batch_size"] == 2
    assert [s["num_repeats"] for s in ds["subsets"]] == [10, 2, 1] and ds["subsets"][2]["is_reg"] is True
    assert dataset["general"]["secondary_separator"] == "::" and dataset["general"]["flip_aug"] is True
    assert done.command == f"accelerate launch train_network.py --config_file {done.training_toml.resolve()}"


def test_a_folder_config_exports_its_folders(tmp_path):
    (tmp_path / "img" / "10_cat").mkdir(parents=True)
    (tmp_path / "reg" / "1_animal").mkdir(parents=True)
    data = rich_config(tmp_path).model_dump(mode="json")
    data["dataset"].update(subsets=None, img_folder=str(tmp_path / "img"), reg_img_folder=str(tmp_path / "reg"))
    cfg = TrainConfig.model_validate(data)
    back = load_config(export_config(cfg, tmp_path / "export", "mine").training_toml)
    assert [(Path(s.image_dir).name, s.num_repeats, s.class_tokens, s.is_reg) for s in back.dataset.subsets] == [
        ("10_cat", 10, "cat", False), ("1_animal", 1, "animal", True)]
    assert back.dataset.img_folder is None and back.dataset.reg_img_folder is None


def test_files_are_never_overwritten(tmp_path):
    cfg = rich_config(tmp_path)
    first = export_config(cfg, tmp_path / "export", "mine")
    second = export_config(cfg, tmp_path / "export", "mine")
    assert second.training_toml.name == "mine-2.toml" and second.dataset_toml.name == "mine-dataset-2.toml"
    assert first.training_toml.read_text(encoding="utf-8") != second.training_toml.read_text(encoding="utf-8")
    assert load_config(second.training_toml) == cfg


def test_what_sd_scripts_cannot_train_is_refused(tmp_path):
    data = rich_config(tmp_path).model_dump(mode="json")
    data["model"]["base_model"] = "builtin:demo"
    data["training"]["stop_text_encoder_training"] = 50
    with pytest.raises(ConfigError) as info:
        export_config(TrainConfig.model_validate(data), tmp_path / "export", "x")
    assert "built-in demo model" in str(info.value) and "stop_text_encoder_training = 50" in str(info.value)
    assert not (tmp_path / "export").exists()


def test_the_export_command(tmp_path, capsys):
    cfg = rich_config(tmp_path)
    path = tmp_path / "mine.json"
    path.write_text(cfg.model_dump_json(), encoding="utf-8")
    code, out = run_cli(capsys, "export", str(path), "--to", "sd-scripts", str(tmp_path / "sd"))
    assert code == 0, out
    assert f"accelerate launch train_network.py --config_file {tmp_path / 'sd' / 'mine.toml'}" in " ".join(out.split())
    assert read_config(tmp_path / "sd" / "mine.toml").config == cfg
    code, out = run_cli(capsys, "export", str(tmp_path / "missing.json"), "--to", "sd-scripts", str(tmp_path / "sd"))
    assert code == 2 and "no such file" in out

"""TOML configs: sd-scripts' training and dataset TOML and LETS' TOML load like JSON configs.

Fixtures written for these tests in the styles of sd-scripts' docs/config_README (dataset TOML with
[general], [[datasets]], [[datasets.subsets]], single-quoted Windows paths), its `--config_file`
examples (options in named tables) and the TOML LoRA_Easy_Training_Scripts' Qt GUI saves
(`<section>.args` / `<section>.dataset_args` tables and `[[subsets]]`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config.io import load_config, read_config
from engine.config.sources import SourceFormat
from engine.errors import ConfigError

CONFIGS = Path(__file__).parent / "data" / "configs"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_sd_scripts_training_toml_with_its_dataset_toml():
    loaded = read_config(CONFIGS / "sd_scripts_train.toml")
    cfg = loaded.config
    assert loaded.source_format == SourceFormat.SD_SCRIPTS_TOML
    assert cfg.model.base_model == "/models/sd15.safetensors" and cfg.model.clip_skip == 2 and cfg.model.max_token_length == 150
    assert cfg.model.attention == "xformers"
    # the dataset TOML (read relative to the training TOML) lists the folders; train_data_dir is ignored
    assert cfg.dataset.img_folder is None and "train_data_dir is ignored" in "\n".join(loaded.notes)
    hoge, fuga, reg = cfg.dataset.subsets
    assert (str(hoge.image_dir), hoge.num_repeats, hoge.class_tokens, hoge.keep_tokens) == ("C:\\data\\hoge", 10, "hoge girl", None)
    assert (fuga.keep_tokens, fuga.caption_prefix, fuga.keep_tokens_separator, fuga.enable_wildcard, fuga.token_warmup_step) == (
        3, "photo of", "|||", True, 0.25)
    assert reg.is_reg and reg.caption_extension == ".caption" and reg.keep_tokens == 1
    # dataset-wide: the dataset's value, else [general]'s, else the training file's
    ds = cfg.dataset
    assert (ds.keep_tokens, ds.shuffle_caption, ds.caption_extension, ds.resolution, ds.flip_aug) == (2, True, ".txt", (768, 512), True)
    assert cfg.training.batch_size == 4  # the dataset's batch_size wins over train_batch_size
    # max_train_epochs overrides max_train_steps (sd-scripts)
    assert (cfg.training.epochs, cfg.training.max_steps) == (8, None)
    assert cfg.optim.lr_warmup_steps == 100 and cfg.optim.text_encoder_lr == 5e-5
    assert cfg.optim.optimizer_args == {"weight_decay": "0.1", "betas": "0.9,0.99"}
    assert cfg.network.type == "locon" and cfg.network.conv_dim == 8 and cfg.network.mid_lr_weight == 0.5
    assert cfg.network.down_lr_weight == [1] * 11 + [0.5]


def test_sd_scripts_defaults_fill_what_a_toml_leaves_out():
    loaded = read_config(CONFIGS / "sd_scripts_flat.toml")
    cfg, notes = loaded.config, "\n".join(loaded.notes)
    # neither epochs nor steps: sd-scripts trains 1600 steps; `epoch` is no sd-scripts option
    assert cfg.training.max_steps == 1600 and "epoch = 12 is not an sd-scripts option" in notes
    assert cfg.optim.learning_rate == 2e-6 and cfg.optim.lr_scheduler == "linear" and cfg.optim.optimizer == "AdamW"
    assert cfg.optim.lr_warmup_ratio == 0.1 and cfg.optim.lr_warmup_steps is None  # a float below 1 is a share
    assert (cfg.network.dim, cfg.network.alpha, cfg.network.train_on) == (4, 1.0, "unet_only")
    assert (cfg.dataset.enable_bucket, cfg.dataset.caption_extension, cfg.model.max_token_length) == (False, ".caption", 75)
    assert cfg.dataset.resolution == 1024 and cfg.dataset.max_bucket_reso == 1024
    assert str(cfg.dataset.reg_img_folder) == "/data/reg" and cfg.saving.save_precision == "float"


def test_lets_toml():
    loaded = read_config(CONFIGS / "lets_gui.toml")
    cfg = loaded.config
    assert loaded.source_format == SourceFormat.LETS_TOML
    char, reg = cfg.dataset.subsets
    assert (str(char.image_dir), char.num_repeats, char.keep_tokens, char.shuffle_caption) == ("/data/lets/char", 10, 1, True)
    assert reg.is_reg and reg.class_tokens == "1girl"
    assert cfg.dataset.resolution == 768 and cfg.training.batch_size == 2 and cfg.dataset.min_bucket_reso == 256
    assert cfg.network.type == "loha" and cfg.network.conv_dim == 8  # algo in network_args: LyCORIS
    assert cfg.optim.lr_warmup_ratio == 0.05 and cfg.optim.lr_scheduler_num_cycles == 3
    assert cfg.training.epochs == 10 and cfg.training.noise_offset == 0.1 and cfg.model.attention == "xformers"
    assert str(cfg.sampling.sample_prompts) == "/out/lets/prompts.txt" and cfg.sampling.sample_every_n_epochs == 1


def test_a_toml_syntax_error_shows_line_column_and_the_backslash_hint():
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "broken_backslash.toml")
    message = str(info.value)
    assert "broken_backslash.toml: not valid TOML" in message and "line 2, column 38" in message
    assert "'single quotes'" in message


def test_a_dataset_toml_alone_is_not_a_config():
    with pytest.raises(ConfigError, match="this is a dataset TOML"):
        load_config(CONFIGS / "sd_scripts_dataset.toml")


def test_dataset_toml_refusals(tmp_path):
    dataset = write(tmp_path, "data.toml", """
[[datasets]]
resolution = 512
  [[datasets.subsets]]
  image_dir = 'a'
  flip_aug = true
  [[datasets.subsets]]
  image_dir = 'b'
  metadata_file = 'meta.json'
  num_repeat = 3
[[datasets]]
  [[datasets.subsets]]
  image_dir = 'c'
""")
    train = write(tmp_path, "train.toml", f"pretrained_model_name_or_path = 'm.safetensors'\ndataset_config = '{dataset.name}'\n")
    with pytest.raises(ConfigError, match="has 2 \\[\\[datasets\\]\\] tables; lora-wizard trains one dataset"):
        load_config(train)
    dataset.write_text(dataset.read_text().split("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'c'")[0], encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(train)
    message = str(info.value)
    assert "metadata_file = \"meta.json\": turns on fine-tuning datasets" in message
    assert "num_repeat = 3: is not a dataset option; did you mean num_repeats?" in message
    assert "flip_aug: differs between the folders" in message


def test_a_missing_dataset_toml_and_no_resolution(tmp_path):
    train = write(tmp_path, "train.toml", "pretrained_model_name_or_path = 'm'\ndataset_config = 'nowhere.toml'\n")
    with pytest.raises(ConfigError, match="dataset_config = 'nowhere.toml': no such file"):
        load_config(train)
    train = write(tmp_path, "train2.toml", "pretrained_model_name_or_path = 'm'\ntrain_data_dir = 'img'\noutput_dir = 'o'\n")
    with pytest.raises(ConfigError, match="dataset.resolution: the file gives no resolution"):
        load_config(train)


def test_unknown_keys_in_a_training_toml_are_named(tmp_path):
    train = write(tmp_path, "train.toml", "[x]\npretrained_model_name_or_path = 'm'\ntrain_data_dir = 'i'\nresolution = 512\nnetwork_dimm = 8\n")
    with pytest.raises(ConfigError, match="network_dimm = 8: unknown key; did you mean network_dim"):
        load_config(train)


@pytest.mark.parametrize(
    ("limits", "fmt", "epochs", "max_steps"),
    [
        # sd-scripts: max_train_epochs overrides max_train_steps
        ({"max_train_epochs": 3, "max_train_steps": 50}, "toml", 3, None),
        ({"max_train_steps": 50}, "toml", 1, 50),
        # the kohya_ss GUI: its `epoch` only sized its own estimate, a step count it passed wins
        ({"epoch": 4, "max_train_steps": 50}, "gui", 4, 50),
        ({"epoch": 4, "max_train_epochs": 2, "max_train_steps": 50}, "gui", 2, None),
        # LETS' JSON: max_steps overrides num_epochs ("if you set max steps this value is ignored")
        ({"num_epochs": 4, "max_steps": 50}, "lets", 4, 50),
    ],
)
def test_each_format_keeps_its_tools_limit_rule(tmp_path, limits, fmt, epochs, max_steps):
    import json

    from engine.data.plan import make_plan

    images = tmp_path / "img" / "2_thing"
    images.mkdir(parents=True)
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (64, 64)).save(images / f"{i}.png")
    common = {"pretrained_model_name_or_path": "builtin:demo", "train_data_dir": str(tmp_path / "img"), "output_dir": "o",
              "resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 128, "train_batch_size": 1}
    if fmt == "toml":
        path = write(tmp_path, "c.toml", "\n".join(f"{k} = {json.dumps(v)}" for k, v in {**common, **limits}.items()))
    elif fmt == "gui":
        path = write(tmp_path, "c.json", json.dumps({**common, **limits, "LoRA_type": "Standard", "learning_rate": 1e-4}))
    else:
        lets = {"base_model": "builtin:demo", "img_folder": str(tmp_path / "img"), "output_folder": "o", "train_resolution": 64,
                "min_bucket_resolution": 64, "max_bucket_resolution": 128}
        path = write(tmp_path, "c.json", json.dumps({**lets, **limits}))
    cfg = load_config(path)
    assert (cfg.training.epoch_count, cfg.training.max_steps) == (epochs, max_steps)
    plan = make_plan(cfg)  # 3 images x 2 repeats, batch 1: 6 steps an epoch
    assert plan.total_steps == (max_steps if max_steps else epochs * 6)

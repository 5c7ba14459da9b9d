"""Loading, saving and migrating config files (offline, no torch)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from engine.config.io import (
    DEFAULT_SKIP,
    MIGRATIONS,
    config_from_dict,
    describe_field,
    dump_config,
    load_config,
    migrate,
    read_config,
    save_config,
    skip_paths_for,
)
from engine.config.schema import CONFIG_VERSION, DEMO_MODEL, SAMPLE_DATASET, TrainConfig
from engine.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests" / "data" / "configs"
EXAMPLES = ROOT / "saved_configs" / "examples"
NOON = datetime(2026, 3, 1, 12, 0, 5)
LETS_DEFAULT_SKIP_LIST = [
    "save_json_folder",
    "reg_img_folder",
    "lora_model_for_resume",
    "change_output_name",
    "training_comment",
    "json_load_skip_list",
]


def many_changes() -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": {"base_model": "/models/x.safetensors", "family": "sd2", "v_parameterization": True,
                      "vae": "/models/vae.pt", "clip_skip": 1, "max_token_length": 225, "attention": "xformers"},
            "dataset": {"img_folder": "/data/img", "reg_img_folder": "/data/reg", "prior_loss_weight": 0.5,
                        "caption_extension": ".caption", "resolution": [768, 512], "max_bucket_reso": 1024,
                        "bucket_no_upscale": True, "shuffle_caption": True, "keep_tokens": 2,
                        "caption_dropout_rate": 0.1, "caption_tag_dropout_rate": 0.2, "flip_aug": True,
                        "cache_latents": False, "random_crop": True, "max_data_loader_n_workers": 0},
            "network": {"type": "locon", "dim": 64, "alpha": 0.5, "conv_dim": 8, "conv_alpha": 1.5,
                        "train_on": "unet_only", "network_weights": "/loras/old.safetensors", "dropout": 0.1},
            "optim": {"optimizer": "Lion", "optimizer_args": {"weight_decay": "0.1", "betas": [0.9, 0.99]},
                      "learning_rate": 3e-5, "text_encoder_lr": 1e-5, "unet_lr": 2e-5,
                      "lr_scheduler": "polynomial", "lr_scheduler_power": 2.0, "lr_warmup_ratio": 0.1,
                      "max_grad_norm": 0.0, "gradient_accumulation_steps": 4, "gradient_checkpointing": True,
                      "mixed_precision": "bf16"},
            "training": {"batch_size": 3, "epochs": 7, "max_steps": 1234, "seed": 99, "noise_offset": 0.05,
                         "min_snr_gamma": 5.0, "min_timestep": 10, "max_timestep": 900},
            "saving": {"output_folder": "/out", "output_name": "many", "save_model_as": "safetensors",
                       "save_precision": "bf16", "save_every_n_epochs": 2, "save_every_n_steps": 500,
                       "training_comment": "trigger: ünïcode ✓", "no_metadata": True, "tag_file": "alphabetical"},
        }
    )


# ----------------------------------------------------------------------------------- round trips


def test_defaults_round_trip(tmp_path):
    path = save_config(TrainConfig(), tmp_path, now=NOON)
    assert path.name == "config-20260301-120005.json"
    assert load_config(path) == TrainConfig()
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n  "version": 1,') and text.endswith("}\n")


def test_many_changes_round_trip(tmp_path):
    cfg = many_changes()
    path = save_config(cfg, tmp_path, now=NOON)
    assert path.name == "many-20260301-120005.json"  # saving.output_name names the file
    loaded = load_config(path)
    assert loaded == cfg
    assert loaded.dataset.resolution == (768, 512) and loaded.saving.training_comment == "trigger: ünïcode ✓"


def test_every_supported_field_round_trips_in_dict_form():
    cfg = many_changes()
    assert config_from_dict(json.loads(json.dumps(dump_config(cfg)))) == cfg


def test_dump_config_is_plain_json():
    data = dump_config(many_changes())
    assert data["version"] == CONFIG_VERSION
    assert data["model"]["vae"] == "/models/vae.pt" and data["optim"]["optimizer"] == "Lion"
    assert data["dataset"]["resolution"] == [768, 512]
    json.dumps(data)  # nothing that needs a custom encoder


# ----------------------------------------------------------------------------------------- saving


def test_saving_twice_in_the_same_second_keeps_both(tmp_path):
    first = save_config(TrainConfig(), tmp_path, "run", now=NOON)
    second = save_config(many_changes(), tmp_path, "run", now=NOON)
    assert first != second and first.exists() and second.exists()
    assert second.name == "run-20260301-120005-2.json"
    assert load_config(first) == TrainConfig() and load_config(second) == many_changes()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]  # no temp file left behind


def test_an_existing_file_is_never_overwritten(tmp_path):
    taken = tmp_path / "config-20260301-120005.json"
    taken.write_text("mine", encoding="utf-8")
    path = save_config(TrainConfig(), tmp_path, now=NOON)
    assert path != taken and taken.read_text(encoding="utf-8") == "mine"


def test_save_name_rules(tmp_path):
    assert save_config(TrainConfig(), tmp_path, "mine.json", now=NOON).name == "mine-20260301-120005.json"
    with pytest.raises(ConfigError, match="plain file name"):
        save_config(TrainConfig(), tmp_path, "../escape", now=NOON)
    assert save_config(TrainConfig(), tmp_path / "new" / "folder").parent == tmp_path / "new" / "folder"


def test_an_invalid_config_is_not_written(tmp_path):
    bad = TrainConfig.model_validate({"network": {"type": "locon"}})  # each field fine, the pair is not
    with pytest.raises(ConfigError, match="network.conv_dim: network.type=locon needs"):
        save_config(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ LETS / GUI files


def test_lets_v1_file_loads_as_it_is():
    loaded = read_config(CONFIGS / "lets_v1_popup_sd2.json")
    cfg = loaded.config
    assert loaded.source_version == 0
    assert cfg.model.family == "sd2" and cfg.model.v_parameterization and cfg.model.clip_skip == 1
    assert cfg.optim.optimizer == "AdamW8bit" and cfg.optim.lr_scheduler == "cosine_with_restarts"
    assert cfg.network.train_on == "unet_only" and cfg.network.dim == 32 and cfg.network.alpha == 16
    assert cfg.saving.save_every_n_epochs is None  # LETS' 999999
    assert cfg.saving.tag_file == "alphabetical"
    assert cfg.training.epochs == 10 and cfg.training.batch_size == 2 and cfg.training.noise_offset == 0.1
    assert cfg.dataset.resolution == 768 and cfg.dataset.caption_dropout_rate == 0.05
    assert cfg.optim.unet_lr is None and cfg.optim.text_encoder_lr == 5e-5
    assert str(cfg.network.network_weights).endswith("mychar-v1.safetensors")
    assert any("save_json_folder" in note for note in loaded.notes)


def test_lets_2023_file():
    cfg = load_config(CONFIGS / "lets_2023_05_popup.json")
    assert cfg.optim.optimizer == "Lion" and cfg.optim.mixed_precision == "bf16"
    assert cfg.network.type == "locon" and cfg.network.conv_dim == 8 and cfg.network.conv_alpha == 4.0
    assert cfg.dataset.resolution == (512, 640)
    assert cfg.sampling.sample_every_n_epochs == 1 and cfg.sampling.sample_sampler == "euler_a"
    assert cfg.training.seed == 1234 and cfg.training.min_snr_gamma == 5.0
    assert cfg.optim.gradient_accumulation_steps == 2


def test_kohya_gui_files():
    sd15 = load_config(CONFIGS / "kohya_gui_sd15.json")
    assert sd15.dataset.resolution == (768, 512) and sd15.training.epochs == 4
    assert sd15.optim.learning_rate == 1e-4 and sd15.optim.text_encoder_lr == 5e-5
    assert sd15.optim.lr_warmup_ratio == pytest.approx(0.1) and sd15.training.seed == 23
    assert sd15.model.clip_skip == 2 and sd15.model.max_token_length == 75
    assert sd15.network.type == "lora" and sd15.network.conv_dim is None
    assert sd15.saving.output_name == "marty_v1" and sd15.saving.training_comment is None
    sdxl = load_config(CONFIGS / "kohya_gui_sdxl.json")
    assert sdxl.model.family == "sdxl" and sdxl.dataset.resolution == 1024
    assert sdxl.training.noise_offset_type == "multires" and sdxl.training.multires_noise_iterations == 8
    assert sdxl.optim.optimizer == "Prodigy" and sdxl.training.seed == 42


def test_flat_file_errors_name_the_file(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"net_dimm": 8}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"old\.json.*net_dim"):
        load_config(path)


# ------------------------------------------------------------------------------------- skip list


def test_default_skip_is_lets_default_list():
    assert skip_paths_for(LETS_DEFAULT_SKIP_LIST) == frozenset(DEFAULT_SKIP)


def test_default_skip_on_a_lets_file():
    cfg = load_config(CONFIGS / "lets_v1_popup_sd2.json", skip=DEFAULT_SKIP)
    assert cfg.dataset.reg_img_folder is None and cfg.network.network_weights is None
    assert cfg.saving.output_name is None and cfg.saving.training_comment is None
    assert cfg.model.family == "sd2" and cfg.training.epochs == 10  # everything else is kept


def test_custom_skip_with_lets_names_paths_and_sections(tmp_path):
    cfg = load_config(CONFIGS / "lets_v1_popup_sd2.json", skip=["base_model", "dataset.img_folder", "v2", "optim"])
    assert cfg.model.base_model == DEMO_MODEL and cfg.dataset.img_folder == SAMPLE_DATASET
    assert cfg.model.family == "auto" and cfg.model.v_parameterization  # only v2 was skipped
    assert cfg.optim == TrainConfig().optim
    saved = save_config(many_changes(), tmp_path)
    nested = load_config(saved, skip=["network.dim", "lora_model_for_resume", "saving"])
    assert nested.network.dim == 32 and nested.network.network_weights is None
    assert nested.saving == TrainConfig().saving and nested.network.conv_dim == 8


def test_empty_model_path_can_be_skipped(tmp_path):
    path = tmp_path / "lets.json"
    path.write_text(json.dumps({"base_model": "", "img_folder": "/img", "net_dim": 8}), encoding="utf-8")
    with pytest.raises(ConfigError, match="base_model: is empty"):
        load_config(path)
    assert load_config(path, skip=["model.base_model"]).network.dim == 8


def test_unknown_skip_entry():
    with pytest.raises(ConfigError, match="did you mean network.dim"):
        skip_paths_for(["network.dimm"])


# ------------------------------------------------------------------------------------- messages


def test_unknown_key_message_names_the_close_key():
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "typo.json")
    message = str(info.value)
    assert "typo.json: optim.learnig_rate = 0.0002: unknown key; did you mean optim.learning_rate?" in message
    # every problem at once: the typo, the bad value, and the inputs the file does not name
    assert "4 problems" in message and "network.dim = 0" in message
    assert "model.base_model: the file does not name it" in message
    assert "dataset.img_folder: the file does not name it" in message


def test_key_in_the_wrong_section_or_flat_name_in_a_nested_file():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"version": 1, "network": {"learning_rate": 1e-4}, "net_dim": 8}, "draft")
    assert "network.learning_rate = 0.0001: unknown key; did you mean optim.learning_rate?" in str(info.value)
    assert "net_dim = 8: unknown key; did you mean network.dim" in str(info.value)


def test_bad_value_message_names_field_value_and_fix():
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "typo.json")
    assert "typo.json: network.dim = 0: Input should be greater than or equal to 1; use a whole number >= 1 and <= 1024" in str(
        info.value
    )
    with pytest.raises(ConfigError, match=r'optim.optimizer = "adam": not one of the choices; use one of "AdamW"'):
        config_from_dict({"optim": {"optimizer": "adam"}}, "x.json")
    with pytest.raises(ConfigError, match=r"dataset.caption_extension = \"txt\": write it with its dot"):
        config_from_dict({"dataset": {"caption_extension": "txt"}}, "x.json")


def test_cross_field_rules_are_listed_one_by_one():
    with pytest.raises(ConfigError) as info:
        config_from_dict(
            {"dataset": {"min_bucket_reso": 1000}, "optim": {"lr_scheduler": "constant", "lr_warmup_ratio": 0.1}},
            "x.json",
        )
    lines = str(info.value).splitlines()
    assert lines[0] == "2 problems in x.json:"
    assert lines[1].startswith("  - x.json: dataset.min_bucket_reso = 1000: is larger than dataset.max_bucket_reso (960)")
    assert lines[2].startswith('  - x.json: optim.lr_scheduler = "constant": has no warmup')


def test_describe_field():
    assert describe_field("optim.lr_warmup_ratio").startswith("a number >= 0.0 and < 1.0")
    assert describe_field("network.block_dims[2]").startswith("a list of whole numbers, or null")
    assert describe_field("dataset.resolution").startswith("a whole number or [width, height]")


# ---------------------------------------------------------------------------------- broken files


def test_invalid_json_message_has_line_and_column():
    with pytest.raises(ConfigError, match=r"broken\.json: not valid JSON at line 7, column 3"):
        load_config(CONFIGS / "broken.json")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"[1, 2]", "a config is a JSON object"),
        (b'{"version": 1, "version": 1}', "appears twice"),
        (b'{"training": {"noise_offset": NaN}}', "NaN is not a number"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"", "line 1, column 1"),
    ],
)
def test_unusable_files(tmp_path, content, expected):
    path = tmp_path / "c.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.json"
    data = {"version": 1, "model": {"base_model": DEMO_MODEL}, "dataset": {"img_folder": SAMPLE_DATASET}, "network": {"dim": 4}}
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(data).encode())
    assert load_config(path).network.dim == 4


# ------------------------------------------------------------------------------------- versions


def test_version_less_nested_file_is_migrated():
    loaded = read_config(CONFIGS / "v0_nested.json")
    assert loaded.source_version == 0
    cfg = loaded.config
    assert cfg.version == CONFIG_VERSION and cfg.network.dim == 16 and cfg.optim.optimizer == "AdamW"
    assert cfg.model.clip_skip == 1 and cfg.saving.output_name == "mychar"


def test_newer_version_is_refused():
    with pytest.raises(ConfigError, match=r"newer_version\.json: version = 99: .*newer lora-wizard.*Update"):
        load_config(CONFIGS / "newer_version.json")


@pytest.mark.parametrize("version", ["1", True, -1, 1.5])
def test_version_must_be_a_whole_number(version):
    with pytest.raises(ConfigError, match="version"):
        config_from_dict({"version": version})


def test_every_old_version_has_a_migration():
    assert set(MIGRATIONS) == set(range(CONFIG_VERSION))


def test_migrations_chain_in_order_and_stay_pure():
    table = {
        1: lambda d: {**d, "version": 2, "renamed": d["old"]},
        2: lambda d: {**{k: v for k, v in d.items() if k != "old"}, "version": 3},
    }
    original = {"version": 1, "old": 5}
    assert migrate(original, migrations=table, current=3) == {"version": 3, "renamed": 5}
    assert original == {"version": 1, "old": 5}
    assert migrate({"version": 3}, migrations=table, current=3) == {"version": 3}
    with pytest.raises(ConfigError, match="no migration from config version 0"):
        migrate({}, migrations=table, current=3)
    with pytest.raises(RuntimeError, match="must return version 2"):
        migrate({"version": 1, "old": 1}, migrations={1: lambda d: d}, current=2)


def test_flat_migration_output():
    assert MIGRATIONS[0]({"net_dim": 8, "v2": True}) == {
        "network": {"dim": 8},
        "model": {"family": "sd2"},
        "version": 1,
    }
    assert MIGRATIONS[0]({"network": {"dim": 8}}) == {"network": {"dim": 8}, "version": 1}


# ------------------------------------------------------------------------------------- the rest


def test_config_from_dict_leaves_its_input_alone():
    data = {"net_dim": 8, "json_load_skip_list": None}
    assert config_from_dict(data, skip=["json_load_skip_list"]).network.dim == 8
    assert data == {"net_dim": 8, "json_load_skip_list": None}
    with pytest.raises(ConfigError, match="JSON object"):
        config_from_dict([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_shipped_examples_validate_and_round_trip(path, tmp_path):
    cfg = load_config(path)
    assert json.loads(path.read_text(encoding="utf-8"))["version"] == CONFIG_VERSION
    assert load_config(save_config(cfg, tmp_path)) == cfg


def test_the_examples_that_ship():
    names = {p.name for p in EXAMPLES.glob("*.json")}
    assert {"demo.json", "sd15_character.json", "sdxl_style.json"} <= names
    demo = load_config(EXAMPLES / "demo.json")
    assert demo.model.base_model == DEMO_MODEL and demo.dataset.img_folder == SAMPLE_DATASET
    assert load_config(EXAMPLES / "sdxl_style.json").model.family == "sdxl"


def test_no_torch_import():
    code = "import sys, engine.config.io; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_a_union_field_is_one_problem():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"dataset": {"resolution": [512]}}, "x.json")
    assert str(info.value).startswith("x.json: dataset.resolution = [512]: ")
    assert "[width, height]" in str(info.value)

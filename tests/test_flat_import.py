"""The flat LETS / kohya_ss GUI / sd-scripts key mapping (pure: dict in, nested dict out)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config.flat_import import (
    FLAT_KEYS,
    IGNORED_KEYS,
    NOT_OFFERED,
    SESSION_KEYS,
    SPECIAL_KEYS,
    flat_key_paths,
    flat_to_nested,
    is_flat_config,
)
from engine.config.schema import field_paths
from engine.errors import ConfigError

CONFIGS = Path(__file__).parent / "data" / "configs"


def nested(raw: dict) -> dict:
    return flat_to_nested(raw, "test.json").nested


def fixture(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text(encoding="utf-8"))


def error_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        flat_to_nested(raw, "test.json")
    return str(info.value)


# ------------------------------------------------------------------------------------ the tables


def test_every_target_is_a_config_field():
    fields = set(field_paths())
    assert {t.path for t in FLAT_KEYS.values()} <= fields
    assert {p for paths in SPECIAL_KEYS.values() for p in paths} <= fields


def test_each_key_is_in_one_table_only():
    tables = [set(FLAT_KEYS), set(SPECIAL_KEYS), set(SESSION_KEYS), set(IGNORED_KEYS), set(NOT_OFFERED)]
    for i, a in enumerate(tables):
        for b in tables[i + 1 :]:
            assert not a & b


def test_flat_key_paths():
    assert flat_key_paths("net_dim") == ("network.dim",)
    assert flat_key_paths("lora_model_for_resume") == ("network.network_weights",)
    assert flat_key_paths("v2") == ("model.family",)
    assert flat_key_paths("save_json_folder") == ()


def test_is_flat_config():
    assert is_flat_config({"net_dim": 32})
    assert is_flat_config({})
    assert not is_flat_config({"network": {"dim": 32}})
    assert not is_flat_config({"version": 1})
    assert is_flat_config({"network_args": {"conv_dim": 4}})  # a dict value, but not a section


# ------------------------------------------------------------------------------------ LETS files


def test_lets_v1_popup_file():
    out = flat_to_nested(fixture("lets_v1_popup_sd2.json"), "x")
    n = out.nested
    assert n["model"] == {
        "base_model": "D:\\models\\sd21-768-v.safetensors",
        "v_parameterization": True,
        "clip_skip": 1,
        "max_token_length": 150,
        "lowram": False,
        "family": "sd2",
        "attention": "sdpa",
    }
    assert n["optim"]["optimizer"] == "AdamW8bit"
    assert n["optim"]["lr_scheduler_num_cycles"] == 3 and n["optim"]["lr_warmup_ratio"] == 0.05
    assert "unet_lr" not in n["optim"]  # null: the default (learning_rate) applies
    assert n["network"]["train_on"] == "unet_only"
    assert "save_every_n_epochs" not in n["saving"]  # 999999 was LETS' "don't save epochs"
    assert n["saving"]["tag_file"] == "alphabetical"
    assert n["saving"]["output_name"] == "mychar"
    assert n["dataset"]["resolution"] == 768
    assert "caption_dropout_every_n_epochs" not in n["dataset"]
    assert "bucket_reso_steps" not in n["dataset"]
    assert set(out.dropped) == {"save_json_folder", "load_json_path", "json_load_skip_list"}


def test_lets_optimizer_flags():
    assert nested({"use_lion": True, "use_8bit_adam": False})["optim"]["optimizer"] == "Lion"
    assert nested({"use_lion": True, "use_8bit_adam": True})["optim"]["optimizer"] == "Lion"
    assert nested({"use_8bit_adam": True})["optim"]["optimizer"] == "AdamW8bit"
    assert nested({"use_8bit_adam": False, "use_lion": False})["optim"]["optimizer"] == "AdamW"
    # an explicit optimizer wins over the deprecated flags
    assert nested({"optimizer_type": "Lion", "use_8bit_adam": True})["optim"]["optimizer"] == "Lion"


def test_lets_adamw_button_is_read_as_adamw_with_a_note():
    out = flat_to_nested(fixture("lets_v1_adamw_button.json"), "x")
    assert out.nested["optim"]["optimizer"] == "AdamW"
    assert any("8bit_adam" in note for note in out.notes)


def test_v2_false_leaves_the_family_to_detection():
    assert "family" not in nested({"v2": False, "net_dim": 8}).get("model", {})
    assert nested({"v2": False, "sdxl": True})["model"]["family"] == "sdxl"
    assert "v2 and sdxl" in error_of({"v2": True, "sdxl": True})


def test_lets_2023_popup_file():
    out = flat_to_nested(fixture("lets_2023_05_popup.json"), "x")
    n = out.nested
    assert n["network"] == {"conv_dim": "8", "conv_alpha": "4", "type": "locon", "dim": 16, "alpha": 8}
    assert n["optim"]["optimizer"] == "Lion"
    assert n["optim"]["optimizer_args"] == {"weight_decay": "0.1", "betas": "0.9,0.99"}
    assert n["dataset"]["resolution"] == [512, 640]  # train_resolution x height_resolution
    assert n["sampling"] == {
        "sample_prompts": "/data/lora/style/prompts.txt",
        "sample_sampler": "euler_a",
        "sample_every_n_epochs": 1,  # from LETS' misspelt sample_every_n_epoch
    }
    assert n["model"]["max_token_length"] == 225
    assert {"list_of_json_to_run", "save_json_only"} <= set(out.dropped)
    assert "token_warmup_min" not in out.nested["dataset"]  # null: the default applies


def test_lyco_without_conv_dim_is_plain_lora():
    assert nested({"lyco": True, "network_args": {"algo": "lora"}})["network"]["type"] == "lora"
    assert nested({"lyco": True, "network_args": {"algo": "loha", "conv_dim": 4}})["network"]["type"] == "loha"


def test_old_lets_locon_switch():
    n = nested({"locon": True, "locon_dim": 8, "locon_alpha": 1})["network"]
    assert n == {"type": "locon", "conv_dim": 8, "conv_alpha": 1}


def test_network_args_forms():
    as_list = nested({"network_args": ["conv_dim=4", "conv_alpha=2", "down_lr_weight=1,1,0.5"]})["network"]
    assert as_list == {"conv_dim": "4", "conv_alpha": "2", "down_lr_weight": [1, 1, 0.5], "type": "locon"}
    as_text = nested({"network_args": "conv_dim=4 conv_alpha=2"})["network"]
    assert as_text["type"] == "locon" and as_text["conv_dim"] == "4"
    assert "not key=value" in error_of({"network_args": ["conv_dim"]})
    assert "DyLoRA networks, which lora-wizard does not offer" in error_of({"network_args": {"unit": 4}})


def test_network_module():
    assert "type" not in nested({"network_module": "networks.lora", "net_dim": 4})["network"]
    assert nested({"network_module": "lycoris.kohya", "conv_dim": 4})["network"]["type"] == "locon"
    assert "networks.dylora" in error_of({"network_module": "networks.dylora"})


# ------------------------------------------------------------------------------- kohya_ss GUI files


def test_kohya_gui_file():
    out = flat_to_nested(fixture("kohya_gui_sd15.json"), "x")
    n = out.nested
    assert n["model"]["base_model"] == "C:/sd/models/v1-5-pruned-emaonly.safetensors"
    assert n["model"]["max_token_length"] == 75 and n["model"]["attention"] == "xformers"  # the GUI passed --xformers
    assert n["dataset"]["resolution"] == [768, 512]  # max_resolution "768,512"
    assert n["dataset"]["caption_extension"] == ".caption"  # "" is sd-scripts' default
    assert n["optim"]["lr_warmup_ratio"] == 0.1  # lr_warmup is a percentage
    assert n["optim"]["optimizer"] == "AdamW8bit"
    assert n["optim"]["optimizer_args"] == {"weight_decay": "0.05", "betas": "0.9,0.99"}
    assert n["training"]["epochs"] == 4
    assert "seed" not in n["training"]  # "" is "not set"
    assert "min_snr_gamma" not in n["training"]  # 0 is the GUI's "off"
    assert "vae_batch_size" not in n["dataset"]
    assert "type" in n["network"] and n["network"]["type"] == "lora"
    assert "conv_dim" not in n["network"]  # the GUI does not pass conv_dim for a Standard LoRA
    assert "sampling" in n and "sample_every_n_steps" not in n["sampling"]
    assert {"num_cpu_threads_per_process", "model_list"} & set(out.dropped) == set()
    assert any("num_cpu_threads_per_process" in note for note in out.notes)


def test_kohya_gui_sdxl_file():
    out = flat_to_nested(fixture("kohya_gui_sdxl.json"), "x")
    n = out.nested
    assert n["model"]["family"] == "sdxl" and n["model"]["attention"] == "xformers"
    assert n["dataset"]["resolution"] == 1024  # "1024,1024" is the square
    assert n["network"]["type"] == "locon" and n["network"]["conv_dim"] == 16
    assert n["training"]["noise_offset_type"] == "multires"
    assert "noise_offset" not in n["training"]  # the Multires switch means the offset was not used
    assert "huber_c" not in n["training"]  # the GUI's default, unused by the L2 loss
    assert "v_pred_like_loss" not in n["training"] and "ip_noise_gamma" not in n["training"]
    assert n["optim"]["optimizer"] == "Prodigy"
    assert n["training"]["stop_text_encoder_training"] == 0
    assert "sdxl_no_half_vae" not in out.dropped and any("sdxl_no_half_vae" in m for m in out.notes)


def test_attention_switches():
    assert nested({"xformers": "xformers", "mem_eff_attn": False})["model"]["attention"] == "xformers"
    assert nested({"mem_eff_attn": False, "xformers": "xformers"})["model"]["attention"] == "xformers"
    assert nested({"xformers": True, "mem_eff_attn": True})["model"]["attention"] == "mem_eff"
    assert nested({"xformers": False})["model"]["attention"] == "sdpa"


def test_noise_without_type_switch():
    n = nested({"multires_noise_iterations": 6, "multires_noise_discount": 0.3, "noise_offset": None})
    assert n["training"] == {"multires_noise_iterations": 6, "multires_noise_discount": 0.3, "noise_offset_type": "multires"}
    assert nested({"noise_offset_type": "Original", "multires_noise_iterations": 8})["training"] == {
        "noise_offset_type": "original"
    }


@pytest.mark.parametrize(
    ("raw", "path", "value"),
    [
        ({"optimizer": "adamw8bit"}, ("optim", "optimizer"), "AdamW8bit"),
        ({"optimizer_type": "DAdaptation"}, ("optim", "optimizer"), "DAdaptAdam"),
        ({"mixed_precision": True}, ("optim", "mixed_precision"), "fp16"),
        ({"save_precision": "32"}, ("saving", "save_precision"), "float"),
        ({"save_every_n_epochs": "0"}, ("saving",), None),
        ({"resolution": "640"}, ("dataset", "resolution"), 640),
        ({"LoRA_type": "LyCORIS/LoHa", "learning_rate": 1e-4}, ("network", "type"), "loha"),
        ({"clip_skip": None}, ("model", "clip_skip"), 1),
        ({"block_dims": "2,4,4"}, ("network", "block_dims"), [2, 4, 4]),
        ({"down_lr_weight": "sine+.5"}, ("network", "down_lr_weight"), "sine+.5"),
    ],
)
def test_value_conversions(raw, path, value):
    out = nested(raw)
    for part in path:
        if part not in out:
            assert value is None
            return
        out = out[part]
    assert out == value


# ------------------------------------------------------------------------------------- refusals


def test_unknown_key_suggests_the_close_one():
    message = error_of({"net_dimm": 32, "learnig_rate": 1e-4})
    assert "net_dimm = 32: unknown key; did you mean net_dim" in message
    assert "learnig_rate = 0.0001: unknown key; did you mean learning_rate" in message and "test.json" in message


def test_unsupported_option_is_refused_only_when_on():
    assert 'masked_loss = true: turns on masked loss, which lora-wizard does not offer' in error_of({"masked_loss": True})
    assert "Weights & Biases logging" in error_of({"log_with": "wandb"})
    out = flat_to_nested({"log_with": "tensorboard", "masked_loss": False, "use_cp": True, "factor": 6}, "x")
    assert [n for n in out.notes if "off values" in n] == [
        "left out at their off values (options lora-wizard does not offer): log_with, masked_loss"
    ]
    assert set(out.dropped) == {"use_cp", "factor"}  # LoKr knobs, without a LoKr network: never passed on


def test_two_keys_for_one_field_must_agree():
    assert "both set network.dim" in error_of({"net_dim": 32, "network_dim": 16})
    assert nested({"net_dim": 32, "network_dim": 32})["network"]["dim"] == 32
    assert nested({"resume": None, "load_previous_save_state": "state"})["saving"]["resume"] == "state"


def test_an_empty_required_path_is_an_error_not_the_demo_model():
    message = error_of({"base_model": "", "img_folder": None})
    assert "base_model: is empty" in message and "img_folder: is empty" in message


def test_unreadable_values_are_config_errors():
    assert 'lr_warmup = "ten": cannot be read' in error_of({"lr_warmup": "ten"})
    assert "not a resolution" in error_of({"max_resolution": "512x512"})
    assert "neither the U-Net nor the text encoder" in error_of({"unet_only": True, "text_only": True})

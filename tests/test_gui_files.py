"""kohya_ss GUI files by the file: each fixture loads to the config the GUI's run meant, or is
refused naming the feature lora-wizard lacks.

The fixtures (tests/data/configs/kohya_gui_*.json) were written for these tests in the key and
value styles of the LoRA presets and test configs of bmaltais/kohya_ss (presets/lora/, test/config/,
2023 to 2026): every widget saved, "" and 0 for "off", numbers as strings, the accelerate launch
fields, LyCORIS knobs at their defaults, `additional_parameters` with sd-scripts options.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config.flat_import import flat_to_nested
from engine.config.io import read_config
from engine.config.schema import TrainConfig
from engine.config.sources import SourceFormat
from engine.errors import ConfigError

CONFIGS = Path(__file__).parent / "data" / "configs"


def load(name: str):
    return read_config(CONFIGS / name)


def gui(raw: dict) -> dict:
    return flat_to_nested(raw, "gui.json", SourceFormat.KOHYA_GUI).nested


def notes_of(loaded) -> str:
    return "\n".join(loaded.notes)


def test_a_2024_lokr_preset_loads_with_the_guis_meanings():
    loaded = load("kohya_gui_2024_lokr.json")
    cfg = loaded.config
    assert loaded.source_format == SourceFormat.KOHYA_GUI
    # LoKr with its factor; the LyCORIS knobs at their defaults are left out with a note
    assert (cfg.network.type, cfg.network.lokr_factor, cfg.network.conv_dim) == ("lokr", 8, 4)
    # learning_rate 0 and text_encoder_lr 0 with a U-Net rate: the GUI trains the U-Net only, at its rate
    assert (cfg.network.train_on, cfg.optim.unet_lr, cfg.optim.learning_rate) == ("unet_only", 1.0, 1.0)
    # quoted optimizer arguments lose their quotes, as the shell removed them
    assert cfg.optim.optimizer_args == {"decouple": "True", "weight_decay": "0.2", "betas": "0.95,0.98", "use_bias_correction": "True"}
    # additional_parameters override the fields of the same name
    assert cfg.optim.max_grad_norm == 0.0 and cfg.dataset.min_bucket_reso == 128 and cfg.logging.log_prefix == "lokr-"
    # the sample prompts box holds the prompts themselves
    assert cfg.sampling.sample_prompts == ["a lokr test, ink style --w 512 --h 512 --s 20", "second prompt, watercolor --n blurry"]
    # bucket steps of 1 are sd-scripts' own value for an SD1 model
    assert cfg.dataset.bucket_reso_steps == 1 and cfg.dataset.bucket_no_upscale
    # max_train_epochs overrides max_train_steps, as in sd-scripts
    assert (cfg.training.epochs, cfg.training.max_steps) == (6, None)
    assert cfg.training.ip_noise_gamma_random_strength and cfg.model.attention == "sdpa"
    # keep-last-N states without save_state do nothing in sd-scripts
    assert cfg.saving.save_last_n_steps_state is None
    text = notes_of(loaded)
    assert "left out at their off values (options lora-wizard does not offer): LyCORIS_preset, async_upload" in text
    assert "fp8_base" in text and "metadata_title" in text and "masked_loss" in text
    assert "num_cpu_threads_per_process=2" in text and "num_processes" in text and "multi_gpu" in text
    assert "max_train_steps = 1200 is overridden by max_train_epochs = 6" in text
    assert text.count("LyCORIS_preset") == 1  # each off key once


def test_a_2023_sdxl_adafactor_preset():
    loaded = load("kohya_gui_2023_sdxl_adafactor.json")
    cfg = loaded.config
    assert cfg.model.family == "sdxl" and cfg.model.attention == "xformers"
    # Adafactor with no arguments: sd-scripts' relative step and its own schedule
    assert cfg.optim.optimizer == "AdaFactor" and cfg.optim.lr_scheduler == "adafactor"
    assert cfg.optim.optimizer_args == {"relative_step": "True", "scale_parameter": "True"}
    # sdxl_cache_text_encoder_outputs with the U-Net only (text_encoder_lr 0): the engine caches by itself
    assert cfg.network.train_on == "unet_only"
    assert "sdxl_cache_text_encoder_outputs" in notes_of(loaded)
    # no bucket bounds in a file saved before the GUI had them: sd-scripts' 256 and 1024
    assert (cfg.dataset.min_bucket_reso, cfg.dataset.max_bucket_reso) == (256, 1024)
    # sampling is off: the prompt text is not used
    assert cfg.sampling.sample_prompts is None
    # use_cp with a Standard LoRA and the GUI's dead timestep sliders never reached sd-scripts
    assert "use_cp" in notes_of(loaded) and "sdxl_min_timestep" in notes_of(loaded)
    assert cfg.dataset.caption_extension == ".none-use-foldername" and cfg.training.seed == 23
    assert "seed is not set" in notes_of(loaded)


def test_a_gui_file_with_a_dataset_toml():
    cfg = load("kohya_gui_dataset_config.json").config
    assert cfg.dataset.img_folder is None and [s.class_tokens for s in cfg.dataset.subsets] == ["hoge girl", "fuga boy", "human"]
    assert cfg.network.type == "locon" and cfg.network.conv_dim == 8
    assert cfg.optim.lr_warmup_steps == 25 and cfg.optim.lr_warmup_ratio == 0.0  # the step count overrides lr_warmup
    # the GUI passes max_train_steps, and sd-scripts ignores its `epoch`: the steps train
    assert cfg.training.max_steps == 300


def test_refused_only_for_features_it_lacks_and_a_typo_shows_its_value():
    with pytest.raises(ConfigError) as info:
        load("kohya_gui_refused.json")
    message = str(info.value)
    assert 'LoRA_type = "LyCORIS/DyLoRA"' in message or "unit = 4: turns on DyLoRA networks" in message
    assert "masked_loss = true: turns on masked loss, which lora-wizard does not offer" in message
    assert "tran_batch_size = 4: unknown key; did you mean train_batch_size" in message


@pytest.mark.parametrize(
    ("rates", "train_on", "learning_rate", "unet_lr", "text_encoder_lr"),
    [
        # (learning_rate, unet_lr, text_encoder_lr) as the GUI saves them
        ((1e-4, 0, 0), "both", 1e-4, None, None),
        ((1e-4, 2e-4, 0), "unet_only", 1e-4, 2e-4, None),
        ((1e-4, 0, 5e-5), "text_only", 1e-4, None, 5e-5),
        ((0, 2e-4, 5e-5), "both", 2e-4, 2e-4, 5e-5),
        ((0, 0, 5e-5), "text_only", 5e-5, None, 5e-5),
        (("", "", "0.0001"), "text_only", 1e-4, None, 1e-4),
    ],
)
def test_the_guis_zero_learning_rates(rates, train_on, learning_rate, unet_lr, text_encoder_lr):
    base, unet, text = rates
    n = gui({"learning_rate": base, "unet_lr": unet, "text_encoder_lr": text, "LoRA_type": "Standard"})
    assert n.get("network", {}).get("train_on", "both") == train_on
    assert n["optim"]["learning_rate"] == learning_rate
    assert n["optim"].get("unet_lr") == unet_lr and n["optim"].get("text_encoder_lr") == text_encoder_lr


def test_all_rates_zero_is_refused_as_the_gui_does():
    with pytest.raises(ConfigError, match="the file gives no learning rate"):
        gui({"learning_rate": 0, "unet_lr": 0, "text_encoder_lr": 0})


def test_sd_scripts_zero_rates_leave_the_part_out():
    lets = flat_to_nested({"learning_rate": 1e-4, "unet_lr": 0}, "x", SourceFormat.LETS_JSON).nested
    assert lets["network"]["train_on"] == "text_only" and "unet_lr" not in lets["optim"]
    with pytest.raises(ConfigError, match="neither the U-Net nor the text encoder"):
        flat_to_nested({"learning_rate": 0}, "x", SourceFormat.SD_SCRIPTS_TOML)


def test_gui_warmup_with_the_constant_schedule_is_dropped_as_the_gui_did():
    n = gui({"learning_rate": 1e-4, "lr_scheduler": "constant", "lr_warmup": 10})
    assert n["optim"]["lr_warmup_ratio"] == 0.0


def test_gui_keys_that_turn_a_lacking_feature_on_name_it():
    with pytest.raises(ConfigError) as info:
        gui({"learning_rate": 1e-4, "fp8_base": True, "LyCORIS_preset": "attn-mlp", "LoRA_type": "LyCORIS/LoHa", "flux1_checkbox": True})
    message = str(info.value)
    assert "fp8_base = true: turns on fp8 base weights" in message
    assert 'LyCORIS_preset = "attn-mlp": turns on LyCORIS module presets' in message
    assert "flux1_checkbox = true: turns on FLUX.1 models" in message


def test_switched_off_families_and_types_drop_their_fields():
    # FLUX paths without the FLUX checkbox, LoKr knobs without LoKr: the GUI never passed them on
    out = flat_to_nested({"learning_rate": 1e-4, "LoRA_type": "Standard", "flux1_checkbox": False, "t5xxl": "/x/t5.safetensors",
                          "factor": 6, "decompose_both": True}, "x", SourceFormat.KOHYA_GUI)
    assert {"t5xxl", "factor", "decompose_both"} <= set(out.dropped)
    assert "lokr_factor" not in out.nested["network"]


def test_additional_parameters_errors_and_a_comment_key():
    with pytest.raises(ConfigError, match="--max_grad_norm needs a value"):
        gui({"learning_rate": 1e-4, "additional_parameters": "--max_grad_norm"})
    n = gui({"=== Saving ===": None, "learning_rate": 1e-4, "additional_parameters": "--optimizer_args \"weight_decay=0.01\" \"d_coef=2\""})
    assert n["optim"]["optimizer_args"] == {"weight_decay": "0.01", "d_coef": "2"}


def test_every_fixture_is_written_in_the_guis_own_styles():
    # the fixtures keep the GUI's spellings (a guard against "fixing" them into clean values)
    lokr = json.loads((CONFIGS / "kohya_gui_2024_lokr.json").read_text(encoding="utf-8"))
    assert lokr["LyCORIS_preset"] == "full" and lokr["metadata_title"] == "" and lokr["num_processes"] == 1
    old = json.loads((CONFIGS / "kohya_gui_2023_sdxl_adafactor.json").read_text(encoding="utf-8"))
    assert old["clip_skip"] == "1" and old["lr_scheduler_num_cycles"] == "" and "max_bucket_reso" not in old


def test_an_imported_gui_preset_trains(tmp_path):
    """The 2024 LoKr preset with its paths replaced (the built-in model and sample images) trains,
    and its LoRA says what it is: LyCORIS' LoKr with the preset's factor."""
    pytest.importorskip("lycoris")
    import torch

    from engine.events import SilentReporter
    from engine.network.lora_file import load_lora_file
    from engine.queue.preflight import preflight
    from engine.queue.runner import run_one

    raw = json.loads((CONFIGS / "kohya_gui_2024_lokr.json").read_text(encoding="utf-8"))
    raw.update(pretrained_model_name_or_path="builtin:demo", train_data_dir="builtin:sample", output_dir=str(tmp_path / "out"),
               logging_dir="", max_resolution="128,128", optimizer="AdamW", optimizer_args="", mixed_precision="no",
               max_train_epochs="", max_train_steps=2)
    path = tmp_path / "preset.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    cfg = read_config(path).config
    assert cfg.training.max_steps == 2 and cfg.network.lokr_factor == 8 and isinstance(cfg.sampling.sample_prompts, list)
    data = cfg.model_dump(mode="json")
    data["sampling"].update(sample_every_n_epochs=None, sample_prompts=None)  # no sample images: seconds on a CPU
    cfg = TrainConfig.model_validate(data)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (planned,) = preflight([("preset", cfg)])
        result = run_one(planned, SilentReporter())
    finally:
        torch.set_num_threads(before)
    assert result.status == "done" and result.steps == 2
    _, metadata = load_lora_file(result.run_dir / "lokr_test.safetensors")
    assert json.loads(metadata["ss_network_args"])["factor"] == "8" and metadata["ss_network_module"] == "lycoris.kohya"
    assert metadata["ss_ip_noise_gamma_random_strength"] == "True"

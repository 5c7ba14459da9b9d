"""The wizard's advanced settings: asked in groups after "advanced? yes", their defaults shown,
their answers in the config (driven as tests/test_wizard_flow.py drives the wizard)."""

from __future__ import annotations

import re

import pytest

from engine.config.io import load_config, save_config
from engine.config.schema import ModelFamily, TrainConfig
from prompts import load_prompts
from tests.support.wizard_expect import (
    ALL_DEFAULTS_ORDER,
    wizard_defaults,
    write_safetensors,
)
from tests.support.wizard_script import (
    DOWN,
    ENTER,
    Script,
    run_wizard,
    typed,
)
from wizard import ask
from wizard.checks import AnswerError
from wizard.questions import (
    QUESTIONS,
    Draft,
    block_values,
    question_list,
)

pytestmark = pytest.mark.usefixtures("no_hang")


# ---- advanced settings ----------------------------------------------------------------------------

# The advanced questions as the user meets them pressing Enter everywhere (the gates stay no), in
# their groups. Written out so that a change of order is a visible test change.
ADVANCED_DEFAULTS_ORDER = [
    "ask.block_lr",
    "ask.block_dims",
    "network.dropout",
    "network.rank_dropout",
    "network.module_dropout",
    "optim.scale_weight_norms",
    "training.stop_text_encoder_training",
    "training.min_timestep",
    "training.max_timestep",
    "training.loss_type",
    "training.debiased_estimation_loss",
    "training.v_pred_like_loss",
    "training.zero_terminal_snr",
    "training.ip_noise_gamma",
    "training.noise_offset_type",
    "dataset.weighted_captions",
    "saving.save_every_n_steps",
    "saving.save_model_as",
    "saving.save_precision",
    "saving.save_state",
    "saving.no_metadata",
    "logging.tensorboard",
    "logging.log_dir",
    "optim.gradient_checkpointing",
    "optim.gradient_accumulation_steps",
    "optim.full_fp16",
    "dataset.cache_latents_to_disk",
    "dataset.vae_batch_size",
    "dataset.max_data_loader_n_workers",
    "dataset.persistent_data_loader_workers",
    "model.attention",
]


def offered_advanced() -> list[str]:
    """full fp16/bf16 are asked only with their mixed precision, which follows the machine."""
    precision = wizard_defaults().optim.mixed_precision.value
    halves = {"optim.full_fp16": "fp16", "optim.full_bf16": "bf16"}
    return [path for path in ADVANCED_DEFAULTS_ORDER if halves.get(path, precision) == precision]


def test_advanced_yes_asks_the_groups_in_order_and_shows_defaults(saved, monkeypatch):
    run = run_wizard(Script({"ask.advanced": "y"}), saved, monkeypatch)

    assert run.asked == [*ALL_DEFAULTS_ORDER, *offered_advanced()]
    assert run.outcome.configs == [wizard_defaults()]  # Enter everywhere keeps every default
    assert "Advanced: dropouts and regularisation" in run.output
    assert "Advanced: performance" in run.output
    assert "Default: -" in run.output and "Default: sdpa" in run.output


def test_advanced_answers_reach_the_config(saved, monkeypatch):
    script = Script({
        "ask.advanced": "y",
        "network.rank_dropout": typed("0.25"),
        "training.min_timestep": typed("100"),
        "training.loss_type": DOWN + ENTER,
        "training.huber_c": typed("0.2"),
        "saving.save_every_n_steps": typed("50"),
        "optim.gradient_checkpointing": "y",
    })
    run = run_wizard(script, saved, monkeypatch)
    cfg = run.outcome.configs[0]

    assert cfg.network.rank_dropout == 0.25 and cfg.training.min_timestep == 100
    assert cfg.training.loss_type == "huber" and cfg.training.huber_c == 0.2
    assert "training.huber_schedule" in run.asked  # asked only for a huber-type loss
    assert cfg.saving.save_every_n_steps == 50 and cfg.optim.gradient_checkpointing
    assert load_config(run.outcome.saved[0]) == cfg


def test_advanced_no_keeps_a_loaded_configs_advanced_values(saved, monkeypatch, tmp_path):
    original = TrainConfig.model_validate(
        {"network": {"rank_dropout": 0.1}, "training": {"min_timestep": 200, "zero_terminal_snr": True}}
    )
    path = save_config(original, tmp_path)
    run = run_wizard(Script({"ask.load_json": "y", "ask.load_path": typed(str(path))}), saved, monkeypatch)
    cfg = run.outcome.configs[0]

    assert "network.rank_dropout" not in run.asked  # "advanced settings?" was left at no
    assert (cfg.network.rank_dropout, cfg.training.min_timestep, cfg.training.zero_terminal_snr) == (0.1, 200, True)


def test_block_weights_take_a_preset_and_show_the_25_values(saved, monkeypatch):
    script = Script({
        "ask.advanced": "y",
        "ask.block_lr": "y",
        "network.down_lr_weight": typed("cosine+0.2"),
        "network.mid_lr_weight": typed("0.5"),
        "network.up_lr_weight": typed("1, 1, 0"),
    })
    run = run_wizard(script, saved, monkeypatch)
    cfg = run.outcome.configs[0]

    assert cfg.network.down_lr_weight == "cosine+0.2"
    assert cfg.network.mid_lr_weight == 0.5 and cfg.network.up_lr_weight == [1.0, 1.0, 0.0]
    assert "Per-block values, sd1 (25 blocks)" in run.output
    table = run.output[run.output.rindex("Per-block values"):]
    assert all(label in table for label in ("IN00", "IN11", "M00", "OUT00", "OUT11"))
    rows = dict(re.findall(r"(IN00|IN01|M00|OUT02)\s*│\s*([\d.]+)", table))
    assert rows == {"IN00": "1.2", "IN01": "1.19", "M00": "0.5", "OUT02": "0"}  # cos + 0.2; mid; up list
    assert "dimmed: weight 0" in table
    i = run.asked.index("ask.block_lr")
    assert run.asked[i + 1 : i + 5] == [
        "network.down_lr_weight", "network.mid_lr_weight", "network.up_lr_weight", "network.block_lr_zero_threshold",
    ]


def test_a_block_list_of_the_wrong_length_names_the_count(saved, monkeypatch, tmp_path):
    model = write_safetensors(tmp_path / "xl.safetensors", ["conditioner.embedders.1.model.ln_final.weight"])
    dims = ", ".join(["8"] * 23)
    script = Script({
        "model.base_model": typed(str(model)),
        "ask.advanced": "y",
        "ask.block_dims": "y",
        "network.block_dims": typed(", ".join(["8"] * 25)) + typed(dims),
    })
    run = run_wizard(script, saved, monkeypatch)
    cfg = run.outcome.configs[0]

    assert cfg.model.family == ModelFamily.SDXL
    assert cfg.network.block_dims == [8] * 23
    assert "Per-block values, sdxl (23 blocks)" in run.output
    assert run.asked.count("network.block_dims") == 1  # refused inline, then fixed


def test_block_answers_are_checked_against_the_family():
    draft = Draft(TrainConfig(), question_list(loaded=False))
    draft.answers["model.family"] = ModelFamily.SDXL
    dims = next(q for q in QUESTIONS if q.path == "network.block_dims")
    down = next(q for q in QUESTIONS if q.path == "network.down_lr_weight")
    with pytest.raises(AnswerError, match="has 25 values but a sdxl U-Net has 23 blocks"):
        ask.parse_answer(dims, ", ".join(["4"] * 25), draft)
    assert ask.parse_answer(dims, "[" + ", ".join(["4"] * 23) + "]", draft) == [4] * 23
    with pytest.raises(AnswerError, match="down_lr_weight has 12 values but a sdxl U-Net has 9"):
        ask.parse_answer(down, ", ".join(["1"] * 12), draft)
    with pytest.raises(AnswerError, match="not a preset"):
        ask.parse_answer(down, "cosinus", draft)
    with pytest.raises(AnswerError) as info:
        ask.parse_answer(down, "1,,1", draft)
    assert "missing between two commas" in ask.error_text(info.value, load_prompts("en"))
    assert ask.parse_answer(down, "linear+0.1", draft) == "linear+0.1"
    assert ask.default_text([1.0, 0.5, 0.0]) == "1, 0.5, 0"
    draft.answers.update({"ask.advanced": True, "ask.block_lr": True, "network.down_lr_weight": "zeros"})
    values = block_values(draft)
    assert list(values) == ["lr"] and len(values["lr"]) == 23 and values["lr"][1:10] == [0.0] * 9


def test_switching_advanced_off_keeps_the_base_values():
    base = TrainConfig.model_validate({"network": {"rank_dropout": 0.1}})
    draft = Draft(base, question_list(loaded=True))
    draft.answers.update({"ask.advanced": True, "network.rank_dropout": 0.3})
    assert draft.to_data()["network"]["rank_dropout"] == 0.3
    draft.answers["ask.advanced"] = False
    assert draft.to_data()["network"]["rank_dropout"] == 0.1  # not reset to the default
    assert not any(q.advanced for q in draft.active())


def test_review_shows_processes_and_effective_batch(monkeypatch):
    import io

    from rich.console import Console

    from prompts import load_prompts
    from wizard.review import review_table

    monkeypatch.setenv("WORLD_SIZE", "4")  # as `accelerate launch --num_processes 4` sets it
    cfg = TrainConfig.model_validate({"training": {"batch_size": 2}, "optim": {"gradient_accumulation_steps": 3}})
    out = io.StringIO()
    Console(file=out, width=200).print(review_table(cfg, load_prompts()["review"]))
    assert "24 (2 x 3 x 4)" in out.getvalue()

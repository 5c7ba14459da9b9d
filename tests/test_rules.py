"""The rulebook: what used to pass `--dry-run` and fail only after the model loaded is refused before
any run starts (exit 2, no traceback, the value and the fix named); what can train does, with a note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.config.machine import OPTIONAL_PACKAGES, Facts, Machine
from engine.config.rules import check
from engine.config.schema import Attention, MixedPrecision, ModelFamily, TrainConfig
from engine.events import Outcome
from engine.problems import Level
from tests.support.cli import config_file, run_cli, write_dataset

CPU = Machine(cuda=False, packages=frozenset(OPTIONAL_PACKAGES))
GPU = Machine(cuda=True, bf16=True, packages=frozenset(OPTIONAL_PACKAGES))


def lines(cfg: TrainConfig, facts: Facts | None = None, level: Level = Level.ERROR) -> list[str]:
    return [str(p) for p in check(cfg, facts) if p.level == level]


def dry_run(capsys, path: Path) -> tuple[int, str]:
    code, out = run_cli(capsys, "replay", str(path), "--dry-run")
    assert "Traceback" not in out
    return code, out


def refused(capsys, path: Path, *expected: str) -> str:
    code, out = dry_run(capsys, path)
    assert code == Outcome.BAD_INPUT, out
    flat = " ".join(out.split())  # the console may wrap long lines
    for text in expected:
        assert text in flat, out
    return flat


# ---- rules a config file breaks on its own: refused when it loads --------------------------------


def test_polynomial_lr_end_at_or_above_the_learning_rate(tmp_path, capsys):
    path = config_file(tmp_path, optim={"lr_scheduler": "polynomial", "learning_rate": 1e-4, "lr_scheduler_args": {"lr_end": 1e-4}})
    refused(capsys, path, "optim.lr_scheduler_args.lr_end = 0.0001", "must be smaller", "set lr_end below 0.0001")
    # the schedule's own end LR (1e-7) above a tiny learning rate is the same mistake
    cfg = TrainConfig.model_validate({"optim": {"lr_scheduler": "polynomial", "learning_rate": 1e-8}})
    assert any("lr_end = 1e-07" in line for line in lines(cfg))


def test_loha_with_neuron_dropout(tmp_path, capsys):
    path = config_file(tmp_path, network={"type": "loha", "dropout": 0.1})
    refused(capsys, path, "network.dropout = 0.1: is not available for network.type=loha", "network.rank_dropout")


def test_every_problem_of_a_file_at_once(tmp_path, capsys):
    """Unknown keys, bad values and broken rules of one file in one report, not four rounds."""
    data = json.loads(config_file(tmp_path).read_text())
    data["network"].update({"dim": 0, "dimm": 8, "type": "loha", "dropout": 0.1})
    data["optim"].update({"lr_scheduler": "constant", "lr_warmup_ratio": 0.1})
    path = tmp_path / "many.json"
    path.write_text(json.dumps(data))
    out = refused(capsys, path, "4 problems", "network.dim = 0", "network.dimm = 8: unknown key; did you mean network.dim?")
    assert "network.dropout = 0.1" in out and 'optim.lr_scheduler = "constant": has no warmup' in out


def test_an_imported_preset_without_a_base_model_is_not_the_demo(tmp_path, capsys):
    data = write_dataset(tmp_path / "data")
    preset = tmp_path / "gui_preset.json"  # a kohya_ss GUI preset: no model, images named
    preset.write_text(json.dumps({"train_data_dir": str(data), "network_dim": 8, "sdxl": True}))
    refused(capsys, preset, "model.base_model: the file does not name it", "builtin:demo")
    preset.write_text(json.dumps({"pretrained_model_name_or_path": "builtin:demo", "network_dim": 8}))
    refused(capsys, preset, "dataset.img_folder: the file does not name it")


# ---- rules that need the model, the machine or the files: refused by preflight ----------------------


def write_checkpoint(path: Path, tensors: dict[str, tuple[int, ...]]) -> Path:
    save_file({name: torch.zeros(shape, dtype=torch.float16) for name, shape in tensors.items()}, str(path))
    return path


SD1_MARKER = {"cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,)}
SDXL_MARKER = {"conditioner.embedders.1.model.ln_final.weight": (1280,)}


def test_block_dims_of_the_wrong_length_for_the_models_family(tmp_path, capsys):
    # the family comes from the file's header: an SDXL U-Net has 23 blocks, not SD1's 25
    model = write_checkpoint(tmp_path / "xl.safetensors", SDXL_MARKER)
    path = config_file(tmp_path, model={"base_model": str(model)}, network={"block_dims": [4] * 25})
    refused(capsys, path, "network.block_dims", "has 25 values but a sdxl U-Net has 23 blocks", "give exactly 23")


def test_sdxl_needs_bucket_steps_of_32(tmp_path):
    cfg = TrainConfig.model_validate({"model": {"family": "sdxl"}, "dataset": {"bucket_reso_steps": 16, "resolution": 1024, "max_bucket_reso": 1024}})
    assert any("dataset.bucket_reso_steps = 16: SDXL needs a multiple of 32" in line for line in lines(cfg))
    # the same steps on an SD1 model are fine
    cfg = TrainConfig.model_validate({"dataset": {"bucket_reso_steps": 16}})
    assert not lines(cfg, Facts(CPU, ModelFamily.SD1))


def test_sdxl_bucket_steps_from_the_header_at_the_command_line(tmp_path, capsys):
    model = write_checkpoint(tmp_path / "xl.safetensors", SDXL_MARKER)
    path = config_file(tmp_path, model={"base_model": str(model)}, dataset={"bucket_reso_steps": 16})
    refused(capsys, path, "dataset.bucket_reso_steps = 16: SDXL needs a multiple of 32", "use 32 or 64")


def test_full_half_precision_without_cuda():
    cfg = TrainConfig.model_validate({"optim": {"mixed_precision": "bf16", "full_bf16": True}})
    assert lines(cfg, Facts(CPU)) == ["optim.full_bf16 = true: keeps the LoRA in half precision, which needs a CUDA GPU; turn it off for a CPU run"]
    assert lines(cfg, Facts(GPU)) == []
    no_bf16 = Machine(cuda=True, bf16=False, packages=GPU.packages)
    assert any("cannot compute in bfloat16" in line for line in lines(cfg, Facts(no_bf16)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine's refusal without CUDA")
def test_full_fp16_on_this_cpu_is_exit_2(tmp_path, capsys):
    path = config_file(tmp_path, optim={"mixed_precision": "fp16", "full_fp16": True})
    refused(capsys, path, "optim.full_fp16 = true: keeps the LoRA in half precision, which needs a CUDA GPU")


def test_xformers_without_cuda_or_package_is_sdpa_with_a_note():
    cfg = TrainConfig.model_validate({"model": {"attention": "xformers"}, "optim": {"mixed_precision": "no"}})
    (note,) = lines(cfg, Facts(CPU), Level.WARNING)
    assert "there is no CUDA GPU here, so the run uses torch's SDPA attention" in note
    without = Machine(cuda=True, bf16=True, packages=GPU.packages - {"xformers"})
    (note,) = lines(cfg, Facts(without), Level.WARNING)
    assert "the xformers package is not installed" in note and "pip install -e '.[xformers]'" in note
    assert lines(cfg, Facts(GPU), Level.WARNING) == [] and lines(cfg, Facts(CPU)) == []


def test_xformers_config_trains_on_the_cpu_with_a_notice(tmp_path, capsys):
    path = config_file(
        tmp_path,
        model={"attention": Attention.XFORMERS.value},
        dataset={"resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 128},
        training={"max_steps": 1},
        optim={"mixed_precision": MixedPrecision.NO.value},
    )
    code, out = run_cli(capsys, "replay", str(path), "--no-report")
    assert code == Outcome.OK, out
    assert "torch's SDPA attention" in " ".join(out.split())
    assert (tmp_path / "out" / "run1" / "last.safetensors").is_file()


def test_a_missing_optimizer_package_names_the_install_command():
    cfg = TrainConfig.model_validate({"optim": {"optimizer": "DAdaptAdam"}})
    bare = Machine(cuda=False, packages=frozenset())
    assert any("needs the 'dadaptation' package" in line and "pip install dadaptation" in line for line in lines(cfg, Facts(bare)))


def test_a_json_file_as_the_base_model(tmp_path, capsys):
    other = config_file(tmp_path, name="other.json")
    path = config_file(tmp_path, model={"base_model": str(other)})
    refused(capsys, path, "model.base_model", "is not a model file", "a .json config is not a model")


def test_a_checkpoint_of_another_architecture(tmp_path, capsys):
    # an SD1 file whose cross-attention is SD2's width: the header's shapes give it away
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    model = write_checkpoint(tmp_path / "odd.safetensors", {**SD1_MARKER, key: (320, 1024)})
    path = config_file(tmp_path, model={"base_model": str(model)})
    refused(capsys, path, "do not fit the SD1 architecture", f"{key} is [320, 1024] where an SD1 model has [320, 768]")


def test_an_inpainting_checkpoint_is_named_as_such(tmp_path, capsys):
    model = write_checkpoint(tmp_path / "inpaint.safetensors", {**SD1_MARKER, "model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)})
    path = config_file(tmp_path, model={"base_model": str(model)})
    refused(capsys, path, "takes 9 input channels", "inpainting", "lacks")


class CallsCode:
    """What a malicious pickle holds: unpickling it would run a shell command."""

    def __reduce__(self):
        import os

        return (os.system, ("echo this would run",))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_ckpt_that_carries_code_is_named_before_training(tmp_path, capsys, zip_format):
    path = tmp_path / "model.ckpt"
    weights = {"cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(4)}
    torch.save({"state_dict": weights, "callbacks": CallsCode()}, path, _use_new_zipfile_serialization=zip_format)
    cfg = config_file(tmp_path, model={"base_model": str(path)})
    out = refused(capsys, cfg, "holds Python code besides weights", "system", "The file is not damaged", ".safetensors")
    assert "download it again" not in out
    # the same weights without the code are an SD1 checkpoint, known before loading
    torch.save({"state_dict": weights}, path, _use_new_zipfile_serialization=zip_format)
    from engine.models.inspect import inspect_base_model

    assert inspect_base_model(TrainConfig.model_validate({"model": {"base_model": str(path)}})).family == ModelFamily.SD1


def test_an_output_folder_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "output"
    blocker.write_text("not a folder")
    path = config_file(tmp_path, saving={"output_folder": str(blocker)})
    refused(capsys, path, "saving.output_folder", "is a file, so the run folders cannot be made there")
    path = config_file(tmp_path, saving={"output_folder": str(blocker / "deeper")})
    refused(capsys, path, f"{blocker} is a file")


def test_paths_the_run_reads(tmp_path, capsys):
    path = config_file(tmp_path, model={"vae": str(tmp_path / "vae.safetensors")}, saving={"resume": str(tmp_path / "no-state")})
    refused(capsys, path, "model.vae", "does not exist", "saving.resume")


def test_queue_folder_dry_run_with_skip_invalid_is_exit_2(tmp_path, capsys):
    folder = tmp_path / "queue"
    folder.mkdir()
    config_file(folder, name="a-good.json", training={"max_steps": 1})
    config_file(folder, name="b-bad.json", network={"type": "loha", "dropout": 0.2})
    config_file(folder, name="c-bad.json", dataset={"img_folder": str(tmp_path / "missing")})
    code, out = run_cli(capsys, "queue", "--folder", str(folder), "--dry-run", "--skip-invalid")
    assert code == Outcome.BAD_INPUT, out
    assert "2 of 3 configs cannot train" in " ".join(out.split())
    assert sorted(p.name for p in folder.glob("*.json")) == ["a-good.json", "b-bad.json", "c-bad.json"]  # dry run


def test_family_warnings_are_not_errors():
    cfg = TrainConfig.model_validate({"model": {"clip_skip": 2}, "optim": {"mixed_precision": "no"}})
    (note,) = lines(cfg, Facts(CPU, ModelFamily.SD2), Level.WARNING)
    assert note.startswith("model.clip_skip = 2: is ignored for SD2")
    assert lines(cfg, Facts(CPU, ModelFamily.SD2)) == []


# ---- files the run reads at its start: read by preflight ---------------------------------------


def test_a_prompt_file_with_a_bad_line(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat --n dog\na dog --q 3\n", encoding="utf-8")
    path = config_file(tmp_path, sampling={"sample_prompts": str(prompts), "sample_every_n_epochs": 1})
    refused(capsys, path, "line 2", "unknown option --q")


def test_optimizer_arguments_the_optimizer_does_not_take(tmp_path, capsys):
    path = config_file(tmp_path, optim={"optimizer": "AdamW", "optimizer_args": {"weight_decay": 0.1, "decoupled": "True"}})
    refused(capsys, path, 'optim.optimizer_args.decoupled = true: AdamW takes no argument named', "weight_decay")
    path = config_file(tmp_path, optim={"optimizer": "AdamW", "optimizer_args": {"betas": "(0.9, oops)"}})
    refused(capsys, path, "optim.optimizer_args.betas")


def test_a_base_model_given_as_the_lora_to_start_from(tmp_path, capsys):
    model = write_checkpoint(tmp_path / "model.safetensors", SD1_MARKER)
    path = config_file(tmp_path, network={"network_weights": str(model)})
    refused(capsys, path, "network.network_weights", "is not a LoRA/LyCORIS file")


def test_a_lora_given_as_the_vae(tmp_path, capsys):
    lora = write_checkpoint(tmp_path / "style.safetensors", {"lora_unet_x.lora_down.weight": (4, 8)})
    path = config_file(tmp_path, model={"vae": str(lora)})
    refused(capsys, path, "model.vae", "is not a VAE")


def test_the_adafactor_schedule_and_adafactors_relative_step_go_together():
    def errors(optim):
        return [str(p) for p in check(TrainConfig.model_validate({"optim": optim})) if p.level == Level.ERROR]

    assert any("needs optim.optimizer=AdaFactor" in e for e in errors({"lr_scheduler": "adafactor"}))
    relative = {"optimizer": "AdaFactor", "optimizer_args": {"relative_step": True}}
    assert any("the cosine schedule would do nothing" in e for e in errors({**relative, "lr_scheduler": "cosine"}))
    assert errors({**relative, "lr_scheduler": "adafactor"}) == []
    assert any("has no warmup" in e for e in errors({**relative, "lr_scheduler": "adafactor", "lr_warmup_steps": 10}))


def test_both_epoch_limits_warn_which_one_trains():
    cfg = TrainConfig.model_validate({"training": {"max_train_epochs": 3, "max_steps": 40}})
    [warning] = lines(cfg, level=Level.WARNING)
    assert "training.max_train_epochs = 3: is overridden by training.max_steps (40)" in warning

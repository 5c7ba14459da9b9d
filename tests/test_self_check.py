"""Every saved LoRA is checked against its base model (engine/network/self_check.py): names the
web UIs map to a layer, shapes that fit that layer, an alpha per module, finite values. A file that
fails is an error of its run, never a silent file; every file a run of this suite saves passes the
check, because the check runs in the save path of every run."""

from __future__ import annotations

import pytest
import torch

from engine.config.schema import ModelFamily, NetworkConfig, TrainConfig
from engine.errors import TrainingError
from engine.events import SilentReporter
from engine.models.components import BaseComponents
from engine.models.tiny import build_tiny
from engine.network import names as naming
from engine.network.inject import create_network
from engine.network.lora_file import save_lora_file
from engine.network.self_check import (
    SavedFileCheck,
    SelfCheckError,
    base_weight_index,
    check_lora_file,
    check_lora_tensors,
)
from engine.queue.preflight import preflight
from engine.queue.runner import run_one
from tests.support.lycoris import HAVE_LYCORIS
from tests.support.meta_models import full_size_models

FAMILIES = (ModelFamily.SD1, ModelFamily.SD2, ModelFamily.SDXL)


def network_tensors(components, kind: str = "lora", **kw) -> dict[str, torch.Tensor]:
    cfg = NetworkConfig(type=kind, dim=4, alpha=2.0, conv_dim=4 if kind != "lora" else None, **kw)
    if kind in ("loha", "lokr"):
        from engine.network.lycoris_adapter import create_lycoris_network

        network = create_lycoris_network(components, cfg, train_unet=True, train_text_encoder=True)
    else:
        network = create_network(components, cfg, train_unet=True, train_text_encoder=True)
    return network.kohya_state_dict()


@pytest.fixture(scope="module")
def full_size():
    return full_size_models()


@pytest.fixture(scope="module")
def tiny():
    return {family: build_tiny(family) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.value)
@pytest.mark.parametrize("kind", ["lora", "locon", "loha", "lokr"])
def test_every_network_type_fits_its_tiny_model(tiny, family, kind):
    if kind in ("loha", "lokr") and not HAVE_LYCORIS:
        pytest.skip("lycoris-lora is not installed")
    tensors = network_tensors(tiny[family], kind)
    assert check_lora_tensors(tensors, base_weight_index(tiny[family])) == []


@pytest.mark.parametrize(
    "family, unet, encoders",
    [
        (ModelFamily.SD1, "sd15_unet", ["clip_l"]),
        (ModelFamily.SD2, "sd2_unet", ["openclip_h"]),
        (ModelFamily.SDXL, "sdxl_unet", ["clip_l", "openclip_g"]),
    ],
    ids=["sd15", "sd2", "sdxl"],
)
def test_full_size_names_and_shapes_fit(full_size, family, unet, encoders):
    """Real-size models on the meta device: every LoRA and LoCon module of sd-scripts' set maps
    to a weight of the model's LDM checkpoint, with fitting shapes (SDXL under SGM names, the
    OpenCLIP q/k/v as thirds of the fused in_proj)."""
    components = BaseComponents(family, full_size[unet], None, [full_size[e] for e in encoders], [], "meta")
    index = base_weight_index(components)
    for kind in ("lora", "locon"):
        tensors = network_tensors(components, kind)
        assert check_lora_tensors(tensors, index) == []
    if family == ModelFamily.SDXL:  # the SGM name, as sd-scripts writes it, points at that LDM key
        assert index["lora_unet_input_blocks_4_1_proj_in"].key == "model.diffusion_model.input_blocks.4.1.proj_in.weight"
        assert index["lora_te2_text_model_encoder_layers_0_self_attn_k_proj"].out_features == 1280
        assert "lora_unet_down_blocks_1_attentions_0_proj_in" not in index  # diffusers names are SD1/SD2's


def test_a_renamed_module_fails_naming_it(tiny, tmp_path):
    components = tiny[ModelFamily.SD1]
    tensors = network_tensors(components)
    good = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k"
    bad = good.replace("attn2", "attn3")
    renamed = {k.replace(good, bad): v for k, v in tensors.items()}
    path = save_lora_file(tmp_path / "renamed.safetensors", renamed, {}, dtype=torch.float16, fmt="safetensors")
    problems = check_lora_file(path, base_weight_index(components))
    assert problems == [f"{bad}: no layer of the base model has this name, so A1111/ComfyUI would skip this module"]
    with pytest.raises(SelfCheckError, match=rf"renamed.safetensors does not fit the base model builtin:tiny-sd1.*{bad}"):
        SavedFileCheck(components)(path)
    assert isinstance(SelfCheckError("x"), TrainingError)  # a failed run, not a crash


def test_shapes_alpha_and_values_are_checked(tiny):
    components = tiny[ModelFamily.SD1]
    index = base_weight_index(components)
    tensors = network_tensors(components, "locon")
    q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    broken = dict(tensors)
    broken[f"{q}.lora_up.weight"] = torch.zeros(16, 4)  # the layer has 32 outputs
    del broken[f"{conv}.alpha"]
    broken[f"{conv}.lora_down.weight"] = tensors[f"{conv}.lora_down.weight"].flatten(1)[:, :, None, None]  # 1x1, not 3x3
    broken["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"] = torch.full((4, 64, 1, 1), float("nan"))
    problems = check_lora_tensors(broken, index)
    assert problems == [
        f"{q}: its update is 16x32 but the layer cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight is 32x32 (32 out, 32 in)",
        f"{conv}: has no alpha (loaders would read alpha = rank, another strength than trained)",
        f"{conv}: lora_down has kernel (1, 1) but the layer model.diffusion_model.input_blocks.1.0.in_layers.2.weight has (3, 3)",
        "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight: holds NaN or Inf values",
    ]


def test_a_run_whose_file_does_not_fit_fails_with_the_file_named(tmp_path, monkeypatch):
    """A naming bug injected into the code that names the modules: the run trains, saves, and its
    result is a failure naming the saved file and the module (the check's names come from the
    model's checkpoint layout, not from that code)."""
    real = naming.kohya_name

    def buggy(prefix: str, path: str) -> str:
        return real(prefix, path.replace("proj_out", "proj_output"))

    monkeypatch.setattr(naming, "kohya_name", buggy)
    data = TrainConfig().model_dump(mode="json")
    data["saving"].update(output_folder=str(tmp_path / "out"), output_name="buggy")
    data["training"]["max_steps"] = 1
    data["optim"]["optimizer"] = "AdamW"
    (planned,) = preflight([("buggy", TrainConfig.model_validate(data))])
    reporter = SilentReporter()
    with pytest.raises(SelfCheckError) as failure:
        run_one(planned, reporter)
    message = str(failure.value)
    assert "buggy.safetensors does not fit the base model builtin:demo" in message
    assert "lora_unet_mid_block_attentions_0_proj_output: no layer of the base model has this name" in message
    assert [p.name for p in reporter.saved_files] == ["buggy.safetensors"]  # kept, and reported saved


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_are_found_in_every_save_precision(tiny, dtype, value):
    index = base_weight_index(tiny[ModelFamily.SD1])
    tensors = {k: v.to(dtype) for k, v in network_tensors(tiny[ModelFamily.SD1]).items()}
    assert check_lora_tensors(tensors, index) == []
    key = "lora_te_text_model_encoder_layers_1_mlp_fc1.lora_down.weight"
    tensors[key] = tensors[key].clone()
    tensors[key][2, 5] = value
    assert check_lora_tensors(tensors, index) == [f"{key}: holds NaN or Inf values"]

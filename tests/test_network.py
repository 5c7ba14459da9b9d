"""The LoRA/LoCon network: kohya names, module math, injection, files, and diffusers compatibility."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hashlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.config.schema import ModelFamily, NetworkConfig
from engine.errors import ConfigError, ModelError, OutputExistsError
from engine.models.tiny import build_tiny
from engine.network.inject import create_network, ranks_from_state_dict, read_dim_alpha
from engine.network.lora_file import load_lora_file, save_lora_file
from engine.network.modules import LoraModule
from engine.network.names import sgm_module_path, text_encoder_targets, unet_targets
from tests.support.meta_models import full_size_models

SD1, SD2, SDXL = ModelFamily.SD1, ModelFamily.SD2, ModelFamily.SDXL
ATTN_LEAVES = [
    f"{attn}_{leaf}" for attn in ("attn1", "attn2") for leaf in ("to_q", "to_k", "to_v", "to_out_0")
] + ["ff_net_0_proj", "ff_net_2"]
TE_LEAVES = ["self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "mlp_fc1", "mlp_fc2"]


@pytest.fixture(scope="module")
def tiny():
    """One tiny model per family, shared by the tests that only read it (never apply a network to these)."""
    return {family: build_tiny(family) for family in (SD1, SD2, SDXL)}


def lora_cfg(**kw) -> NetworkConfig:
    return NetworkConfig(dim=4, alpha=2.0, **kw)


def locon_cfg(**kw) -> NetworkConfig:
    return NetworkConfig(type="locon", dim=4, alpha=2.0, conv_dim=3, conv_alpha=1.5, **kw)


def randomize_up(network, seed: int = 0, std: float = 0.5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.loras:
            module.lora_up.weight.copy_(torch.randn(module.lora_up.weight.shape, generator=g) * std)


def names(targets) -> set[str]:
    return {t.name for t in targets}


def expected_transformer_names(blocks: dict[str, int]) -> set[str]:
    """kohya names of the Transformer2DModels at `blocks` {name prefix: transformer depth}."""
    out = set()
    for block, depth in blocks.items():
        out |= {f"lora_unet_{block}_proj_in", f"lora_unet_{block}_proj_out"}
        out |= {f"lora_unet_{block}_transformer_blocks_{k}_{leaf}" for k in range(depth) for leaf in ATTN_LEAVES}
    return out


def expected_te_names(prefix: str, layers: int) -> set[str]:
    return {f"{prefix}_text_model_encoder_layers_{i}_{leaf}" for i in range(layers) for leaf in TE_LEAVES}


# ----------------------------------------------------------------------------------- names: tiny


@pytest.mark.parametrize("family", [SD1, SD2])
def test_tiny_sd1_sd2_names_use_the_diffusers_path(family, tiny):
    c = tiny[family]
    unet = names(unet_targets(c.unet, family, locon=False))
    assert unet == expected_transformer_names(
        {"down_blocks_0_attentions_0": 1, "mid_block_attentions_0": 1}
        | {f"up_blocks_1_attentions_{j}": 1 for j in range(2)}
    )
    # transformers 5 CLIPTextModel has no .text_model level; the names must still carry text_model_
    assert "text_model" not in dict(c.text_encoders[0].named_children())
    assert names(text_encoder_targets(c.text_encoders[0], "lora_te")) == expected_te_names("lora_te", 2)


def test_tiny_sdxl_names_use_the_sgm_layout(tiny):
    c = tiny[SDXL]
    assert c.unet.config.layers_per_block == 1  # the index formulas must follow the config
    unet = names(unet_targets(c.unet, SDXL, locon=False))
    # L=1: down block 1 -> input_blocks 3, mid -> middle_block 1, up block 0 -> output_blocks 0, 1
    assert unet == expected_transformer_names(
        {"input_blocks_3_1": 2, "middle_block_1": 2, "output_blocks_0_1": 2, "output_blocks_1_1": 2}
    )
    te1, te2 = c.text_encoders
    assert names(text_encoder_targets(te1, "lora_te1")) == expected_te_names("lora_te1", 2)
    assert names(text_encoder_targets(te2, "lora_te2")) == expected_te_names("lora_te2", 2)


def test_tiny_locon_adds_resnet_and_sampler_layers(tiny):
    sd1 = names(unet_targets(tiny[SD1].unet, SD1, locon=True))
    assert {
        "lora_unet_down_blocks_0_resnets_0_conv1",
        "lora_unet_down_blocks_0_resnets_0_time_emb_proj",
        "lora_unet_down_blocks_1_resnets_0_conv_shortcut",
        "lora_unet_down_blocks_0_downsamplers_0_conv",
        "lora_unet_up_blocks_0_upsamplers_0_conv",
        "lora_unet_mid_block_resnets_1_conv2",
    } <= sd1
    sdxl = names(unet_targets(tiny[SDXL].unet, SDXL, locon=True))
    assert {
        "lora_unet_input_blocks_1_0_in_layers_2",
        "lora_unet_input_blocks_1_0_emb_layers_1",
        "lora_unet_input_blocks_2_0_op",
        "lora_unet_input_blocks_3_0_skip_connection",
        "lora_unet_middle_block_2_out_layers_3",
        "lora_unet_output_blocks_1_2_conv",  # up block 0 has attentions: upsampler in slot 2
        "lora_unet_output_blocks_3_0_in_layers_2",
    } <= sdxl
    assert not any("blocks_" in n and ("down_blocks" in n or "up_blocks" in n) for n in sdxl)


def test_sgm_module_path_formulas():
    real = dict(layers_per_block=2, up_block_has_attention=[True, True, False])
    cases = {
        "down_blocks.1.attentions.0.proj_in": "input_blocks.4.1.proj_in",
        "down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_out.0": (
            "input_blocks.8.1.transformer_blocks.9.attn2.to_out.0"
        ),
        "down_blocks.0.resnets.1.conv1": "input_blocks.2.0.in_layers.2",
        "down_blocks.2.resnets.0.conv_shortcut": "input_blocks.7.0.skip_connection",
        "down_blocks.0.downsamplers.0.conv": "input_blocks.3.0.op",
        "down_blocks.1.downsamplers.0.conv": "input_blocks.6.0.op",
        "mid_block.resnets.0.time_emb_proj": "middle_block.0.emb_layers.1",
        "mid_block.attentions.0.proj_out": "middle_block.1.proj_out",
        "mid_block.resnets.1.conv2": "middle_block.2.out_layers.3",
        "up_blocks.0.resnets.2.conv1": "output_blocks.2.0.in_layers.2",
        "up_blocks.1.attentions.2.proj_out": "output_blocks.5.1.proj_out",
        "up_blocks.0.upsamplers.0.conv": "output_blocks.2.2.conv",
        "up_blocks.1.upsamplers.0.conv": "output_blocks.5.2.conv",
        "up_blocks.2.resnets.0.conv_shortcut": "output_blocks.6.0.skip_connection",
    }
    for diffusers_path, sgm in cases.items():
        assert sgm_module_path(diffusers_path, **real) == sgm, diffusers_path
    # an up block without attention (SD1.5's first) puts its upsampler in slot 1
    assert sgm_module_path("up_blocks.0.upsamplers.0.conv", layers_per_block=2, up_block_has_attention=[False]) == (
        "output_blocks.2.1.conv"
    )
    with pytest.raises(ValueError, match="conv_in"):
        sgm_module_path("conv_in", **real)


# ------------------------------------------------------------------------- names: full-size, meta


@pytest.fixture(scope="module")
def full_size():
    return full_size_models()


def test_full_size_sd15_matches_sd_scripts(full_size):
    unet = names(unet_targets(full_size["sd15_unet"], SD1, locon=False))
    te = names(text_encoder_targets(full_size["clip_l"], "lora_te"))
    assert (len(unet), len(te), len(unet) + len(te)) == (192, 72, 264)
    blocks = {f"down_blocks_{i}_attentions_{j}": 1 for i in range(3) for j in range(2)}
    blocks |= {"mid_block_attentions_0": 1} | {f"up_blocks_{i}_attentions_{j}": 1 for i in (1, 2, 3) for j in range(3)}
    assert unet == expected_transformer_names(blocks)
    assert te == expected_te_names("lora_te", 12)
    for name in (
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
        "lora_unet_up_blocks_3_attentions_2_proj_out",
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj",
        "lora_te_text_model_encoder_layers_11_mlp_fc2",
    ):
        assert name in unet | te
    # LoCon: + 22 resnets x (conv1, conv2, time_emb_proj) + 14 conv_shortcut + 3 down + 3 upsamplers
    assert len(unet_targets(full_size["sd15_unet"], SD1, locon=True)) == 192 + 66 + 14 + 6


def test_full_size_sd2_counts(full_size):
    assert len(unet_targets(full_size["sd2_unet"], SD2, locon=False)) == 192
    assert len(text_encoder_targets(full_size["openclip_h"], "lora_te")) == 138


def test_full_size_sdxl_matches_sd_scripts(full_size):
    unet = names(unet_targets(full_size["sdxl_unet"], SDXL, locon=False))
    te1 = names(text_encoder_targets(full_size["clip_l"], "lora_te1"))
    te2 = names(text_encoder_targets(full_size["openclip_g"], "lora_te2"))
    assert (len(unet), len(te1), len(te2)) == (722, 72, 192)
    blocks = {"input_blocks_4_1": 2, "input_blocks_5_1": 2, "input_blocks_7_1": 10, "input_blocks_8_1": 10}
    blocks |= {"middle_block_1": 10} | {f"output_blocks_{i}_1": 10 if i < 3 else 2 for i in range(6)}
    assert unet == expected_transformer_names(blocks)
    assert te1 == expected_te_names("lora_te1", 12) and te2 == expected_te_names("lora_te2", 32)
    for name in (
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k",
        "lora_unet_output_blocks_5_1_proj_out",
        "lora_unet_middle_block_1_transformer_blocks_9_ff_net_2",
    ):
        assert name in unet
    assert "lora_te2_text_model_encoder_layers_0_mlp_fc1" in te2
    locon = names(unet_targets(full_size["sdxl_unet"], SDXL, locon=True))
    # + 17 resnets x 3 + 11 conv_shortcut + 2 downsamplers + 2 upsamplers
    assert len(locon) == 722 + 51 + 11 + 4
    assert {"lora_unet_input_blocks_3_0_op", "lora_unet_input_blocks_6_0_op", "lora_unet_output_blocks_2_2_conv",
            "lora_unet_output_blocks_5_2_conv", "lora_unet_output_blocks_8_0_skip_connection"} <= locon


# ---------------------------------------------------------------------------------- module math


def conv3x3() -> nn.Conv2d:
    torch.manual_seed(1)
    return nn.Conv2d(4, 6, 3, stride=2, padding=1)


def linear() -> nn.Linear:
    torch.manual_seed(1)
    return nn.Linear(8, 5)


def test_zero_init_leaves_the_output_unchanged():
    for layer, x in ((linear(), torch.randn(2, 3, 8)), (conv3x3(), torch.randn(2, 4, 8, 8))):
        before = layer(x)
        lora = LoraModule("m", layer, 4, 2.0)
        assert torch.count_nonzero(lora.lora_up.weight) == 0 and torch.count_nonzero(lora.lora_down.weight) > 0
        lora.apply()
        assert torch.equal(layer(x), before)


def test_linear_delta_is_up_down_times_scale():
    layer = linear()
    x = torch.randn(2, 3, 8)
    before = layer(x)
    lora = LoraModule("m", layer, 4, 2.0, multiplier=0.7)
    torch.nn.init.normal_(lora.lora_up.weight)
    lora.apply()
    expected = x @ lora.lora_down.weight.T @ lora.lora_up.weight.T * (2.0 / 4) * 0.7
    torch.testing.assert_close(layer(x) - before, expected, rtol=1e-5, atol=1e-5)


def test_conv3x3_locon_delta_is_up_down_times_scale():
    layer = conv3x3()
    x = torch.randn(2, 4, 9, 9)
    before = layer(x)
    lora = LoraModule("m", layer, 3, 1.5)
    assert lora.lora_down.kernel_size == (3, 3) and lora.lora_down.stride == (2, 2)
    assert lora.lora_up.kernel_size == (1, 1)
    torch.nn.init.normal_(lora.lora_up.weight)
    lora.apply()
    hidden = F.conv2d(x, lora.lora_down.weight, stride=2, padding=1)
    expected = torch.einsum("or,brhw->bohw", lora.lora_up.weight[:, :, 0, 0], hidden) * (1.5 / 3)
    torch.testing.assert_close(layer(x) - before, expected, rtol=1e-5, atol=1e-5)


def test_alpha_and_scale():
    assert LoraModule("m", linear(), 8, 4.0).scale == 0.5
    for alpha in (None, 0):
        module = LoraModule("m", linear(), 8, alpha)
        assert module.scale == 1.0 and float(module.alpha) == 8.0
    module = LoraModule("m", linear(), 8, 1.0)
    assert module.alpha.shape == () and float(module.alpha) == 1.0
    module.set_alpha(16)
    assert module.scale == 2.0 and float(module.alpha) == 16.0


def test_dropouts_only_act_in_training():
    layer = linear()
    x = torch.randn(4, 3, 8)
    lora = LoraModule("m", layer, 4, 4.0, dropout=0.5, rank_dropout=0.5, module_dropout=0.5)
    torch.nn.init.normal_(lora.lora_up.weight)
    lora.apply()
    lora.eval()
    clean = layer(x)
    assert torch.equal(layer(x), clean)
    lora.train()
    torch.manual_seed(0)
    outs = [layer(x) for _ in range(6)]
    assert any(not torch.allclose(o, clean) for o in outs)
    assert any(not torch.allclose(a, b) for a, b in zip(outs, outs[1:]))


def test_rank_dropout_masks_ranks_and_rescales():
    layer = linear()
    x = torch.randn(3, 5, 8)
    lora = LoraModule("m", layer, 4, 2.0, rank_dropout=0.25)
    torch.nn.init.normal_(lora.lora_up.weight)
    lora.apply()
    lora.train()
    torch.manual_seed(7)
    out = layer(x)
    torch.manual_seed(7)
    keep = (torch.rand(3, 4) > 0.25).float()
    hidden = (x @ lora.lora_down.weight.T) * keep[:, None, :]
    expected = lora._org_forward(x) + hidden @ lora.lora_up.weight.T * (2.0 / 4) / (1 - 0.25)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_module_dropout_drops_the_whole_branch():
    layer = linear()
    x = torch.randn(2, 8)
    base = layer(x)
    lora = LoraModule("m", layer, 4, 4.0, module_dropout=0.999999)
    torch.nn.init.normal_(lora.lora_up.weight)
    lora.apply()
    lora.train()
    torch.manual_seed(0)
    assert torch.equal(layer(x), base)


def test_forward_has_no_host_sync():
    """Meta tensors have no data: any .item() or tensor-valued `if` in forward would raise."""
    cases = (
        (nn.Linear(8, 5, device="meta"), (2, 3, 8)),
        (nn.Conv2d(4, 6, 3, padding=1, device="meta"), (2, 4, 8, 8)),
    )
    for layer, shape in cases:
        lora = LoraModule("m", layer, 4, 2.0, dropout=0.1, rank_dropout=0.1, module_dropout=0.1)
        lora.apply()
        lora.train()
        assert layer(torch.empty(shape, device="meta")).device.type == "meta"


def test_remove_restores_the_original_forward_exactly():
    layer = linear()
    x = torch.randn(2, 8)
    before = layer(x)
    lora = LoraModule("m", layer, 4, 2.0)
    torch.nn.init.normal_(lora.lora_up.weight)
    lora.apply()
    assert "forward" in layer.__dict__ and not layer.weight.requires_grad
    assert not torch.equal(layer(x), before)
    lora.remove()
    assert "forward" not in layer.__dict__
    assert layer.forward.__func__ is nn.Linear.forward
    assert layer.weight.requires_grad
    assert torch.equal(layer(x), before)
    # the wrapped layer is referenced, not registered: our state_dict is kohya's three tensors
    assert set(lora.state_dict()) == {"lora_down.weight", "lora_up.weight", "alpha"}


# -------------------------------------------------------------------------------------- network


def test_network_apply_keeps_the_base_model_intact():
    c = build_tiny(SD1)
    unet_keys, te_keys = list(c.unet.state_dict()), list(c.text_encoders[0].state_dict())
    network = create_network(c, lora_cfg(), train_unet=True, train_text_encoder=True)
    assert (len(network.text_encoder_loras), len(network.unet_loras)) == (12, 48)
    network.apply()
    assert list(c.unet.state_dict()) == unet_keys and list(c.text_encoders[0].state_dict()) == te_keys
    assert not any(m.org_module.weight.requires_grad for m in network.loras)  # wrapped layers frozen
    assert c.unet.time_embedding.linear_1.weight.requires_grad  # the rest is the caller's business
    sd = network.kohya_state_dict()
    assert len(sd) == 3 * 60
    assert sd["lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha"].item() == 2.0
    assert sd["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].shape == (4, 32, 1, 1)
    with pytest.raises(RuntimeError, match="already applied"):
        network.apply()
    network.remove()
    assert not network.applied


def test_network_output_change_and_multiplier():
    c = build_tiny(SD1)
    x, enc = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
    with torch.no_grad():
        base = c.unet(x, 10, enc).sample
        network = create_network(c, lora_cfg(), train_unet=True, train_text_encoder=False)
        network.apply()
        assert torch.equal(c.unet(x, 10, enc).sample, base)
        randomize_up(network)
        assert not torch.allclose(c.unet(x, 10, enc).sample, base)
        network.set_multiplier(0.0)
        torch.testing.assert_close(c.unet(x, 10, enc).sample, base)
        network.remove()
        assert torch.equal(c.unet(x, 10, enc).sample, base)


def test_param_groups(tiny):
    c = tiny[SDXL]
    network = create_network(c, lora_cfg(), train_unet=True, train_text_encoder=True)
    groups = network.param_groups(unet_lr=1e-4, text_encoder_lr=5e-5)
    assert [(g["name"], g["lr"]) for g in groups] == [("text_encoder", 5e-5), ("unet", 1e-4)]
    total = sum(len(g["params"]) for g in groups)
    assert total == len(list(network.parameters())) == 2 * len(network.loras)
    per_encoder = network.param_groups(unet_lr=1e-4, text_encoder_lr=[1e-5, 2e-5])
    assert [(g["name"], g["lr"], len(g["params"])) for g in per_encoder] == [
        ("text_encoder1", 1e-5, 24), ("text_encoder2", 2e-5, 24), ("unet", 1e-4, 2 * 88)
    ]
    assert [g["name"] for g in network.param_groups(unet_lr=1e-4, text_encoder_lr=0)] == ["unet"]
    unet_only = create_network(c, lora_cfg(), train_unet=True, train_text_encoder=False)
    assert [g["name"] for g in unet_only.param_groups(unet_lr=1e-4, text_encoder_lr=5e-5)] == ["unet"]
    torch.optim.AdamW(groups)  # valid optimizer input


def test_locon_ranks_and_rank_hook(tiny):
    c = tiny[SD1]
    network = create_network(c, NetworkConfig(type="locon", dim=4, alpha=2.0, conv_dim=3), train_unet=True,
                             train_text_encoder=False)
    by_name = dict(network.named_children())
    conv = by_name["lora_unet_down_blocks_0_resnets_0_conv1"]
    assert (conv.lora_dim, conv.scale) == (3, 1.0 / 3)  # conv_alpha unset -> 1.0, as sd-scripts
    assert by_name["lora_unet_down_blocks_0_resnets_0_time_emb_proj"].lora_dim == 4
    assert by_name["lora_unet_down_blocks_1_resnets_0_conv_shortcut"].lora_dim == 4

    def only_attn1(name, module):
        return (2, 1.0) if "attn1" in name else None

    hooked = create_network(c, lora_cfg(), train_unet=True, train_text_encoder=True, rank_for=only_attn1)
    assert len(hooked.unet_loras) == 4 * 4 and not hooked.text_encoder_loras
    assert all(m.lora_dim == 2 for m in hooked.loras)
    with pytest.raises(ConfigError, match="loha"):
        create_network(c, NetworkConfig(type="loha"), train_unet=True, train_text_encoder=True)


def test_load_weights_round_trip_and_alpha_from_file(tiny):
    c = tiny[SD1]
    source = create_network(c, locon_cfg(), train_unet=True, train_text_encoder=True)
    randomize_up(source)
    sd = source.kohya_state_dict()
    sd["lora_unet_mid_block_attentions_0_proj_in.alpha"] = torch.tensor(4.0)
    target = create_network(tiny[SD1], locon_cfg(), train_unet=True, train_text_encoder=True)
    target.load_weights(sd)
    for key, value in target.kohya_state_dict().items():
        assert torch.equal(value, sd[key]), key
    assert dict(target.named_children())["lora_unet_mid_block_attentions_0_proj_in"].scale == 1.0
    del sd["lora_unet_down_blocks_0_resnets_0_conv1.alpha"]  # an old file without alpha: alpha = rank
    target.load_weights(sd)
    assert dict(target.named_children())["lora_unet_down_blocks_0_resnets_0_conv1"].scale == 1.0


def test_load_weights_refuses_another_architecture(tiny):
    sd1_file = create_network(tiny[SD1], lora_cfg(), train_unet=True, train_text_encoder=True).kohya_state_dict()
    sdxl = create_network(tiny[SDXL], lora_cfg(), train_unet=True, train_text_encoder=True)
    with pytest.raises(ModelError, match="another model family/architecture") as err:
        sdxl.load_weights(sd1_file)
    assert "lora_te1_text_model" in str(err.value) and "lora_te_text_model" in str(err.value)
    sd2 = create_network(tiny[SD2], lora_cfg(), train_unet=True, train_text_encoder=True)
    with pytest.raises(ModelError, match="other shapes"):
        sd2.load_weights(sd1_file)  # same names, other widths
    unet_only = create_network(tiny[SD1], lora_cfg(), train_unet=True, train_text_encoder=False)
    with pytest.raises(ModelError, match="train_on=both"):
        unet_only.load_weights(sd1_file)
    other_rank = create_network(tiny[SD1], NetworkConfig(dim=8), train_unet=True, train_text_encoder=True)
    with pytest.raises(ModelError, match="dim_from_weights"):
        other_rank.load_weights(sd1_file)
    with pytest.raises(ModelError, match="not a plain kohya"):
        other_rank.load_weights({"lora_unet_x.hada_w1_a": torch.zeros(1)})


def test_read_dim_alpha_and_ranks_from_state_dict(tiny):
    c = tiny[SD1]
    lora = create_network(c, lora_cfg(), train_unet=True, train_text_encoder=True).kohya_state_dict()
    assert read_dim_alpha(lora) == (4, 2.0, None, None)
    locon = create_network(c, locon_cfg(), train_unet=True, train_text_encoder=True).kohya_state_dict()
    assert read_dim_alpha(locon) == (4, 2.0, 3, 1.5)

    def blockwise(name, module):
        return (8, 8.0) if name.startswith("lora_unet_up") else (4, 1.0)

    mixed = create_network(c, lora_cfg(), train_unet=True, train_text_encoder=True, rank_for=blockwise)
    mixed_sd = mixed.kohya_state_dict()
    with pytest.raises(ModelError, match="ranks_from_state_dict"):
        read_dim_alpha(mixed_sd)
    rebuilt = create_network(tiny[SD1], lora_cfg(), train_unet=True, train_text_encoder=True,
                             rank_for=ranks_from_state_dict(mixed_sd))
    rebuilt.load_weights(mixed_sd)
    assert {k: v.shape for k, v in rebuilt.kohya_state_dict().items()} == {k: v.shape for k, v in mixed_sd.items()}


# ----------------------------------------------------------------------------------------- files


@pytest.fixture
def sd1_network(tiny):
    network = create_network(tiny[SD1], locon_cfg(), train_unet=True, train_text_encoder=True)
    randomize_up(network)
    return network


@pytest.mark.parametrize("fmt", ["safetensors", "ckpt", "pt"])
def test_save_load_round_trip_and_never_overwrite(tmp_path, sd1_network, fmt, tiny):
    path = tmp_path / f"my_lora.{fmt}"
    tensors = sd1_network.kohya_state_dict()
    metadata = {"ss_network_dim": "4", "modelspec.title": "my_lora"}
    assert save_lora_file(path, tensors, metadata, dtype=torch.float16, fmt=fmt) == path
    loaded, meta = load_lora_file(path)
    assert set(loaded) == set(tensors)
    for key, value in tensors.items():
        assert loaded[key].dtype == torch.float16
        assert torch.equal(loaded[key], value.to(torch.float16)), key
    if fmt == "safetensors":
        assert meta["ss_network_dim"] == "4" and meta["modelspec.title"] == "my_lora"
        assert {"sshs_model_hash", "sshs_legacy_hash"} <= set(meta)
    else:
        assert meta == {}
    stamp = path.read_bytes()
    with pytest.raises(OutputExistsError):
        save_lora_file(path, tensors, metadata, dtype=torch.float32, fmt=fmt)
    assert path.read_bytes() == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left behind
    fresh = create_network(tiny[SD1], locon_cfg(), train_unet=True, train_text_encoder=True)
    fresh.load_weights(path)


def test_save_rejects_bad_arguments(tmp_path, sd1_network):
    tensors = sd1_network.kohya_state_dict()
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_lora_file(tmp_path / "a.ckpt", tensors, {}, dtype=torch.float16, fmt="safetensors")
    with pytest.raises(TypeError, match="ss_network_dim"):
        save_lora_file(tmp_path / "a.safetensors", tensors, {"ss_network_dim": 4}, dtype=torch.float16,
                       fmt="safetensors")


def test_load_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_lora_file(tmp_path / "missing.safetensors")
    for name in ("broken.safetensors", "broken.ckpt"):
        (tmp_path / name).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
        with pytest.raises(ModelError, match="corrupt"):
            load_lora_file(tmp_path / name)


def test_hashes_match_an_independent_recomputation(tmp_path):
    from safetensors.torch import save

    g = torch.Generator().manual_seed(3)
    # over 1 MiB + 64 KiB, so the legacy window holds tensor bytes
    tensors = {
        "lora_unet_a.lora_down.weight": torch.randn(400, 1000, generator=g),
        "lora_unet_a.alpha": torch.tensor(8.0),
    }
    metadata = {"ss_network_dim": "8", "ss_output_name": "x", "modelspec.title": "edited later"}
    path = save_lora_file(tmp_path / "h.safetensors", tensors, metadata, dtype=torch.float32, fmt="safetensors")
    _, meta = load_lora_file(path)
    raw = path.read_bytes()
    header = int.from_bytes(raw[:8], "little")
    assert meta["sshs_model_hash"] == hashlib.sha256(raw[8 + header :]).hexdigest()
    ss_only = save(tensors, {"ss_network_dim": "8", "ss_output_name": "x"})
    assert meta["sshs_legacy_hash"] == hashlib.sha256(ss_only[1 << 20 : (1 << 20) + (1 << 16)]).hexdigest()[:8]
    assert len(meta["sshs_legacy_hash"]) == 8
    assert meta["sshs_legacy_hash"] != hashlib.sha256(b"").hexdigest()[:8]


# -------------------------------------------------------------------- diffusers compatibility


def _sd1_pipeline(c):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=c.vae, text_encoder=c.text_encoders[0], tokenizer=c.tokenizers[0], unet=c.unet,
        scheduler=DDIMScheduler(steps_offset=1, clip_sample=False), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )


def _sdxl_pipeline(c):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(
        vae=c.vae, text_encoder=c.text_encoders[0], text_encoder_2=c.text_encoders[1], tokenizer=c.tokenizers[0],
        tokenizer_2=c.tokenizers[1], unet=c.unet, scheduler=EulerDiscreteScheduler(steps_offset=1),
    )


def _image(pipe, seed=0):
    return pipe(
        "a photo of a cat", num_inference_steps=2, height=64, width=64, output_type="pt",
        generator=torch.Generator().manual_seed(seed),
    ).images


@pytest.mark.parametrize(("family", "cfg"), [(SD1, lora_cfg()), (SD1, locon_cfg()), (SDXL, locon_cfg())],
                         ids=["sd1-lora", "sd1-locon", "sdxl-locon"])
def test_diffusers_load_lora_weights_reads_our_file(tmp_path, family, cfg, tiny):
    """diffusers' kohya loader must give exactly our network's outputs, layer for layer."""
    ours = build_tiny(family)
    network = create_network(ours, cfg, train_unet=True, train_text_encoder=True)
    randomize_up(network)
    network.apply()
    path = save_lora_file(tmp_path / "lora.safetensors", network.kohya_state_dict(), {"ss_network_dim": "4"},
                          dtype=torch.float32, fmt="safetensors")

    theirs = build_tiny(family)
    pipe = (_sdxl_pipeline if family == SDXL else _sd1_pipeline)(theirs)
    before = _image(pipe)
    pipe.load_lora_weights(str(path))
    after = _image(pipe)
    assert (after - before).abs().max() > 1e-3

    g = torch.Generator().manual_seed(1)
    ids = ours.tokenizers[0](["a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    x = torch.randn(1, 4, 8, 8, generator=g)
    enc = torch.randn(1, 77, ours.unet.config.cross_attention_dim, generator=g)
    extra = {}
    if family == SDXL:
        cond = {"text_embeds": torch.randn(1, 32, generator=g), "time_ids": torch.randn(1, 6, generator=g)}
        extra = {"added_cond_kwargs": cond}
    with torch.no_grad():
        for mine, loaded in zip(ours.text_encoders, theirs.text_encoders):
            torch.testing.assert_close(loaded(ids)[0], mine(ids)[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs.unet(x, 10, enc, **extra).sample, ours.unet(x, 10, enc, **extra).sample,
                                   rtol=1e-5, atol=1e-5)
        untouched = tiny[family]
        assert not torch.allclose(untouched.unet(x, 10, enc, **extra).sample, ours.unet(x, 10, enc, **extra).sample)
        assert not torch.allclose(untouched.text_encoders[-1](ids)[0], ours.text_encoders[-1](ids)[0])

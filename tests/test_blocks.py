"""Block-wise LoRA settings: block indices of our kohya names, LR-weight presets and lists, per-block
ranks, zero blocks, and the optimizer groups. The expected indices and preset values were checked
against sd-scripts' get_block_index / get_block_lr_weight on every name of the full-size U-Nets."""

from __future__ import annotations

import math
import os
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from engine.config.schema import ModelFamily, NetworkConfig
from engine.errors import ConfigError
from engine.models.components import BaseComponents
from engine.models.tiny import build_tiny
from engine.network.blocks import (
    block_count,
    block_index,
    block_labels,
    block_network_args,
    block_param_groups,
    block_problems,
    block_rank_for,
    config_lr_weights,
    lr_weights,
)
from engine.network.inject import create_network, default_rank_for
from engine.network.names import unet_targets
from tests.support.meta_models import full_size_unets

SD1, SD2, SDXL = ModelFamily.SD1, ModelFamily.SD2, ModelFamily.SDXL


@pytest.fixture(scope="module")
def full_size():
    """Real-size SD1.5 and SDXL U-Nets on the meta device (no memory, no download)."""
    unets = full_size_unets()
    return {SD1: unets["sd15_unet"], SDXL: unets["sdxl_unet"]}


def unet_only(family, unet) -> BaseComponents:
    return BaseComponents(family=family, unet=unet, vae=None, text_encoders=[], tokenizers=[], source="meta")


# ---------------------------------------------------------------------------------- block indices


def test_counts_and_labels():
    assert block_count(SD1) == block_count(SD2) == 25 and block_count(SDXL) == 23
    sd = block_labels(SD1)
    assert (sd[0], sd[11], sd[12], sd[13], sd[24]) == ("IN00", "IN11", "M00", "OUT00", "OUT11")
    xl = block_labels(SDXL)
    assert len(xl) == 23 and (xl[0], xl[1], xl[9], xl[10], xl[12], xl[13], xl[21], xl[22]) == (
        "BASE", "IN00", "IN08", "M00", "M02", "OUT00", "OUT08", "OUT",
    )


@pytest.mark.parametrize(
    "name, family, index",
    [
        ("lora_unet_down_blocks_0_attentions_0_proj_in", SD1, 1),
        ("lora_unet_down_blocks_0_resnets_1_conv1", SD1, 2),
        ("lora_unet_down_blocks_0_downsamplers_0_conv", SD1, 3),
        ("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", SD2, 4),
        ("lora_unet_down_blocks_3_resnets_1_conv2", SD1, 11),
        ("lora_unet_mid_block_attentions_0_proj_out", SD1, 12),
        ("lora_unet_mid_block_resnets_1_time_emb_proj", SD1, 12),
        ("lora_unet_up_blocks_0_resnets_0_conv1", SD1, 13),
        ("lora_unet_up_blocks_0_upsamplers_0_conv", SD1, 15),
        ("lora_unet_up_blocks_3_attentions_2_proj_out", SD1, 24),
        ("lora_te_text_model_encoder_layers_0_mlp_fc1", SD1, None),
        ("lora_unet_input_blocks_1_0_in_layers_2", SDXL, 2),
        ("lora_unet_input_blocks_4_1_proj_in", SDXL, 5),
        ("lora_unet_input_blocks_8_1_transformer_blocks_9_ff_net_2", SDXL, 9),
        ("lora_unet_middle_block_1_proj_in", SDXL, 11),
        ("lora_unet_output_blocks_0_1_proj_out", SDXL, 13),
        ("lora_unet_output_blocks_8_0_skip_connection", SDXL, 21),
        ("lora_te2_text_model_encoder_layers_0_mlp_fc1", SDXL, None),
    ],
)
def test_block_index_of_names(name, family, index):
    assert block_index(name, family) == index


@pytest.mark.parametrize(
    "name, family",
    [("lora_unet_down_blocks_4_resnets_0_conv1", SD1), ("lora_unet_conv_in", SD1), ("lora_unet_input_blocks_9_0_op", SDXL)],
)
def test_names_outside_the_blocks_are_refused(name, family):
    with pytest.raises(ValueError, match="outside the"):
        block_index(name, family)


def test_full_size_block_histograms(full_size):
    # modules per block for LoCon, as sd-scripts counts them (IN00, and SDXL's 0/1/22, hold none)
    sd1 = Counter(block_index(t.name, SD1) for t in unet_targets(full_size[SD1], SD1, locon=True))
    assert dict(sd1) == {
        1: 15, 2: 15, 3: 1, 4: 16, 5: 15, 6: 1, 7: 16, 8: 15, 9: 1, 10: 3, 11: 3, 12: 18,
        13: 4, 14: 4, 15: 5, 16: 16, 17: 16, 18: 17, 19: 16, 20: 16, 21: 17, 22: 16, 23: 16, 24: 16,
    }
    xl = Counter(block_index(t.name, SDXL) for t in unet_targets(full_size[SDXL], SDXL, locon=True))
    assert dict(xl) == {
        2: 3, 3: 3, 4: 1, 5: 26, 6: 25, 7: 1, 8: 106, 9: 105, 10: 3, 11: 102, 12: 3,
        13: 106, 14: 106, 15: 107, 16: 26, 17: 26, 18: 27, 19: 4, 20: 4, 21: 4,
    }


@pytest.mark.parametrize("family", [SD1, SD2, SDXL])
def test_every_tiny_unet_module_has_a_block(family):
    unet = build_tiny(family).unet
    indices = [block_index(t.name, family) for t in unet_targets(unet, family, locon=True)]
    assert all(0 < i < block_count(family) - 1 for i in indices)


# ------------------------------------------------------------------------------------- LR weights


def test_presets_follow_the_sd_scripts_formulas():
    n = 12
    cosine = [math.sin(math.pi * (i / (n - 1)) / 2) for i in reversed(range(n))]
    sine = [math.sin(math.pi * (i / (n - 1)) / 2) for i in range(n)]
    linear = [i / (n - 1) for i in range(n)]
    w = lr_weights("cosine", None, "sine", SD1)
    assert len(w) == 25 and w[:12] == cosine and w[12] == 1.0 and w[13:] == sine
    assert w[0] == 1.0 and w[11] == 0.0
    w = lr_weights("linear", 0.5, "reverse_linear", SD1)
    assert w[:12] == linear and w[12] == 0.5 and w[13:] == linear[::-1]
    w = lr_weights("cosine+0.2", None, "zeros+0.5", SD1)
    assert w[:12] == [c + 0.2 for c in cosine] and w[13:] == [0.5] * 12


def test_sdxl_presets_have_nine_blocks_and_fixed_ends():
    w = lr_weights("linear", [0.1, 0.2, 0.3], "zeros+0.25", SDXL)
    assert len(w) == 23
    assert w[0] == w[22] == 1.0  # embedding and out layers: no LoRA there, weight 1 as sd-scripts
    assert w[1:10] == [i / 8 for i in range(9)] and w[10:13] == [0.1, 0.2, 0.3] and w[13:22] == [0.25] * 9


def test_lists_short_are_padded_long_are_refused():
    w = lr_weights([0.5, 0.25], None, None, SD1)
    assert w[:3] == [0.5, 0.25, 1.0] and w[3:] == [1.0] * 22
    with pytest.raises(ConfigError, match=r"network.down_lr_weight has 13 values but a sd1 U-Net has 12"):
        lr_weights([1.0] * 13, None, None, SD1)
    with pytest.raises(ConfigError, match=r"network.up_lr_weight has 12 values but a sdxl U-Net has 9"):
        lr_weights(None, None, [1.0] * 12, SDXL)
    with pytest.raises(ConfigError, match=r"network.mid_lr_weight has 2 values but a sd2 U-Net has 1"):
        lr_weights(None, [1.0, 1.0], None, SD2)


def test_strings_as_lists_and_bad_strings():
    assert lr_weights("0, 0.5,1", None, None, SD1)[:4] == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ConfigError, match="empty item"):
        lr_weights("1,,1", None, None, SD1)  # sd-scripts would read the gap as 0
    with pytest.raises(ConfigError, match="not a preset: use one of cosine, sine, linear"):
        lr_weights("cosin", None, None, SD1)
    with pytest.raises(ConfigError, match="not a number"):
        lr_weights(None, "cosine", None, SD1)  # mid takes numbers only


def test_zero_threshold():
    w = lr_weights([0.1, 0.2, 0.3], None, None, SD1, zero_threshold=0.2)
    assert w[:4] == [0.0, 0.0, 0.3, 1.0]  # at or below the threshold -> 0
    cfg = NetworkConfig(up_lr_weight="linear", block_lr_zero_threshold=0.3)
    w = config_lr_weights(cfg, SD1)
    assert w[13:17] == [0.0, 0.0, 0.0, 0.0] and w[17] == pytest.approx(4 / 11)
    assert config_lr_weights(NetworkConfig(), SDXL) == [1.0] * 23


# ----------------------------------------------------------------------------- ranks and groups


def test_block_problems_name_the_count():
    problems = block_problems(NetworkConfig(block_dims=[4] * 23), SD1)
    assert problems and "has 23 values but a sd1 U-Net has 25 blocks" in str(problems[0])
    problems = block_problems(NetworkConfig(block_alphas=[1.0] * 25), SDXL)
    assert "has 25 values but a sdxl U-Net has 23 blocks" in str(problems[0])
    assert block_problems(NetworkConfig(block_dims=[4] * 25, block_alphas=[2.0] * 25), SD2) == []
    assert "set network.type=locon" in str(block_problems(NetworkConfig(conv_block_dims=[2] * 25), SD1)[0])
    assert "negative" in str(block_problems(NetworkConfig(block_dims=[-1] + [4] * 24), SD1)[0])
    with pytest.raises(ConfigError, match="has 24 values"):
        block_rank_for(NetworkConfig(block_dims=[4] * 24), SD1, default_rank_for(NetworkConfig()))


def sd1_dims() -> list[int]:
    return [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]


def test_block_dims_give_each_module_its_rank(full_size):
    dims = sd1_dims()
    conv_dims = [d + 1 for d in dims]
    cfg = NetworkConfig(
        type="locon", dim=4, alpha=2.0, conv_dim=3,
        block_dims=dims, block_alphas=[d / 2 for d in dims], conv_block_dims=conv_dims,
    )
    rank_for = block_rank_for(cfg, SD1, default_rank_for(cfg))
    network = create_network(unet_only(SD1, full_size[SD1]), cfg, train_unet=True, train_text_encoder=False, rank_for=rank_for)
    state = network.kohya_state_dict()
    checked = 0
    for module in network.unet_loras:
        i = block_index(module.lora_name, SD1)
        down = state[f"{module.lora_name}.lora_down.weight"]
        is_3x3 = down.dim() == 4 and tuple(down.shape[2:]) == (3, 3)
        assert down.shape[0] == (conv_dims[i] if is_3x3 else dims[i])
        alpha = module.scale * module.lora_dim  # the alpha buffer is on the meta device
        assert alpha == pytest.approx(1.0 if is_3x3 else dims[i] / 2)  # conv_alpha unset: 1.0
        checked += 1
    assert checked == 278  # every LoCon target of SD1.5 (IN00 holds none)


def test_zero_blocks_get_no_modules_and_text_encoder_keeps_its_rank():
    c = build_tiny(SD1)
    # IN01-IN02 at 0.1 and OUT03 at 0 fall at or below the threshold
    cfg = NetworkConfig(dim=4, alpha=2.0, down_lr_weight=[1.0, 0.1, 0.1], up_lr_weight="1,1,1,0", block_lr_zero_threshold=0.1)
    network = create_network(c, cfg, train_unet=True, train_text_encoder=True, rank_for=block_rank_for(cfg, SD1, default_rank_for(cfg)))
    blocks = {block_index(m.lora_name, SD1) for m in network.unet_loras}
    full = create_network(c, cfg, train_unet=True, train_text_encoder=True)
    all_blocks = {block_index(m.lora_name, SD1) for m in full.unet_loras}
    assert {1, 16} <= all_blocks and blocks == all_blocks - {1, 2, 16}
    assert not any(k.startswith("lora_unet_down_blocks_0_attentions_0") for k in network.kohya_state_dict())
    assert len(network.text_encoder_loras) == len(full.text_encoder_loras) > 0
    assert all(m.lora_dim == 4 for m in network.loras)


def test_block_param_groups_carry_unet_lr_times_weight(full_size):
    cfg = NetworkConfig(dim=4, alpha=2.0, down_lr_weight="cosine+0.2", up_lr_weight="linear")
    weights = config_lr_weights(cfg, SD1)
    network = create_network(unet_only(SD1, full_size[SD1]), cfg, train_unet=True, train_text_encoder=False,
                             rank_for=block_rank_for(cfg, SD1, default_rank_for(cfg)))
    groups = block_param_groups(network, 1e-4, 5e-5, weights, SD1)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    modules = {m.lora_name: m for m in network.unet_loras}
    in04 = modules["lora_unet_down_blocks_1_attentions_0_proj_in"]
    out11 = modules["lora_unet_up_blocks_3_attentions_2_proj_out"]
    assert lr_of[id(in04.lora_down.weight)] == 1e-4 * weights[4] == 1e-4 * (math.sin(math.pi * (7 / 11) / 2) + 0.2)
    assert lr_of[id(out11.lora_up.weight)] == 1e-4 * weights[24] == 1e-4
    # one group per distinct LR, every LoRA parameter in exactly one group
    assert len({g["lr"] for g in groups}) == len(groups)
    assert sorted(lr_of) == sorted(id(p) for p in network.parameters())
    assert "IN04" in next(g for g in groups if g["lr"] == lr_of[id(in04.lora_down.weight)])["blocks"]


def test_block_param_groups_keep_text_encoder_groups_and_drop_zero_lr():
    c = build_tiny(SDXL)
    cfg = NetworkConfig(dim=2, alpha=1.0, mid_lr_weight=[0.0, 0.0, 0.0])
    network = create_network(c, cfg, train_unet=True, train_text_encoder=True)  # modules in M00-M02 exist
    weights = config_lr_weights(cfg, SDXL)
    groups = block_param_groups(network, 1e-3, [2e-4, 1e-4], weights, SDXL)
    assert [g["name"] for g in groups[:2]] == ["text_encoder1", "text_encoder2"]
    assert [g["lr"] for g in groups[:2]] == [2e-4, 1e-4]
    assert all(g["lr"] == 1e-3 for g in groups[2:]) and len(groups) == 3
    mid = [m for m in network.unet_loras if m.lora_name.startswith("lora_unet_middle_block_")]
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert mid and not any(id(p) in in_groups for m in mid for p in m.parameters())


def test_network_args_record_the_block_settings_as_sd_scripts_does():
    cfg = NetworkConfig(
        down_lr_weight="cosine+0.2", mid_lr_weight=0.5, up_lr_weight=[1.0, 0.25],
        block_dims=[4] * 25, block_alphas=[2.0] * 24 + [1.5], block_lr_zero_threshold=0.1,
    )
    args = block_network_args(cfg)
    assert args == {
        "down_lr_weight": "cosine+0.2", "mid_lr_weight": "0.5", "up_lr_weight": "1,0.25",
        "block_dims": ",".join(["4"] * 25), "block_alphas": ",".join(["2"] * 24 + ["1.5"]),
        "block_lr_zero_threshold": "0.1",
    }
    assert block_network_args(NetworkConfig()) == {}

"""Tiny random Stable Diffusion models, built from config and a seed at run time.

They have the real architectures (block layout, attention, text encoders with the real CLIP
vocabulary) at toy widths, so every code path of the trainer runs on a CPU in seconds. The
built-in demo model is the tiny SD1; tests use all three families. No weights are shipped.
"""

from __future__ import annotations

import torch

from engine.config.schema import ModelFamily
from engine.models.components import BaseComponents
from engine.models.tokenizer import EOS_PAD, OPENCLIP_PAD, load_clip_tokenizer

DEMO_SEED = 1234


def _vae(scaling_factor: float):
    from diffusers import AutoencoderKL

    # four blocks keep the real 8x downscale: 64 px images give 8x8 latents
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        norm_num_groups=16,
        latent_channels=4,
        sample_size=64,
        scaling_factor=scaling_factor,
    )


def _text_encoder(hidden: int, act: str, with_projection: bool = False, projection_dim: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection_dim or hidden,
        bos_token_id=49406,
        eos_token_id=49407,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config)


def _unet(family: ModelFamily, demo: bool = False):
    from diffusers import UNet2DConditionModel

    common = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1)
    if demo:
        # The demo trains at the real 512 px (64x64 latents). Self-attention over 64x64 tokens would
        # cost ~3 s a step on a CPU, so attention sits only at the lowest resolution (16x16), as in
        # SD's deeper blocks: ~0.06 s a step, and still the SD1 block classes and kohya names.
        return UNet2DConditionModel(
            **common,
            block_out_channels=(32, 32, 64),
            down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
        )
    if family == ModelFamily.SD1:
        return UNet2DConditionModel(
            **common,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
        )
    if family == ModelFamily.SD2:
        return UNet2DConditionModel(
            **common,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=48,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
        )
    return UNet2DConditionModel(
        **common,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + 32,
        cross_attention_dim=32 + 64,
    )


def build_demo(seed: int = DEMO_SEED) -> BaseComponents:
    """The built-in demo model: a tiny SD1 whose attention sits at the lowest resolution only, so
    training at 512 px takes seconds on a CPU."""
    components = build_tiny(ModelFamily.SD1, seed, demo=True)
    components.source = "builtin:demo"
    return components


def build_tiny(family: ModelFamily = ModelFamily.SD1, seed: int = DEMO_SEED, *, demo: bool = False) -> BaseComponents:
    """A tiny model of `family` whose weights depend only on `seed` (same seed, same bytes)."""
    if family == ModelFamily.AUTO:
        raise ValueError("build_tiny needs a concrete family")
    if demo and family != ModelFamily.SD1:
        raise ValueError("the demo model is an SD1 model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = _unet(family, demo)
        # the real latent scales: SDXL's VAE uses 0.13025, SD1/SD2 0.18215
        vae = _vae(0.13025 if family == ModelFamily.SDXL else 0.18215)
        if family == ModelFamily.SD1:
            encoders = [_text_encoder(32, "quick_gelu")]
            tokenizers = [load_clip_tokenizer(EOS_PAD)]
        elif family == ModelFamily.SD2:
            encoders = [_text_encoder(48, "gelu")]
            tokenizers = [load_clip_tokenizer(OPENCLIP_PAD)]
        else:
            # different widths, so single-file loaders can tell the two encoders apart
            encoders = [
                _text_encoder(32, "quick_gelu"),
                _text_encoder(64, "gelu", with_projection=True, projection_dim=32),
            ]
            tokenizers = [load_clip_tokenizer(EOS_PAD), load_clip_tokenizer(OPENCLIP_PAD)]
    for module in (unet, vae, *encoders):
        module.eval()
    return BaseComponents(
        family=family,
        unet=unet,
        vae=vae,
        text_encoders=encoders,
        tokenizers=tokenizers,
        source=f"builtin:tiny-{family.value}",
    )

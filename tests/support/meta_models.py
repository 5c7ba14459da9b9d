"""The real-size architectures on the meta device: their module names and shapes, no memory and
no download (accelerate's init_empty_weights)."""

from __future__ import annotations


def full_size_unets() -> dict:
    """Real-size SD1.5 / SD2 / SDXL U-Nets on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        return {
            "sd15_unet": UNet2DConditionModel(
                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                cross_attention_dim=768, attention_head_dim=8,
            ),
            "sd2_unet": UNet2DConditionModel(
                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=1024,
                attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
            ),
            "sdxl_unet": UNet2DConditionModel(
                sample_size=128,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                block_out_channels=(320, 640, 1280), layers_per_block=2,
                transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
                addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
            ),
        }


def full_size_models() -> dict:
    """The U-Nets of `full_size_unets` and the real-size text encoders (CLIP-L, OpenCLIP-H as SD2
    loads it, OpenCLIP-G) on the meta device."""
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def clip(hidden, layers, heads, act, cls=CLIPTextModel, **kw):
        config = CLIPTextConfig(
            hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
            num_attention_heads=heads, hidden_act=act, **kw,
        )
        return cls(config)

    with init_empty_weights():
        return {
            **full_size_unets(),
            "clip_l": clip(768, 12, 12, "quick_gelu"),
            "openclip_h": clip(1024, 23, 16, "gelu"),  # SD2 loads it with 23 of its 24 layers
            "openclip_g": clip(1280, 32, 20, "gelu", CLIPTextModelWithProjection, projection_dim=1280),
        }

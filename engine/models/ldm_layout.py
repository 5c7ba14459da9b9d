"""diffusers/transformers models as one original (LDM/CompVis) state dict: the single-file layout.

The mapping is the inverse of what diffusers' `loaders/single_file_utils.py` reads. It is generic
over `layers_per_block` and block count, so it serves the tiny models and meta-device full-size
ones. The product uses it to know, from the shipped architecture configs, the tensor names and
shapes a single-file checkpoint of each family must hold (engine/models/inspect.py), so a file of
another architecture is refused before training; the tests use it to write such files.

UNet names, with L = layers_per_block: down block i, layer j -> `input_blocks.{1 + i(L+1) + j}`
(resnet `.0`, attention `.1`), its downsampler `input_blocks.{(i+1)(L+1)}.0.op`; the middle block
`middle_block.0/1/2`; up block i, layer j -> `output_blocks.{i(L+1) + j}`, its upsampler
`output_blocks.{i(L+1) + L}.{2 if attention else 1}.conv`. The VAE decoder numbers its up blocks
in reverse; OpenCLIP encoders (SD2, SDXL's second) keep q/k/v fused in `attn.in_proj_*`.
"""

from __future__ import annotations

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_TEXT1_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TEXT2_PREFIX = "conditioner.embedders.1.model."

_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's size/crop conditioning
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def _split(key: str, head: str) -> str | None:
    return key[len(head) :] if key.startswith(head) else None


def _rename_resnet(rest: str) -> str:
    module, _, tail = rest.partition(".")
    return f"{_UNET_RESNET.get(module, module)}.{tail}"


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    """A diffusers UNet2DConditionModel as `model.diffusion_model.*` keys."""
    names = unet_ldm_names(unet)
    return {UNET_PREFIX + names[key]: tensor for key, tensor in unet.state_dict().items()}


def unet_ldm_names(unet) -> dict[str, str]:
    """Each diffusers U-Net state-dict key -> its LDM name (without `model.diffusion_model.`)."""
    per_block = unet.config.layers_per_block
    if not isinstance(per_block, int):
        raise ValueError("only a single layers_per_block is supported (as in SD1/SD2/SDXL)")
    up_has_attention = {i: hasattr(block, "attentions") for i, block in enumerate(unet.up_blocks)}
    return {key: _unet_key_to_ldm(key, per_block, up_has_attention) for key in unet.state_dict()}


def _unet_key_to_ldm(key: str, per_block: int, up_has_attention: dict[int, bool]) -> str:
    stride = per_block + 1  # input/output blocks per diffusers block (layers + down/upsampler)
    module, _, param = key.rpartition(".")
    new = None
    if module in _UNET_TOP:
        new = f"{_UNET_TOP[module]}.{param}"
    elif key.startswith("down_blocks."):
        _, i, kind, j, rest = key.split(".", 4)
        i, j = int(i), int(j)
        if kind == "resnets":
            new = f"input_blocks.{1 + i * stride + j}.0.{_rename_resnet(rest)}"
        elif kind == "attentions":
            new = f"input_blocks.{1 + i * stride + j}.1.{rest}"
        elif kind == "downsamplers":
            new = f"input_blocks.{(i + 1) * stride}.0.op.{rest.removeprefix('conv.')}"
    elif key.startswith("mid_block."):
        _, kind, j, rest = key.split(".", 3)
        if kind == "resnets":
            new = f"middle_block.{2 * int(j)}.{_rename_resnet(rest)}"
        elif kind == "attentions":
            new = f"middle_block.1.{rest}"
    elif key.startswith("up_blocks."):
        _, i, kind, j, rest = key.split(".", 4)
        i, j = int(i), int(j)
        if kind == "resnets":
            new = f"output_blocks.{i * stride + j}.0.{_rename_resnet(rest)}"
        elif kind == "attentions":
            new = f"output_blocks.{i * stride + j}.1.{rest}"
        elif kind == "upsamplers":
            slot = 2 if up_has_attention[i] else 1
            new = f"output_blocks.{i * stride + per_block}.{slot}.{rest}"
    if new is None:
        raise KeyError(f"no LDM name for UNet key {key!r}")
    return new


def vae_to_ldm(vae, prefix: str = VAE_PREFIX) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL as LDM keys (`first_stage_model.*`; prefix "" for a VAE file)."""
    up_count = len(vae.decoder.up_blocks)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in vae.state_dict().items():
        part, _, rest = key.partition(".")  # encoder / decoder / quant_conv / post_quant_conv
        new = key
        if part in ("encoder", "decoder"):
            new = f"{part}.{_vae_coder_key(rest, up_count)}"
            if ".mid.attn_1." in new and tensor.ndim == 2:
                tensor = tensor[:, :, None, None]  # the LDM VAE attention uses 1x1 convs
        out[prefix + new] = tensor
    return out


def _vae_coder_key(rest: str, up_count: int) -> str:
    parts = rest.split(".")
    if parts[0] == "conv_norm_out":
        return "norm_out." + ".".join(parts[1:])
    if parts[0] == "down_blocks":
        i, kind, tail = parts[1], parts[2], ".".join(parts[4:])
        if kind == "resnets":
            return f"down.{i}.block.{parts[3]}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        return f"down.{i}.downsample.{tail}"  # downsamplers.0.conv.* -> downsample.conv.*
    if parts[0] == "up_blocks":
        i = up_count - 1 - int(parts[1])  # the LDM decoder numbers its blocks bottom-up
        kind, tail = parts[2], ".".join(parts[4:])
        if kind == "resnets":
            return f"up.{i}.block.{parts[3]}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        return f"up.{i}.upsample.{tail}"
    if parts[0] == "mid_block":
        kind, j, tail = parts[1], int(parts[2]), ".".join(parts[3:])
        if kind == "resnets":
            return f"mid.block_{j + 1}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        for ours, theirs in _VAE_ATTENTION.items():
            if tail.startswith(ours + "."):
                return f"mid.attn_1.{theirs}.{tail[len(ours) + 1:]}"
    return rest  # conv_in / conv_out keep their names


def _text_model_items(encoder) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The encoder's weights keyed without `text_model.`, plus the projection if it has one.

    transformers >= 5.6 flattened CLIPTextModel (no `text_model.` level); CLIPTextModelWithProjection
    still has it. Both layouts are accepted.
    """
    body: dict[str, torch.Tensor] = {}
    projection = None
    for key, tensor in encoder.state_dict().items():
        if key == "text_projection.weight":
            projection = tensor
        else:
            body[key.removeprefix("text_model.")] = tensor
    return body, projection


def clip_to_ldm(encoder, prefix: str = SD1_TEXT_PREFIX) -> dict[str, torch.Tensor]:
    """An OpenAI CLIP text encoder (SD1, SDXL's first) in the HF layout LDM files keep."""
    body, _ = _text_model_items(encoder)
    out = {f"{prefix}text_model.{k}": v for k, v in body.items()}
    # real SD1 files carry the position-id buffer too; the loader must tolerate it
    positions = encoder.config.max_position_embeddings
    out.setdefault(f"{prefix}text_model.embeddings.position_ids", torch.arange(positions)[None])
    return out


_OPENCLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def open_clip_to_ldm(encoder, prefix: str = SD2_TEXT_PREFIX) -> dict[str, torch.Tensor]:
    """A text encoder in OpenCLIP's layout (SD2's OpenCLIP-H, SDXL's OpenCLIP-bigG).

    q/k/v are stored fused as `attn.in_proj_*`; the projection is stored transposed. A model
    without a projection (SD2) gets an identity one, as real SD2 files have one that loaders skip.
    """
    body, projection = _text_model_items(encoder)
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in body.items():
        if key == "embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = tensor
        elif key == "embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = tensor
        elif key.startswith("final_layer_norm."):
            out[prefix + "ln_final." + key.split(".")[-1]] = tensor
        elif key.startswith("encoder.layers."):
            _, _, layer, rest = key.split(".", 3)
            module, _, param = rest.rpartition(".")
            head = f"{prefix}transformer.resblocks.{layer}."
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                fused.setdefault(f"{head}attn.in_proj_{param}", {})[module[-6]] = tensor
            else:
                out[f"{head}{_OPENCLIP_LAYER[module]}.{param}"] = tensor
        elif key != "embeddings.position_ids":
            raise KeyError(f"no OpenCLIP name for text encoder key {key!r}")
    for name, parts in fused.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    hidden = encoder.config.hidden_size
    out[prefix + "text_projection"] = (
        projection.T.contiguous() if projection is not None else torch.eye(hidden)
    )
    out[prefix + "logit_scale"] = torch.tensor(4.6052)
    return out


def noise_schedule_buffers() -> dict[str, torch.Tensor]:
    """The DDPM buffers real LDM checkpoints carry at the top level (loaders must ignore them)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return {"betas": betas.float(), "alphas_cumprod": torch.cumprod(1 - betas, 0).float()}


def components_to_ldm(components) -> dict[str, torch.Tensor]:
    """A whole BaseComponents (SD1, SD2 or SDXL) as one LDM state dict."""
    family = components.family.value
    out = {**unet_to_ldm(components.unet), **vae_to_ldm(components.vae), **noise_schedule_buffers()}
    encoders = components.text_encoders
    if family == "sd1":
        out.update(clip_to_ldm(encoders[0], SD1_TEXT_PREFIX))
    elif family == "sd2":
        out.update(open_clip_to_ldm(encoders[0], SD2_TEXT_PREFIX))
    elif family == "sdxl":
        out.update(clip_to_ldm(encoders[0], SDXL_TEXT1_PREFIX))
        out.update(open_clip_to_ldm(encoders[1], SDXL_TEXT2_PREFIX))
    else:
        raise ValueError(f"unknown family {family!r}")
    return out

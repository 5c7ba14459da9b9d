"""Max-norm regularisation (`scale_weight_norms`): keep each LoRA module's weight update small.

After an optimizer step, for every module the full update W = up @ down * alpha / rank (for a conv:
up's 1x1 kernel applied to down's kernel) is measured; when its Frobenius norm exceeds `max_norm`,
both up and down are multiplied by sqrt(max_norm / norm), so W shrinks to exactly `max_norm`.
Same rule and same reported numbers as kohya-ss/sd-scripts `LoRANetwork.apply_max_norm_regularization`
(PR #545): the count of scaled modules, the mean and the largest norm after scaling.

The norms are computed for all modules first and read back with a single host sync.
"""

from __future__ import annotations

import torch

from engine.network.modules import LoraModule


def module_update(module: LoraModule, device: torch.device | str | None = None) -> torch.Tensor:
    """W = up @ down * scale of one module, in fp32, shaped like the wrapped layer's weight."""
    down = module.lora_down.weight.detach().to(device, torch.float32)
    up = module.lora_up.weight.detach().to(device, torch.float32)
    if down.dim() == 4:  # conv: up is (out, r, 1, 1), down (r, in, kh, kw)
        update = torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down)
    else:
        update = up @ down
    return update * module.scale


@torch.no_grad()
def apply_max_norm(network, max_norm: float, device: torch.device | str | None = None) -> tuple[int, float, float]:
    """Scale every module whose update norm exceeds `max_norm` down to it.

    Returns (modules scaled, mean norm after scaling, largest norm after scaling). `device` is where
    the norms are computed (default: where each module's weights are). A network with its own
    `apply_max_norm` method (LoHa/LoKr) is handed to it.
    """
    if max_norm <= 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    if hasattr(network, "apply_max_norm"):  # LoHa/LoKr: LyCORIS' own rule (lycoris_adapter)
        return network.apply_max_norm(max_norm, device)
    modules: list[LoraModule] = list(network.loras)
    if not modules:
        return 0, 0.0, 0.0
    norms = torch.stack([module_update(m, device).norm().to(device) for m in modules])
    # norm > max_norm: ratio max_norm / norm; otherwise 1 (sd-scripts clamps the norm to at least
    # max_norm / 2 first, which only guards the division: the ratio is 1 there too)
    ratios = torch.where(norms > max_norm, max_norm / norms.clamp(min=max_norm), torch.ones_like(norms))
    factors = ratios.sqrt()
    for module, factor in zip(modules, factors):
        for weight in (module.lora_down.weight, module.lora_up.weight):
            weight.mul_(factor.to(weight.device, weight.dtype))
    scaled = norms * ratios
    count, mean, largest = torch.stack([(norms > max_norm).sum().float(), scaled.mean(), scaled.max()]).tolist()
    return int(count), mean, largest

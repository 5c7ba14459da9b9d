"""One LoRA module: a low-rank update added to the output of a frozen Linear or Conv2d.

    y = org(x) + lora_up(lora_down(x)) * multiplier * alpha / dim

Math, init and tensor names follow kohya-ss/sd-scripts `networks/lora.py` (LoRAModule), so the
state_dict of a module is exactly what a kohya file holds for it: `lora_down.weight`,
`lora_up.weight`, `alpha`. Like sd-scripts, the module does not replace the original layer in its
parent: `apply()` swaps the layer's `forward` for ours, so the base model's structure and
state_dict never change, and `remove()` puts the original forward back.

The forward has no host synchronisation (no `.item()`, no tensor-valued `if`), so it can be
captured in a CUDA graph or compiled without graph breaks. That is why module dropout multiplies
the LoRA branch by a random 0/1 instead of skipping it as sd-scripts does: the output is the same,
but a dropped module's weights get a zero gradient rather than none, so a stateful optimizer still
decays its moments for them on that step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LoraModule(nn.Module):
    """LoRA for one `nn.Linear` or `nn.Conv2d` (any kernel; 1x1 behaves like a Linear).

    `alpha` of 0 or None means alpha = dim (scale 1). Dropouts act only in training mode:
    `dropout` is neuron dropout on down(x); `rank_dropout` zeroes whole ranks per sample and
    rescales by 1/(1-p); `module_dropout` drops the whole LoRA branch with probability p.
    """

    def __init__(
        self,
        name: str,
        org_module: nn.Module,
        dim: int,
        alpha: float | None,
        *,
        multiplier: float = 1.0,
        dropout: float | None = None,
        rank_dropout: float | None = None,
        module_dropout: float | None = None,
    ):
        super().__init__()
        if dim < 1:
            raise ValueError(f"{name}: LoRA rank must be at least 1, got {dim}")
        self.lora_name = name
        self.lora_dim = dim
        device = org_module.weight.device
        if isinstance(org_module, nn.Conv2d):
            self.lora_down = nn.Conv2d(
                org_module.in_channels,
                dim,
                org_module.kernel_size,
                org_module.stride,
                org_module.padding,
                bias=False,
                device=device,
            )
            self.lora_up = nn.Conv2d(dim, org_module.out_channels, (1, 1), (1, 1), bias=False, device=device)
        elif isinstance(org_module, nn.Linear):
            self.lora_down = nn.Linear(org_module.in_features, dim, bias=False, device=device)
            self.lora_up = nn.Linear(dim, org_module.out_features, bias=False, device=device)
        else:
            raise TypeError(f"{name}: LoRA wraps nn.Linear or nn.Conv2d, not {type(org_module).__name__}")

        # as in Microsoft's loralib: down like a default Linear init, up zero so training starts at the base model
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

        alpha = float(dim) if alpha is None or alpha == 0 else float(alpha)
        self.register_buffer("alpha", torch.tensor(alpha, device=device))
        self.scale = alpha / dim  # a Python float: reading the buffer in forward would sync
        self.multiplier = multiplier
        self.dropout = dropout
        self.rank_dropout = rank_dropout
        self.module_dropout = module_dropout

        # a list, so the layer is not registered as our submodule (its weights belong to the base model)
        self._org = [org_module]
        self._org_forward = None
        self._org_requires_grad: list[bool] = []
        self._had_instance_forward = False

    @property
    def org_module(self) -> nn.Module:
        return self._org[0]

    @property
    def applied(self) -> bool:
        return self._org_forward is not None

    def set_alpha(self, alpha: float | None) -> None:
        """Change alpha (and with it the scale); 0 or None means alpha = dim."""
        alpha = float(self.lora_dim) if alpha is None or alpha == 0 else float(alpha)
        with torch.no_grad():
            self.alpha.fill_(alpha)
        self.scale = alpha / self.lora_dim

    def apply(self) -> None:
        """Route the wrapped layer's forward through this module and freeze the layer's own weights."""
        if self.applied:
            raise RuntimeError(f"{self.lora_name} is already applied")
        org = self.org_module
        self._had_instance_forward = "forward" in org.__dict__
        self._org_forward = org.forward
        self._org_requires_grad = [p.requires_grad for p in org.parameters(recurse=False)]
        for p in org.parameters(recurse=False):
            p.requires_grad_(False)
        org.forward = self.forward

    def remove(self) -> None:
        """Give the wrapped layer back its own forward and its weights' requires_grad flags."""
        if not self.applied:
            raise RuntimeError(f"{self.lora_name} is not applied")
        org = self.org_module
        if self._had_instance_forward:
            org.forward = self._org_forward
        else:
            del org.forward  # the class's forward shows through again, exactly as before
        for p, flag in zip(org.parameters(recurse=False), self._org_requires_grad):
            p.requires_grad_(flag)
        self._org_forward = None

    def lora_delta(self, x: torch.Tensor) -> torch.Tensor:
        """The LoRA branch alone: up(down(x)) * multiplier * scale, with dropouts when training."""
        h = self.lora_down(x)
        scale = self.scale
        if self.training:
            if self.dropout:
                h = F.dropout(h, p=self.dropout)
            if self.rank_dropout:
                # drop whole ranks per sample; mask (B, r) broadcast over tokens or pixels
                keep = torch.rand((h.shape[0], self.lora_dim), device=h.device) > self.rank_dropout
                if h.dim() == 3:  # (B, tokens, r)
                    keep = keep.unsqueeze(1)
                elif h.dim() == 4:  # (B, r, H, W)
                    keep = keep[:, :, None, None]
                h = h * keep.to(h.dtype)
                # sd-scripts: scale as if the rank had shrunk, by 1/(1-p) rather than by the mask's mean
                scale = scale / (1.0 - self.rank_dropout)
        out = self.lora_up(h)
        if self.training and self.module_dropout:
            keep_module = (torch.rand((), device=out.device) >= self.module_dropout).to(out.dtype)
            out = out * keep_module
        return out * (self.multiplier * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._org_forward is None:
            raise RuntimeError(f"{self.lora_name} is not applied; call apply() first")
        return self._org_forward(x) + self.lora_delta(x)

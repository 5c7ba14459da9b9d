"""What each `Optimizer` choice is: its class, the package that has it, and the arguments it gets
unless optim.optimizer_args says otherwise. Data only: the rulebook reads which package an option
needs (without importing it), engine/run/optim.py builds the optimizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.config.schema import Optimizer


@dataclass(frozen=True)
class OptimizerSpec:
    class_path: str  # "module:Class" of the optimizer
    package: str | None  # import name of the package it needs (None: torch itself)
    pip_name: str | None
    defaults: dict[str, Any]


REGISTRY: dict[Optimizer, OptimizerSpec] = {
    Optimizer.ADAMW: OptimizerSpec("torch.optim:AdamW", None, None, {}),
    Optimizer.ADAMW8BIT: OptimizerSpec("bitsandbytes.optim:AdamW8bit", "bitsandbytes", "bitsandbytes", {}),
    Optimizer.LION: OptimizerSpec("lion_pytorch:Lion", "lion_pytorch", "lion-pytorch", {}),
    Optimizer.LION8BIT: OptimizerSpec("bitsandbytes.optim:Lion8bit", "bitsandbytes", "bitsandbytes", {}),
    # sd-scripts' SGDNesterov: momentum 0.9 unless given, Nesterov on
    Optimizer.SGD_NESTEROV: OptimizerSpec("torch.optim:SGD", None, None, {"momentum": 0.9, "nesterov": True}),
    Optimizer.SGD_NESTEROV8BIT: OptimizerSpec(
        "bitsandbytes.optim:SGD8bit", "bitsandbytes", "bitsandbytes", {"momentum": 0.9, "nesterov": True}
    ),
    Optimizer.DADAPT_ADAM: OptimizerSpec("dadaptation:DAdaptAdam", "dadaptation", "dadaptation", {}),
    Optimizer.PRODIGY: OptimizerSpec("prodigyopt:Prodigy", "prodigyopt", "prodigyopt", {}),
    # A fixed learning rate driven by our scheduler: Adafactor's own relative step would ignore the
    # learning rate and scheduler the user chose. Set relative_step=True in optimizer_args to get it.
    Optimizer.ADAFACTOR: OptimizerSpec(
        "transformers.optimization:Adafactor",
        "transformers",
        "transformers",
        {"relative_step": False, "scale_parameter": False, "warmup_init": False},
    ),
}

"""Optimizers by name: one small builder per `Optimizer` entry, and the package each one needs.

`check_available` runs in the preflight, before any model loads, so a missing package costs the
user a message with the install command, not a failed night.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.config import Optimizer
from engine.errors import ConfigError, MissingPackageError


@dataclass(frozen=True)
class OptimizerSpec:
    package: str | None  # import name of the package it needs (None: torch itself)
    pip_name: str | None
    build: Callable[[list[dict], dict[str, Any]], Any]
    defaults: dict[str, Any]


def _adamw(groups, kw):
    import torch

    return torch.optim.AdamW(groups, **kw)


def _bnb(class_name: str):
    def build(groups, kw):
        import bitsandbytes as bnb

        return getattr(bnb.optim, class_name)(groups, **kw)

    return build


def _lion(groups, kw):
    from lion_pytorch import Lion

    return Lion(groups, **kw)


def _sgd(groups, kw):
    import torch

    return torch.optim.SGD(groups, **kw)


def _dadapt_adam(groups, kw):
    from dadaptation import DAdaptAdam

    return DAdaptAdam(groups, **kw)


def _prodigy(groups, kw):
    from prodigyopt import Prodigy

    return Prodigy(groups, **kw)


def _adafactor(groups, kw):
    from transformers.optimization import Adafactor

    return Adafactor(groups, **kw)


REGISTRY: dict[Optimizer, OptimizerSpec] = {
    Optimizer.ADAMW: OptimizerSpec(None, None, _adamw, {}),
    Optimizer.ADAMW8BIT: OptimizerSpec("bitsandbytes", "bitsandbytes", _bnb("AdamW8bit"), {}),
    Optimizer.LION: OptimizerSpec("lion_pytorch", "lion-pytorch", _lion, {}),
    Optimizer.LION8BIT: OptimizerSpec("bitsandbytes", "bitsandbytes", _bnb("Lion8bit"), {}),
    # sd-scripts' SGDNesterov: momentum 0.9 unless given, Nesterov on
    Optimizer.SGD_NESTEROV: OptimizerSpec(None, None, _sgd, {"momentum": 0.9, "nesterov": True}),
    Optimizer.SGD_NESTEROV8BIT: OptimizerSpec(
        "bitsandbytes", "bitsandbytes", _bnb("SGD8bit"), {"momentum": 0.9, "nesterov": True}
    ),
    Optimizer.DADAPT_ADAM: OptimizerSpec("dadaptation", "dadaptation", _dadapt_adam, {}),
    Optimizer.PRODIGY: OptimizerSpec("prodigyopt", "prodigyopt", _prodigy, {}),
    # A fixed learning rate driven by our scheduler: Adafactor's own relative step would ignore the
    # learning rate and scheduler the user chose. Set relative_step=True in optimizer_args to get it.
    Optimizer.ADAFACTOR: OptimizerSpec(
        "transformers",
        "transformers",
        _adafactor,
        {"relative_step": False, "scale_parameter": False, "warmup_init": False},
    ),
}


def check_available(name: Optimizer) -> None:
    spec = REGISTRY[name]
    if spec.package and importlib.util.find_spec(spec.package) is None:
        raise MissingPackageError(
            f"optim.optimizer={name.value} needs the '{spec.pip_name}' package, which is not installed: "
            f"run `.venv/bin/pip install {spec.pip_name}` (or pick another optimizer)"
        )


def parse_optimizer_args(raw: dict[str, Any]) -> dict[str, Any]:
    """Values as the field writes them: LETS stored strings ("0.1", "0.9,0.99", "True")."""
    parsed: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            text = value.strip()
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                if text.lower() in ("true", "false"):
                    value = text.lower() == "true"
                else:
                    raise ConfigError(
                        f"optim.optimizer_args.{key}={raw[key]!r} is not a number, a list of numbers or "
                        "true/false; write it like 0.01, \"0.9,0.99\" or true"
                    ) from None
        parsed[key] = value
    return parsed


def optimizer_kwargs(name: Optimizer, raw_args: dict[str, Any]) -> dict[str, Any]:
    return {**REGISTRY[name].defaults, **parse_optimizer_args(raw_args)}


def build_optimizer(name: Optimizer, param_groups: list[dict], raw_args: dict[str, Any], *, lr: float):
    """`lr` is the default for groups without their own (some optimizers require it, and LR
    schedules that end at an absolute value are relative to it)."""
    check_available(name)
    kwargs = {"lr": lr, **optimizer_kwargs(name, raw_args)}
    try:
        return REGISTRY[name].build(param_groups, kwargs)
    except TypeError as exc:  # an argument the optimizer does not take
        raise ConfigError(f"optim.optimizer_args {kwargs} do not fit {name.value}: {exc}") from None


def describe_optimizer(optimizer: Any, name: Optimizer, raw_args: dict[str, Any]) -> str:
    """ss_optimizer as sd-scripts writes it: `module.Class(key=value,...)`."""
    cls = type(optimizer)
    args = ",".join(f"{k}={v}" for k, v in parse_optimizer_args(raw_args).items())
    return f"{cls.__module__}.{cls.__name__}" + (f"({args})" if args else "")

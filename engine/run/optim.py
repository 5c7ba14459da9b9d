"""Building the optimizer a config names (engine/config/optimizers.py says which class and
package), and checking its arguments against the class before training (preflight)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from typing import Any

from engine.config.optimizers import REGISTRY
from engine.config.schema import Optimizer
from engine.errors import ConfigError, MissingPackageError
from engine.problems import Problem
from engine.quiet import quiet_heavy_imports


def optimizer_class(name: Optimizer) -> type:
    quiet_heavy_imports()  # preflight imports bitsandbytes here, before any run has started
    module, _, attr = REGISTRY[name].class_path.partition(":")
    return getattr(importlib.import_module(module), attr)


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
    if name == Optimizer.ADAFACTOR and kwargs.get("relative_step"):
        # Adafactor's own step size: it refuses a learning rate (sd-scripts drops the groups' rates
        # too, train_util.get_optimizer); the configured one is kept for the schedule to report
        kwargs["lr"] = None
        param_groups = [{k: v for k, v in group.items() if k != "lr"} for group in param_groups]
    try:
        optimizer = optimizer_class(name)(param_groups, **kwargs)
    except TypeError as exc:  # an argument the optimizer does not take (preflight names them first)
        raise ConfigError(f"optim.optimizer_args {kwargs} do not fit {name.value}: {exc}") from None
    if kwargs["lr"] is None:
        optimizer.defaults["initial_lr"] = lr
    return optimizer


def argument_problems(name: Optimizer, raw_args: dict[str, Any]) -> list[Problem]:
    """optim.optimizer_args that the optimizer would refuse: values that are not numbers, lists or
    true/false, and names its constructor does not take. Imports the optimizer's package, so it
    runs in preflight, once the package is known to be there."""
    try:
        parsed = parse_optimizer_args(raw_args)
    except ConfigError as err:
        return [Problem("", str(err))]
    try:
        signature = inspect.signature(optimizer_class(name))
    except (ImportError, AttributeError, ValueError, TypeError):
        return []  # a missing package is the rulebook's problem; an opaque signature is checked at build
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    takes = [n for n, p in params.items() if n not in ("self", "params") and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    return [
        Problem(
            f"optim.optimizer_args.{key}",
            f"{name.value} takes no argument named {key!r}",
            f"remove it; {name.value} takes {', '.join(takes)}",
            value,
        )
        for key, value in parsed.items()
        if key not in params
    ]


def describe_optimizer(optimizer: Any, name: Optimizer, raw_args: dict[str, Any]) -> str:
    """ss_optimizer as sd-scripts writes it: `module.Class(key=value,...)`."""
    cls = type(optimizer)
    args = ",".join(f"{k}={v}" for k, v in parse_optimizer_args(raw_args).items())
    return f"{cls.__module__}.{cls.__name__}" + (f"({args})" if args else "")

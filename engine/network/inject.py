"""Build a LoRA/LoCon network for a base model, apply it, train it, save and reload its weights.

    network = create_network(components, cfg.network, train_unet=True, train_text_encoder=True)
    network.apply()                       # base layers now route through the LoRA modules
    optimizer = AdamW(network.param_groups(unet_lr=1e-4, text_encoder_lr=5e-5))
    ...
    save_lora_file(path, network.kohya_state_dict(), metadata, dtype=torch.float16, fmt="safetensors")

The network's own state_dict is the kohya file layout (`<name>.lora_down.weight`,
`<name>.lora_up.weight`, `<name>.alpha`); the base models' state_dicts are never changed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from engine.config.schema import NetworkConfig, NetworkType
from engine.errors import ConfigError, ModelError
from engine.models.components import BaseComponents
from engine.network.lora_file import load_lora_file
from engine.network.modules import LoraModule
from engine.network.names import (
    LayerKind,
    layer_kind,
    text_encoder_prefixes,
    text_encoder_targets,
    unet_targets,
)

#: (kohya name, layer) -> (rank, alpha) for that layer, or None to leave the layer without a LoRA
RankFn = Callable[[str, nn.Module], "tuple[int, float] | None"]

_TENSOR_SUFFIXES = ("lora_down.weight", "lora_up.weight", "alpha")
_SHOWN = 8  # names listed in an error message


def wrap_targets(targets, rank_for: RankFn, make: Callable[..., nn.Module]) -> list:
    """`make(target, dim, alpha)` for every target that `rank_for` gives a rank (None skips it)."""
    built = []
    for target in targets:
        rank = rank_for(target.name, target.module)
        if rank is not None:
            built.append(make(target, *rank))
    return built


def default_rank_for(net_cfg: NetworkConfig) -> RankFn:
    """Linear and 1x1 layers get (dim, alpha); 3x3 convs get (conv_dim, conv_alpha) when conv_dim is set.

    A missing conv_alpha is 1.0, as in sd-scripts (not conv_dim: that would be scale 1).
    """

    def rank_for(name: str, module: nn.Module) -> tuple[int, float] | None:
        if layer_kind(module) == LayerKind.CONV:
            if net_cfg.conv_dim is None:
                return None
            return net_cfg.conv_dim, 1.0 if net_cfg.conv_alpha is None else net_cfg.conv_alpha
        return net_cfg.dim, net_cfg.alpha

    return rank_for


class LoraNetwork(nn.Module):
    """The LoRA modules of one run, registered under their kohya names."""

    def __init__(self, text_encoder_loras: Sequence[LoraModule], unet_loras: Sequence[LoraModule]):
        super().__init__()
        # plain lists of the same modules (registered once, below, under their names)
        self.text_encoder_loras = list(text_encoder_loras)
        self.unet_loras = list(unet_loras)
        for module in self.text_encoder_loras + self.unet_loras:
            if module.lora_name in self._modules:
                raise ValueError(f"two LoRA modules are named {module.lora_name}")
            self.add_module(module.lora_name, module)

    @property
    def loras(self) -> list[LoraModule]:
        return self.text_encoder_loras + self.unet_loras

    @property
    def applied(self) -> bool:
        return any(m.applied for m in self.loras)

    def apply(self) -> None:
        """Route every wrapped base layer through its LoRA module (and freeze the layer's weights)."""
        if self.applied:
            raise RuntimeError("the LoRA network is already applied")
        for module in self.loras:
            module.apply()

    def remove(self) -> None:
        """Restore every base layer's own forward; the LoRA weights stay in this network."""
        for module in self.loras:
            if module.applied:
                module.remove()

    def set_multiplier(self, multiplier: float) -> None:
        for module in self.loras:
            module.multiplier = multiplier

    def param_groups(self, unet_lr: float, text_encoder_lr: float | Sequence[float]) -> list[dict]:
        """Optimizer param groups: text encoder(s) first, then the U-Net, each with its "lr".

        `text_encoder_lr` may be one value per text encoder (SDXL: CLIP-L, OpenCLIP-G), giving one
        group each. A group with no modules, or with lr 0, is left out (sd-scripts does the same:
        lr 0 means "do not train this part"). Each group has a "name" for logging.
        """
        groups: list[dict] = []
        te_loras = self.text_encoder_loras
        if isinstance(text_encoder_lr, (int, float)):
            groups.append(self._group("text_encoder", te_loras, text_encoder_lr))
        else:
            prefixes = sorted({m.lora_name.split("_text_model_", 1)[0] for m in te_loras})
            if len(text_encoder_lr) != len(prefixes):
                raise ValueError(
                    f"{len(text_encoder_lr)} text encoder learning rates for {len(prefixes)} text encoders"
                )
            for i, (prefix, lr) in enumerate(zip(prefixes, text_encoder_lr), start=1):
                chosen = [m for m in te_loras if m.lora_name.startswith(prefix + "_")]
                groups.append(self._group(f"text_encoder{i}", chosen, lr))
        groups.append(self._group("unet", self.unet_loras, unet_lr))
        return [g for g in groups if g["params"] and g["lr"] != 0]

    @staticmethod
    def _group(name: str, modules: Sequence[LoraModule], lr: float) -> dict:
        return {"name": name, "lr": lr, "params": [p for m in modules for p in m.parameters()]}

    def kohya_state_dict(self) -> dict[str, torch.Tensor]:
        """`<name>.lora_down.weight`, `<name>.lora_up.weight`, `<name>.alpha` for every module (detached)."""
        return {key: value.detach() for key, value in self.state_dict().items()}

    def load_weights(self, source: Path | str | Mapping[str, torch.Tensor]) -> None:
        """Load a kohya LoRA (a file path or a state dict) into this network, strictly.

        The file must hold exactly this network's modules with the same shapes; anything else is a
        `ModelError` listing the differences. An old file without `.alpha` keys gets alpha = rank,
        as sd-scripts reads it. Alphas from the file replace the configured ones.
        """
        if isinstance(source, Mapping):
            label, state_dict = "the LoRA weights", dict(source)
        else:
            label, (state_dict, _) = str(source), load_lora_file(source)
        modules = _group_keys(state_dict, label)
        self._check_names(modules, label)
        self._check_shapes(modules, label)
        with torch.no_grad():
            for name, tensors in modules.items():
                module: LoraModule = self._modules[name]  # type: ignore[assignment]
                module.lora_down.weight.copy_(tensors["lora_down.weight"])
                module.lora_up.weight.copy_(tensors["lora_up.weight"])
                alpha = tensors.get("alpha")
                module.set_alpha(float(alpha) if alpha is not None else None)

    def _check_names(self, modules: Mapping[str, dict], label: str) -> None:
        ours, theirs = set(self._modules), set(modules)
        missing, unexpected = sorted(ours - theirs), sorted(theirs - ours)
        if not missing and not unexpected:
            return
        hints = []
        if unexpected and all(n.startswith("lora_te") for n in unexpected) and not self.text_encoder_loras:
            hints.append("the file also trains the text encoder: set network.train_on=both")
        if unexpected and all(n.startswith("lora_unet") for n in unexpected) and not self.unet_loras:
            hints.append("the file also trains the U-Net: set network.train_on=both")
        if not hints:
            hints.append(
                "the LoRA was made for another model family/architecture, or with other network "
                "settings (LoRA vs LoCon, text encoder trained or not)"
            )
        raise ModelError(
            f"{label} does not fit this network: {len(missing)} of its modules are missing from the "
            f"file and {len(unexpected)} in the file are unknown here; {'; '.join(hints)}.\n"
            f"  missing from the file: {_some(missing)}\n"
            f"  not in this network: {_some(unexpected)}"
        )

    def _check_shapes(self, modules: Mapping[str, dict], label: str) -> None:
        wrong = []
        for name, tensors in modules.items():
            module: LoraModule = self._modules[name]  # type: ignore[assignment]
            for suffix in ("lora_down.weight", "lora_up.weight"):
                expected = tuple(module.get_parameter(suffix).shape)
                found = tuple(tensors[suffix].shape) if suffix in tensors else None
                if found != expected:
                    wrong.append(f"{name}.{suffix} {found} (expected {expected})")
        if wrong:
            raise ModelError(
                f"{label}: {len(wrong)} tensors have other shapes than this network's; the file was "
                f"trained with another rank (set network.dim_from_weights=true to take the file's "
                f"ranks) or for another model: {_some(wrong)}"
            )


def create_network(
    components: BaseComponents,
    net_cfg: NetworkConfig,
    *,
    train_unet: bool,
    train_text_encoder: bool,
    rank_for: RankFn | None = None,
) -> LoraNetwork:
    """LoRA modules for the base model's U-Net and/or text encoders (not yet applied).

    LoCon (`net_cfg.type == locon`) also targets the U-Net's resnet and up/downsample layers.
    `rank_for(name, layer)` picks each layer's (rank, alpha), or None to skip it; it defaults to
    `default_rank_for(net_cfg)`. Dropouts come from `net_cfg`.
    """
    if net_cfg.type not in (NetworkType.LORA, NetworkType.LOCON):
        raise ConfigError(f"network.type={net_cfg.type.value} is not supported by this trainer yet: use lora or locon")
    if not train_unet and not train_text_encoder:
        raise ConfigError("nothing to train: train the U-Net, the text encoder, or both")
    rank_for = rank_for or default_rank_for(net_cfg)
    options = dict(dropout=net_cfg.dropout, rank_dropout=net_cfg.rank_dropout, module_dropout=net_cfg.module_dropout)

    def build(targets) -> list[LoraModule]:
        return wrap_targets(targets, rank_for, lambda t, dim, alpha: LoraModule(t.name, t.module, dim, alpha, **options))

    te_loras: list[LoraModule] = []
    if train_text_encoder:
        prefixes = text_encoder_prefixes(components.family)
        if len(prefixes) != len(components.text_encoders):
            raise ValueError(
                f"a {components.family.value} model has {len(prefixes)} text encoders, "
                f"got {len(components.text_encoders)}"
            )
        for encoder, prefix in zip(components.text_encoders, prefixes):
            te_loras += build(text_encoder_targets(encoder, prefix))
    unet_loras: list[LoraModule] = []
    if train_unet:
        locon = net_cfg.type == NetworkType.LOCON
        unet_loras = build(unet_targets(components.unet, components.family, locon=locon))
    return LoraNetwork(te_loras, unet_loras)


def _group_keys(state_dict: Mapping[str, torch.Tensor], label: str) -> dict[str, dict[str, torch.Tensor]]:
    """{module name: {"lora_down.weight": t, "lora_up.weight": t, "alpha": t}} from a flat kohya dict."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    foreign = []
    for key, tensor in state_dict.items():
        name, _, suffix = key.partition(".")
        if suffix not in _TENSOR_SUFFIXES:
            foreign.append(key)
            continue
        modules.setdefault(name, {})[suffix] = tensor
    if foreign:
        raise ModelError(
            f"{label} is not a plain kohya LoRA/LoCon file: it has keys such as {_some(sorted(foreign))} "
            f"(LoHa, LoKr, DoRA and diffusers/PEFT-format files are not supported here)"
        )
    return modules


def read_dim_alpha(state_dict: Mapping[str, torch.Tensor]) -> tuple[int, float, int | None, float | None]:
    """(dim, alpha, conv_dim, conv_alpha) of a kohya LoRA state dict; conv_* are None without 3x3 convs.

    Linear and 1x1 modules give dim/alpha, 3x3 (LoCon) modules conv_dim/conv_alpha. A file whose
    modules of one kind differ in rank or alpha (block-wise dims) is a `ModelError`: build the
    network with `rank_for=ranks_from_state_dict(state_dict)` instead.
    """
    linear: Counter[tuple[int, float]] = Counter()
    conv: Counter[tuple[int, float]] = Counter()
    for name, tensors in _group_keys(state_dict, "the LoRA weights").items():
        down = tensors.get("lora_down.weight")
        if down is None:
            raise ModelError(f"the LoRA weights have no {name}.lora_down.weight")
        dim, alpha = _dim_alpha(tensors)
        is_conv = down.dim() == 4 and tuple(down.shape[2:]) != (1, 1)
        (conv if is_conv else linear)[(dim, alpha)] += 1
    if not linear:
        raise ModelError("the LoRA weights hold no Linear/1x1 modules; cannot read dim/alpha from them")
    for kind, counts in (("linear", linear), ("conv", conv)):
        if len(counts) > 1:
            raise ModelError(
                f"the LoRA's {kind} modules use several (rank, alpha) pairs {sorted(counts)} (block-wise "
                f"ranks): take them per module with ranks_from_state_dict instead of one dim/alpha"
            )
    (dim, alpha), = linear
    conv_dim, conv_alpha = next(iter(conv)) if conv else (None, None)
    return dim, alpha, conv_dim, conv_alpha


def ranks_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> RankFn:
    """A `rank_for` that gives each module the rank and alpha it has in `state_dict`, skipping the rest.

    For building a network that fits a file exactly (block-wise ranks, partial files).
    """
    ranks = {name: _dim_alpha(tensors) for name, tensors in _group_keys(state_dict, "the LoRA weights").items()}

    def rank_for(name: str, module: nn.Module) -> tuple[int, float] | None:
        return ranks.get(name)

    return rank_for


def _dim_alpha(tensors: Mapping[str, torch.Tensor]) -> tuple[int, float]:
    dim = int(tensors["lora_down.weight"].shape[0])
    alpha = tensors.get("alpha")
    # an old file without alpha means alpha = rank (scale 1), as sd-scripts reads it
    return dim, float(alpha) if alpha is not None else float(dim)


def _some(items: Sequence[str]) -> str:
    if not items:
        return "none"
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")

"""LoHa and LoKr networks through the optional `lycoris-lora` package (KohakuBlueleaf/LyCORIS).

The math, the initialisation and the tensor names of each module are LyCORIS's own (`LohaModule`,
`LokrModule`); which layers get one, and their names, are ours (`names.unet_targets`,
`names.text_encoder_targets`), so files carry the kohya names A1111/Forge and ComfyUI expect:
`lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a` for SD1/SD2, SGM names
(`lora_unet_input_blocks_4_1_...`) for SDXL as sd-scripts + LyCORIS write them, and
`lora_te_text_model_...` for the text encoders even with transformers 5 (whose CLIPTextModel lost
the `text_model` level, so LyCORIS' own walker would name them `lora_te_encoder_...`).

Layers: the LoRA set (attention, feed-forward and projections of the U-Net transformers; CLIP
attention and MLP); with network.conv_dim also the LoCon set (resnets, down/upsamplers), 3x3 convs
at conv_dim. Ranks and alphas come from the same `rank_for` as LoRA (block_dims work too).
Modules run in LyCORIS' bypass mode: the update is added to the layer's output, never merged into
a (possibly fp16) copy of the base weight; the saved tensors are the same either way.

Not offered: network.dropout (LyCORIS has no neuron dropout for LoHa/LoKr), Tucker/CP
decomposition and DoRA (LyCORIS' defaults: no Tucker). LoKr's factor is network.lokr_factor.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import torch

from engine.config.schema import NetworkConfig, NetworkType
from engine.errors import ConfigError, MissingPackageError, ModelError
from engine.models.components import BaseComponents
from engine.network.inject import LoraNetwork, RankFn, default_rank_for, wrap_targets
from engine.network.names import (
    text_encoder_prefixes,
    text_encoder_targets,
    unet_targets,
)

PACKAGE = "lycoris-lora"
MIN_MAJOR = 3
INSTALL_HINT = "pip install lycoris-lora  (or: pip install -e '.[lycoris]')"
#: LyCORIS' algo names, as sd-scripts records them in ss_network_args
ALGOS = {NetworkType.LOHA: "loha", NetworkType.LOKR: "lokr"}


def lycoris_module_class(network_type: NetworkType) -> type:
    """LyCORIS' module class for LoHa or LoKr; MissingPackageError when lycoris-lora is absent or too old."""
    if network_type not in ALGOS:
        raise ValueError(f"{network_type} is not a LyCORIS network type")
    version = installed_version()
    if version is None:
        raise MissingPackageError(f"network.type={network_type.value} needs the {PACKAGE} package: {INSTALL_HINT}")
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if major < MIN_MAJOR:
        raise MissingPackageError(
            f"network.type={network_type.value} needs {PACKAGE}>={MIN_MAJOR}, found {version}: "
            f"pip install -U {PACKAGE}"
        )
    from lycoris.modules.loha import LohaModule
    from lycoris.modules.lokr import LokrModule

    _route_lycoris_logging()
    return {NetworkType.LOHA: LohaModule, NetworkType.LOKR: LokrModule}[network_type]


def installed_version() -> str | None:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def _route_lycoris_logging() -> None:
    """LyCORIS logs to stdout through its own handler, which would tear through the progress display;
    send its records to the root logger like every other library's."""
    log = logging.getLogger("LyCORIS")
    for handler in list(log.handlers):
        log.removeHandler(handler)
    log.propagate = True


class LycorisNetwork(LoraNetwork):
    """LoHa/LoKr modules under their kohya names; the same interface as `LoraNetwork`."""

    def __init__(self, text_encoder_loras, unet_loras, network_type: NetworkType):
        super().__init__(text_encoder_loras, unet_loras)
        self.network_type = network_type
        self._applied = False

    @property
    def applied(self) -> bool:
        return self._applied

    def apply(self) -> None:
        if self._applied:
            raise RuntimeError("the LyCORIS network is already applied")
        for module in self.loras:
            module.apply_to()
        self._applied = True

    def remove(self) -> None:
        # restore in reverse order: LyCORIS keeps a wrapper chain per layer
        for module in reversed(self.loras):
            module.restore()
        self._applied = False

    def load_weights(self, source: Path | str | Mapping[str, torch.Tensor]) -> None:
        """Load a LoHa/LoKr file made for exactly this network (same modules, same shapes)."""
        from engine.network.lora_file import load_lora_file

        if isinstance(source, Mapping):
            label, state_dict = "the LyCORIS weights", dict(source)
        else:
            label, (state_dict, _) = str(source), load_lora_file(source)
        ours = self.state_dict()
        missing = sorted(set(ours) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(ours))
        wrong = sorted(k for k in set(ours) & set(state_dict) if tuple(ours[k].shape) != tuple(state_dict[k].shape))
        if missing or unexpected or wrong:
            raise ModelError(
                f"{label} does not fit this {self.network_type.value} network (another algorithm, rank, "
                f"model or module set): missing {missing[:5]}, unexpected {unexpected[:5]}, other shapes {wrong[:5]}"
            )
        self.load_state_dict(state_dict, strict=True)

    @torch.no_grad()
    def apply_max_norm(self, max_norm: float, device=None) -> tuple[int, float, float]:
        """Max-norm with LyCORIS' own per-module rule (it rescales each module's scalar); same
        return values as `max_norm.apply_max_norm`."""
        if max_norm <= 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        scaled, norms = 0, []
        for module in self.loras:
            was_scaled, norm = module.apply_max_norm(max_norm, device)
            scaled += int(bool(was_scaled))
            norms.append(float(norm))
        if not norms:
            return 0, 0.0, 0.0
        return scaled, sum(norms) / len(norms), max(norms)


def create_lycoris_network(
    components: BaseComponents,
    net_cfg: NetworkConfig,
    *,
    train_unet: bool,
    train_text_encoder: bool,
    rank_for: RankFn | None = None,
) -> LycorisNetwork:
    """LoHa/LoKr modules for the base model (not yet applied); see the module docstring."""
    if net_cfg.type not in ALGOS:
        raise ValueError(f"create_lycoris_network builds loha/lokr networks, not {net_cfg.type.value}")
    if not train_unet and not train_text_encoder:
        raise ConfigError("nothing to train: train the U-Net, the text encoder, or both")
    module_class = lycoris_module_class(net_cfg.type)
    rank_for = rank_for or default_rank_for(net_cfg)

    # LokrModule takes `factor`; LohaModule has no such argument
    extra = {"factor": net_cfg.lokr_factor} if net_cfg.type == NetworkType.LOKR else {}

    def make(target, dim: int, alpha: float):
        return module_class(
            target.name,
            target.module,
            multiplier=1.0,
            lora_dim=dim,
            alpha=alpha,
            dropout=0.0,
            rank_dropout=net_cfg.rank_dropout or 0.0,
            module_dropout=net_cfg.module_dropout or 0.0,
            use_tucker=False,
            bypass_mode=True,
            **extra,
        )

    def build(targets) -> list:
        return wrap_targets(targets, rank_for, make)

    te_modules: list = []
    if train_text_encoder:
        for encoder, prefix in zip(components.text_encoders, text_encoder_prefixes(components.family), strict=True):
            te_modules += build(text_encoder_targets(encoder, prefix))
    unet_modules: list = []
    if train_unet:
        with_convs = net_cfg.conv_dim is not None
        unet_modules = build(unet_targets(components.unet, components.family, locon=with_convs))
    return LycorisNetwork(te_modules, unet_modules, net_cfg.type)


def lycoris_network_args(net_cfg: NetworkConfig) -> dict[str, str]:
    """The ss_network_args entries sd-scripts writes for a LyCORIS run (`--network_args algo=loha ...`),
    to merge into metadata.network_args; ss_network_module is "lycoris.kohya"."""
    if net_cfg.type not in ALGOS:
        return {}
    args = {"algo": ALGOS[net_cfg.type]}
    if net_cfg.type == NetworkType.LOKR and net_cfg.lokr_factor != -1:
        args["factor"] = str(net_cfg.lokr_factor)
    return args

"""The network a flat file describes: its module, its type and its `network_args`.

sd-scripts picks the network by `network_module` (`networks.lora`, LyCORIS' `lycoris.kohya` with
an `algo` in `network_args`), LETS by its `lyco`/`locon` switches, the kohya_ss GUI by `LoRA_type`
("Standard", "Kohya LoCon", "LyCORIS/LoHa", ...). This module reads all three into network.type
and the network fields; types and arguments lora-wizard does not offer are refused by name
(engine/config/not_offered.py).
"""

from __future__ import annotations

from typing import Any

from engine.config.flat_values import key_value_args, number_list, scalar_or_list
from engine.config.not_offered import (
    NOT_OFFERED,
    NOT_OFFERED_ALGOS,
    NOT_OFFERED_MODULES,
    NOT_OFFERED_NETWORKS,
    refusal,
    refusal_fix,
)
from engine.problems import Problem

_LYCORIS_ALGOS = {"lora": "locon", "locon": "locon", "loha": "loha", "lokr": "lokr"}
_NUMBERS = ("conv_dim", "conv_alpha", "rank_dropout", "module_dropout", "block_lr_zero_threshold")
_LISTS = ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas", "down_lr_weight", "mid_lr_weight", "up_lr_weight")
_KOHYA_MODULES = ("networks.lora", "sd_scripts.networks.lora")


def read_network(raw: dict[str, Any], network: dict[str, Any], dropped: list[str], off: list[str]) -> list[Problem]:
    """Fill `network` (the config's network section, already holding the plain keys) from the
    file's network module, type switches and network_args; return the problems."""
    gui_type = raw.get("LoRA_type")
    lycoris, refused = _network_module(raw, gui_type)
    if refused is not None:
        return [refused]
    if raw.get("locon"):  # LETS' pre-LyCORIS LoCon switch
        network["type"] = "locon"
        for old, new in (("locon_dim", "conv_dim"), ("locon_alpha", "conv_alpha")):
            if raw.get(old) is not None:
                network[new] = raw[old]
    try:
        args = key_value_args(raw.get("network_args"))
    except (TypeError, ValueError) as exc:
        return [Problem("network_args", str(exc), "write it as key=value items", raw.get("network_args"))]
    algo, problems = _read_args(args, network, off)
    if problems:
        return problems
    _settle_type(network, gui_type, lycoris, algo, dropped)
    _lokr_factor(raw, network, dropped)
    if network.get("type") == "lokr":
        for name in ("dim", "conv_dim"):
            if _literal(network.get(name) or 0) > 1024:
                return [Problem(f"network {name}", "asks for LyCORIS' full-matrix LoKr (a rank above any layer's size), "
                                "which lora-wizard does not offer", "give a rank up to 1024", network[name])]
    if network.get("type") in ("loha", "lokr") and network.pop("dropout", None) is not None:
        dropped.append("network_dropout")  # LyCORIS warns and ignores a neuron dropout for LoHa/LoKr
    return []


def _network_module(raw: dict[str, Any], gui_type: Any) -> tuple[bool, Problem | None]:
    """Whether the file trains a LyCORIS network, or why its network is refused."""
    if isinstance(gui_type, str) and gui_type in NOT_OFFERED_NETWORKS:
        return False, Problem("LoRA_type", NOT_OFFERED_NETWORKS[gui_type], "choose Standard, Kohya LoCon, LyCORIS/LoHa or LyCORIS/LoKr", gui_type)
    module = str(raw.get("network_module") or "networks.lora")
    # an `algo` is LyCORIS' own argument: LETS' TOML names no module and gave lycoris.kohya for it
    # (modules/validator.py `validate_args`)
    has_algo = isinstance(raw.get("network_args"), dict) and "algo" in raw["network_args"]
    lycoris = bool(raw.get("lyco")) or module.endswith("lycoris.kohya") or (has_algo and "network_module" not in raw)
    if module in NOT_OFFERED_MODULES:
        return lycoris, Problem("network_module", NOT_OFFERED_MODULES[module], "use networks.lora or lycoris.kohya", module)
    if not lycoris and module not in _KOHYA_MODULES:
        return lycoris, Problem("network_module", "is not a network lora-wizard offers", "use networks.lora or lycoris.kohya", module)
    return lycoris, None


def _read_args(args: dict[str, Any], network: dict[str, Any], off: list[str]) -> tuple[str | None, list[Problem]]:
    """network_args into `network`; returns LyCORIS' `algo` (if given) and the refused arguments."""
    problems: list[Problem] = []
    algo = None
    for key, value in args.items():
        if key in _NUMBERS:
            network[key] = value
        elif key == "dropout":  # LyCORIS' name of the neuron dropout
            network["dropout"] = value
        elif key in _LISTS:
            network[key] = scalar_or_list(value) if key == "mid_lr_weight" else number_list(value)
        elif key == "algo":
            algo = str(value).lower()
        elif key == "factor":
            network["lokr_factor"] = value
        elif key in NOT_OFFERED:
            if NOT_OFFERED[key].is_off(_literal(value)):
                off.append(f"network_args {key}")
            else:
                problems.append(Problem(f"network_args {key}", refusal(key, value), refusal_fix(key), value))
        else:
            problems.append(Problem(f"network_args {key}", "is not an argument lora-wizard's networks take", "remove it", value))
    if algo in NOT_OFFERED_ALGOS:
        problems.append(Problem("network_args algo", NOT_OFFERED_ALGOS[algo], "use algo=locon, loha or lokr", algo))
    return algo, problems


def _settle_type(network: dict[str, Any], gui_type: Any, lycoris: bool, algo: str | None, dropped: list[str]) -> None:
    """network.type from the GUI's LoRA_type, LyCORIS' algo or sd-scripts' conv_dim."""
    if gui_type is not None and network.get("type") == "lora":
        # The GUI keeps conv_dim/conv_alpha for every type but passes them only for LoCon types.
        for name in ("conv_dim", "conv_alpha"):
            if network.pop(name, None) is not None:
                dropped.append(name)
    elif lycoris:
        # LyCORIS' "lora" algorithm is LoCon; without conv_dim it has no conv part, i.e. plain LoRA.
        kind = _LYCORIS_ALGOS.get(algo or "lora", algo)
        network.setdefault("type", "lora" if kind == "locon" and not network.get("conv_dim") else kind)
    elif network.get("conv_dim") and network.get("type", "lora") == "lora":
        network["type"] = "locon"  # sd-scripts' LoRA with conv_dim *is* LoCon


def _lokr_factor(raw: dict[str, Any], network: dict[str, Any], dropped: list[str]) -> None:
    """LoKr's `factor`: the GUI writes it for every type (-1 when unused) and passes it for LoKr only."""
    value = network.pop("lokr_factor", raw.get("factor"))
    if value is None or _literal(value) == -1:
        return
    if network.get("type") == "lokr":
        network["lokr_factor"] = _literal(value)
    else:
        dropped.append("factor")


def _literal(value: Any) -> Any:
    """network_args values arrive as text ("False", "-1")."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text
    return value

"""kohya-compatible LoRA/LoCon networks: module selection and names, injection, file I/O.

`names` picks the layers and gives them kohya names, `modules` is one LoRA module, `inject` builds,
applies and (re)loads a whole network, `lora_file` reads and writes the files.
"""

from engine.network.inject import (
    LoraNetwork,
    RankFn,
    create_network,
    default_rank_for,
    ranks_from_state_dict,
    read_dim_alpha,
)
from engine.network.lora_file import load_lora_file, safetensors_hashes, save_lora_file
from engine.network.modules import LoraModule

__all__ = [
    "LoraModule",
    "LoraNetwork",
    "RankFn",
    "create_network",
    "default_rank_for",
    "load_lora_file",
    "ranks_from_state_dict",
    "read_dim_alpha",
    "safetensors_hashes",
    "save_lora_file",
]

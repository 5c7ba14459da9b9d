"""What a loaded base model hands to the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.config.schema import ModelFamily


@dataclass
class BaseComponents:
    """The parts of a Stable Diffusion checkpoint that LoRA training touches.

    `family` is always resolved (never AUTO). For SD1/SD2 there is one text encoder and one
    tokenizer; for SDXL two of each, in SDXL order (CLIP-L first, OpenCLIP-bigG second).
    """

    family: ModelFamily
    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    source: str
    #: free-form facts shown to the user (e.g. "detected SDXL from conditioner.embedders.1.*")
    notes: list[str] = field(default_factory=list)
    #: the objective the run trains with (engine/models/prediction.py decides it when loading)
    v_prediction: bool = False

"""Captions from BLIP (transformers' BlipForConditionalGeneration), from a folder the user has.

The folder is a saved BLIP captioning model (config.json with model_type "blip", the weights, the
processor and tokenizer files), e.g. a download of Salesforce/blip-image-captioning-large. It is
read with `local_files_only=True` and the Hugging Face hub switched offline: nothing is fetched.

Generation follows kohya-ss/sd-scripts finetune/make_captions.py and its BLIP decoder
(finetune/blip/blip.py): the decoder starts from the prompt "a picture of " and the prompt is cut
from the result; nucleus sampling (top_p 0.9, repetition penalty 1.1) unless beam search is asked
(num_beams, no penalty); max_length 75 and min_length 5 tokens, prompt included; the random
generator is seeded once (42) before the first image.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelError

DEFAULT_PROMPT = "a picture of "
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_PROCESSOR = ("preprocessor_config.json", "processor_config.json")
_TOKENIZER = ("tokenizer.json", "vocab.txt")
_FOLDER_FIX = (
    "a BLIP folder holds config.json, the weights (model.safetensors), preprocessor_config.json and "
    "the tokenizer files, as saved by transformers (e.g. a download of Salesforce/blip-image-captioning-large)"
)


@dataclass(frozen=True)
class BlipOptions:
    beam_search: bool = False
    num_beams: int = 1
    top_p: float = 0.9
    max_length: int = 75
    min_length: int = 5
    seed: int = 42
    prompt: str = DEFAULT_PROMPT
    prefix: str = ""
    suffix: str = ""
    batch_size: int = 1


def check_blip_folder(folder: Path) -> Path:
    """The folder, checked for the files a BLIP captioner needs; a ModelError naming what is missing."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelError(f"BLIP folder {folder}: not a folder; {_FOLDER_FIX}")
    config = folder / "config.json"
    if not config.is_file():
        raise ModelError(f"BLIP folder {folder}: config.json missing; {_FOLDER_FIX}")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as exc:
        raise ModelError(f"{config}: not a JSON model config ({exc}); re-download the model") from None
    if model_type != "blip":
        raise ModelError(
            f"{config}: model_type is {model_type!r}, not 'blip'; give a BLIP captioning model folder "
            "(e.g. Salesforce/blip-image-captioning-large)"
        )
    for kind, names in (("weights", _WEIGHTS), ("image processor settings", _PROCESSOR), ("tokenizer", _TOKENIZER)):
        if not any((folder / name).is_file() for name in names):
            raise ModelError(f"BLIP folder {folder}: no {kind} ({' or '.join(names)}); {_FOLDER_FIX}")
    return folder


def caption_from_output(decoded: str, options: BlipOptions) -> str:
    """The decoded text without the prompt, with the user's prefix and suffix ("" when the model
    gave nothing after the prompt)."""
    prompt = options.prompt.strip()
    text = decoded.strip()
    if prompt and text.lower().startswith(prompt.lower()):
        text = text[len(prompt) :].strip()
    if not text:
        return ""  # nothing generated: no file is written (LabelJob lists the image as failed)
    return f"{options.prefix}{text}{options.suffix}".strip()


class BlipCaptioner:
    """A loaded BLIP model; `label` gives one caption per image (engine.prep.label.Labeler)."""

    def __init__(self, folder: Path, options: BlipOptions | None = None) -> None:
        self.options = options or BlipOptions()
        self.batch_size = self.options.batch_size
        folder = check_blip_folder(folder)
        os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: never reach the hub
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # its load reports and fallbacks are not for the user
        hf_logging.disable_progress_bar()
        try:
            self.processor = BlipProcessor.from_pretrained(folder, local_files_only=True)
            self.model = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"BLIP folder {folder}: cannot load it ({type(exc).__name__}: {exc}); {_FOLDER_FIX}") from None
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.generator_seeded = False

    def generation_settings(self) -> dict:
        o = self.options
        common = {"max_length": o.max_length, "min_length": o.min_length}
        if o.beam_search:
            return {**common, "num_beams": o.num_beams, "do_sample": False}
        return {**common, "do_sample": True, "top_p": o.top_p, "num_beams": 1, "repetition_penalty": 1.1}

    def label(self, images: list) -> list[str]:
        import torch

        if not self.generator_seeded:
            torch.manual_seed(self.options.seed)
            self.generator_seeded = True
        rgb = [image.convert("RGB") for image in images]
        text = [self.options.prompt.strip()] * len(rgb) if self.options.prompt.strip() else None
        inputs = self.processor(images=rgb, text=text, return_tensors="pt").to(self.device)
        with torch.no_grad():
            output = self.model.generate(**inputs, **self.generation_settings())
        decoded = self.processor.batch_decode(output, skip_special_tokens=True)
        return [caption_from_output(line, self.options) for line in decoded]

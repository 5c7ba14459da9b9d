"""What the wizard is expected to ask and to give: the question order users of
LoRA_Easy_Training_Scripts know, the config of Enter everywhere, and model files for its checks."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from engine.config.schema import TrainConfig

# The order of LoRA_Easy_Training_Scripts' questions with the later ones that fit, as the user meets it pressing
# Enter everywhere. Written out here, not derived from wizard.questions, so that a change of order
# is a visible test change. Options the engine refuses for now are not offered.
ALL_DEFAULTS_ORDER = [
    "ask.load_json",
    "model.base_model",
    "dataset.img_folder",
    "saving.output_folder",
    "model.lowram",
    "optim.optimizer",
    "model.family",
    "model.clip_skip",
    "ask.reg_images",
    "ask.resume_lora",
    "dataset.flip_aug",
    "training.batch_size",
    "training.epochs",
    "network.dim",
    "network.alpha",
    "network.type",
    "dataset.resolution",
    "optim.learning_rate",
    "optim.text_encoder_lr",
    "optim.unet_lr",
    "optim.lr_scheduler",
    "optim.lr_scheduler_num_cycles",
    "ask.save_every",
    "dataset.shuffle_caption",
    "ask.keep_tokens",
    "ask.warmup",
    "ask.output_name",
    "saving.training_comment",
    "network.train_on",
    "saving.tag_file",
    "ask.caption_dropout",
    "ask.noise_offset",
    "dataset.bucket_no_upscale",
    "optim.mixed_precision",
    "dataset.cache_latents",
    "ask.min_snr",
    "ask.samples",
    "ask.advanced",
]
# After loading a saved config (as LoRA_Easy_Training_Scripts did): its steps 2-13, then 28-33.
LOADED_DEFAULTS_ORDER = [
    "ask.load_json",
    "ask.load_path",
    "model.base_model",
    "dataset.img_folder",
    "saving.output_folder",
    "model.lowram",
    "optim.optimizer",
    "model.family",
    "model.clip_skip",
    "ask.reg_images",
    "ask.resume_lora",
    "dataset.flip_aug",
    "ask.output_name",
    "saving.training_comment",
    "network.train_on",
    "saving.tag_file",
    "ask.caption_dropout",
    "ask.noise_offset",
    "ask.advanced",
]


def wizard_defaults() -> TrainConfig:
    """What Enter everywhere gives: the config's defaults, with the mixed precision this machine has."""
    from engine.config.defaults import suggested_precision
    from engine.config.machine import this_machine_at_a_glance

    machine = this_machine_at_a_glance()
    return TrainConfig.model_validate({"optim": {"mixed_precision": suggested_precision(machine.cuda, machine.bf16)}})


def write_safetensors(path: Path, keys: list[str]) -> Path:
    """A valid .safetensors file holding one float32 zero per key (enough for family detection)."""
    header = {key: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, key in enumerate(keys)}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4 * len(keys))
    return path

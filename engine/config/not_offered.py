"""Options of sd-scripts, the kohya_ss GUI and LETS that lora-wizard does not offer, as data.

One row per option: the feature it belongs to, what that feature does, and the values that leave
it off. An imported file that leaves such an option off loads (the key is listed once in a note);
one that turns it on is refused with the feature's name, so a real option is never reported as a
typo. Some options only matter together with a switch (decompose_both with a LoKr network, the
FLUX.1 paths with the FLUX.1 checkbox): `used_with` names the switch, and while it is elsewhere the
value is dropped whatever it is, as the GUI itself never passed it on. The GUI's switches and which
options each LoRA type passes to sd-scripts are read from bmaltais/kohya_ss kohya_gui/lora_gui.py
(`train_model`); the option meanings from kohya-ss/sd-scripts library/train_util.py (argument help).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: values that leave any option off
EMPTY: tuple[Any, ...] = (None, False, "", 0, 0.0, [], {})


@dataclass(frozen=True)
class NotOffered:
    feature: str  # the feature's name, as a user would look it up
    does: str  # what it does, in a few words
    off: tuple[Any, ...] = ()  # values meaning "not used", besides those in EMPTY
    used_with: tuple[str, frozenset[Any]] | None = None  # (switch key, its values that use the option)
    instead: str = ""  # the nearest thing lora-wizard offers, if any

    def is_off(self, value: Any) -> bool:
        if isinstance(value, str) and value.strip().lower() in ("false", "none", "0", "0.0", ""):
            return True
        return any(value == off and type(value) is type(off) for off in self.off) or any(
            value == empty and type(value) is type(empty) for empty in EMPTY
        ) or value is None

    def applies(self, raw: dict[str, Any]) -> bool:
        """Whether the file's own switches pass this option on (True without a switch)."""
        if self.used_with is None:
            return True
        switch, values = self.used_with
        return raw.get(switch) in values


# The kohya_ss GUI's LoRA types that pass the LyCORIS knobs (lora_gui.py builds network_args per type).
_LYCORIS = frozenset(
    {"LoCon", "LyCORIS/LoCon", "LyCORIS/LoHa", "LyCORIS/LoKr", "LyCORIS/DyLoRA", "LyCORIS/GLoRA",
     "LyCORIS/BOFT", "LyCORIS/Diag-OFT", "LyCORIS/Native Fine-Tuning", "LyCORIS/iA3"}
)
_LOCON_LOHA_LOKR = frozenset({"LoCon", "LyCORIS/LoCon", "LyCORIS/LoHa", "LyCORIS/LoKr"})
_LOKR = frozenset({"LyCORIS/LoKr"})
_FLUX = ("flux1_checkbox", frozenset({True}))
_SD3 = ("sd3_checkbox", frozenset({True}))

_HUB = NotOffered("the Hugging Face hub", "uploads the LoRA or the state, or resumes from there (lora-wizard works offline)")
_WANDB = NotOffered("Weights & Biases logging", "sends the training logs to wandb", instead="logging.log_dir (TensorBoard)")
_TRACKER = NotOffered("tracker settings", "names and configures the logging tracker", instead="logging.log_dir (TensorBoard)")
_USER_META = NotOffered("user metadata", "writes a title, author, licence, tags ... into the LoRA's modelspec metadata")
_VALIDATION = NotOffered("a validation split", "holds images back and reports a validation loss")
_DEEPSPEED = NotOffered("DeepSpeed", "shards the training over GPUs with DeepSpeed")
_FLUX_PATH = NotOffered("FLUX.1 models", "trains a LoRA for FLUX.1", used_with=_FLUX)
_SD3_PATH = NotOffered("SD3 models", "trains a LoRA for Stable Diffusion 3", used_with=_SD3)

NOT_OFFERED: dict[str, NotOffered] = {
    # model families and precisions
    "flux1_checkbox": NotOffered("FLUX.1 models", "trains a LoRA for FLUX.1"),
    "sd3_checkbox": NotOffered("SD3 models", "trains a LoRA for Stable Diffusion 3"),
    **{key: _FLUX_PATH for key in (
        "ae", "clip_l", "t5xxl", "t5xxl_max_token_length", "guidance_scale", "discrete_flow_shift",
        "model_prediction_type", "timestep_sampling", "split_mode", "train_blocks", "apply_t5_attn_mask",
        "flux1_cache_text_encoder_outputs", "flux1_cache_text_encoder_outputs_to_disk", "mem_eff_save",
        "t5xxl_lr", "img_attn_dim", "img_mlp_dim", "img_mod_dim", "single_dim", "txt_attn_dim", "txt_mlp_dim",
        "txt_mod_dim", "single_mod_dim", "in_dims", "train_double_block_indices", "train_single_block_indices",
        "enable_all_linear", "blocks_to_swap", "flux_fused_backward_pass", "cpu_offload_checkpointing",
        "single_blocks_to_swap", "double_blocks_to_swap",
    )},
    **{key: _SD3_PATH for key in ("sd3_cache_text_encoder_outputs", "sd3_cache_text_encoder_outputs_to_disk", "sd3_clip_l", "sd3_t5xxl")},
    "fp8_base": NotOffered("fp8 base weights", "keeps the frozen base model in 8-bit floats to save memory"),
    "fp8_base_unet": NotOffered("fp8 base weights", "keeps the frozen U-Net in 8-bit floats to save memory"),
    # losses and data
    "masked_loss": NotOffered("masked loss", "weights the loss by mask images or the alpha channel"),
    "alpha_mask": NotOffered("masked loss", "weights the loss by each image's alpha channel"),
    "face_crop_aug_range": NotOffered("face-crop augmentation", "crops around faces at random scales"),
    "scale_v_pred_loss_like_noise_pred": NotOffered(
        "v-prediction loss scaling", "scales a v-prediction loss like a noise-prediction loss",
        instead="training.v_pred_like_loss or training.min_snr_gamma"),
    "huber_scale": NotOffered("a Huber loss scale", "scales the Huber loss's c per timestep", off=(1, 1.0)),
    "no_token_padding": NotOffered("unpadded captions", "encodes captions without padding them to the token length"),
    "network_multiplier": NotOffered("a network multiplier", "scales the LoRA's output while it trains", off=(1, 1.0)),
    "resize_interpolation": NotOffered("a resize filter choice", "picks the filter images are resized with"),
    "conditioning_data_dir": NotOffered("ControlNet datasets", "pairs each image with a conditioning image"),
    "in_json": NotOffered("fine-tuning datasets", "reads captions and buckets from a metadata JSON"),
    "metadata_file": NotOffered("fine-tuning datasets", "reads captions and buckets from a metadata JSON"),
    "dataset_class": NotOffered("custom dataset classes", "loads the images with a class of your own"),
    "dataset_repeats": NotOffered("fine-tuning datasets", "repeats a metadata-JSON dataset", off=(1,)),
    "cache_info": NotOffered("cached image sizes", "stores image sizes and captions in a file in the image folder"),
    "custom_attributes": NotOffered("custom subset attributes", "passes extra values to a custom training script"),
    "validation_split": _VALIDATION,
    "validation_seed": _VALIDATION,
    "validate_every_n_epochs": _VALIDATION,
    "validate_every_n_steps": _VALIDATION,
    "max_validation_steps": _VALIDATION,
    # schedules and optimisers
    "lr_scheduler_type": NotOffered(
        "custom scheduler classes", "schedules the learning rate with a class named in the file (e.g. CosineAnnealingLR)",
        instead="one of optim.lr_scheduler"),
    "lr_decay_steps": NotOffered("the warmup-stable-decay schedule", "decays the learning rate over its last steps"),
    "lr_scheduler_timescale": NotOffered("the inverse-sqrt schedule", "decays the learning rate by 1/sqrt(step)"),
    "lr_scheduler_min_lr_ratio": NotOffered("a minimum learning rate", "stops the cosine decay at a share of the rate"),
    "loraplus_lr_ratio": NotOffered("LoRA+", "trains the up weights at a multiple of the learning rate"),
    "loraplus_unet_lr_ratio": NotOffered("LoRA+", "trains the U-Net's up weights at a multiple of the learning rate"),
    "loraplus_text_encoder_lr_ratio": NotOffered("LoRA+", "trains the text encoder's up weights at a multiple of the learning rate"),
    "fused_backward_pass": NotOffered("the fused backward pass", "steps Adafactor inside the backward pass to save memory"),
    "fp16_master_weights_and_gradients": _DEEPSPEED,
    "base_weights": NotOffered("base LoRA merging", "merges other LoRAs into the base model before training"),
    "base_weights_multiplier": NotOffered("base LoRA merging", "scales the LoRAs merged into the base model"),
    # LyCORIS knobs (the GUI passes each only for some LoRA types)
    "LyCORIS_preset": NotOffered(
        "LyCORIS module presets", "picks which layers get a LyCORIS module", off=("full",), used_with=("LoRA_type", _LYCORIS),
        instead="lora-wizard's own layer set (attention and MLP, plus the convs with network.conv_dim)"),
    "preset": NotOffered("LyCORIS module presets", "picks which layers get a LyCORIS module", off=("full",)),
    "use_tucker": NotOffered("Tucker decomposition", "factors the 3x3 convolution updates in LyCORIS modules",
                             used_with=("LoRA_type", _LYCORIS)),
    "use_cp": NotOffered("Tucker decomposition", "factors the 3x3 convolution updates of LoKr modules", used_with=("LoRA_type", _LOKR)),
    "use_scalar": NotOffered("LyCORIS scalars", "trains one extra scale per LyCORIS module", used_with=("LoRA_type", _LYCORIS)),
    "rank_dropout_scale": NotOffered("rank-dropout rescaling", "rescales the kept ranks after a rank dropout",
                                     used_with=("LoRA_type", _LYCORIS)),
    "train_norm": NotOffered("normalisation-layer training", "also trains the models' norm layers", used_with=("LoRA_type", _LYCORIS)),
    "dora_wd": NotOffered("DoRA", "decomposes each update into a direction and a magnitude", used_with=("LoRA_type", _LOCON_LOHA_LOKR)),
    "wd_on_output": NotOffered("DoRA", "the DoRA magnitude's axis", used_with=("LoRA_type", _LOCON_LOHA_LOKR)),
    # LyCORIS modules in lora-wizard always add their update to the layer's output (bypass mode)
    "bypass_mode": NotOffered("LyCORIS merge mode", "merges each update into a copy of the weight", off=(True,),
                              used_with=("LoRA_type", _LOCON_LOHA_LOKR)),
    "decompose_both": NotOffered("LoKr decompose_both", "also factors LoKr's second matrix", used_with=("LoRA_type", _LOKR)),
    "unit": NotOffered("DyLoRA networks", "trains every rank up to network_dim at once", off=(1,),
                       used_with=("LoRA_type", frozenset({"LyCORIS/DyLoRA", "Kohya DyLoRA"}))),
    "train_on_input": NotOffered("(IA)^3 networks", "scales activations instead of adding an update", off=(True,),
                                 used_with=("LoRA_type", frozenset({"LyCORIS/iA3"}))),
    "constrain": NotOffered("OFT networks", "constrains an orthogonal finetuning update",
                            used_with=("LoRA_type", frozenset({"LyCORIS/Diag-OFT", "LyCORIS/BOFT"}))),
    "rescaled": NotOffered("OFT networks", "rescales an orthogonal finetuning update",
                           used_with=("LoRA_type", frozenset({"LyCORIS/Diag-OFT", "LyCORIS/BOFT"}))),
    # run control
    "save_state_on_train_end": NotOffered("a state saved only at the end", "saves the training state once, after the last step",
                                          instead="saving.save_state (a state with every save)"),
    "save_n_epoch_ratio": NotOffered("saving by a share of the epochs", "saves N times over the run", instead="saving.save_every_n_epochs"),
    "sample_at_first": NotOffered("samples before training", "renders the sample prompts before the first step"),
    "initial_epoch": NotOffered("a start epoch", "starts the schedule at a later epoch"),
    "initial_step": NotOffered("a start step", "starts the schedule at a later step"),
    "skip_until_initial_step": NotOffered("a start step", "skips the batches before initial_step"),
    "torch_compile": NotOffered("torch.compile", "compiles the U-Net"),
    "deepspeed": _DEEPSPEED,
    "zero_stage": NotOffered("DeepSpeed", "shards the training over GPUs with DeepSpeed", off=(2,)),
    "debug_dataset": NotOffered("the dataset debugger", "shows the training images instead of training"),
    # logging and the hub
    "log_with": NotOffered("Weights & Biases logging", "sends the training logs to wandb", off=("tensorboard",),
                           instead="logging.log_dir (TensorBoard)"),
    "use_wandb": _WANDB,
    "wandb_api_key": _WANDB,
    "wandb_run_name": _WANDB,
    "log_tracker_name": _TRACKER,
    "log_tracker_config": _TRACKER,
    "log_config": NotOffered("config logging", "sends the whole config to the tracker"),
    **{key: _HUB for key in (
        "huggingface_repo_id", "huggingface_token", "huggingface_repo_type", "huggingface_path_in_repo",
        "huggingface_repo_visibility", "save_state_to_huggingface", "resume_from_huggingface", "async_upload",
    )},
    **{key: _USER_META for key in (
        "metadata_title", "metadata_author", "metadata_description", "metadata_license", "metadata_tags",
        "metadata_trigger_phrase", "metadata_usage_hint", "metadata_thumbnail", "metadata_merged_from",
        "metadata_preprocessor", "metadata_is_negative_embedding",
    )},
}

#: network types the kohya_ss GUI offers that lora-wizard does not, by the name the GUI shows
NOT_OFFERED_NETWORKS: dict[str, str] = {
    "LyCORIS/iA3": "(IA)^3 networks are not offered",
    "LyCORIS/DyLoRA": "DyLoRA networks are not offered",
    "Kohya DyLoRA": "DyLoRA networks are not offered",
    "LyCORIS/GLoRA": "GLoRA networks are not offered",
    "LyCORIS/Diag-OFT": "OFT networks are not offered",
    "LyCORIS/BOFT": "OFT networks are not offered",
    "LyCORIS/Native Fine-Tuning": "native fine-tuning (training whole layers) is not offered",
    "Flux1": "FLUX.1 models are not offered",
    "Flux1 OFT": "FLUX.1 models are not offered",
    "LoRA-FA": "LoRA-FA networks are not offered",
}

#: LyCORIS `algo` values (network_args) that lora-wizard does not offer
NOT_OFFERED_ALGOS: dict[str, str] = {
    "ia3": "(IA)^3 networks are not offered",
    "dylora": "DyLoRA networks are not offered",
    "glora": "GLoRA networks are not offered",
    "diag-oft": "OFT networks are not offered",
    "boft": "OFT networks are not offered",
    "full": "native fine-tuning (training whole layers) is not offered",
}

#: sd-scripts network modules lora-wizard does not offer
NOT_OFFERED_MODULES: dict[str, str] = {
    "networks.dylora": "DyLoRA networks are not offered",
    "networks.oft": "OFT networks are not offered",
    "networks.lora_fa": "LoRA-FA networks are not offered",
    "networks.lora_flux": "FLUX.1 models are not offered",
    "networks.lora_sd3": "SD3 models are not offered",
}


def refusal(key: str, value: Any) -> str:
    """What an option that turns on a feature lora-wizard lacks is told: the feature, what it does,
    and what to do."""
    rule = NOT_OFFERED[key]
    text = f"turns on {rule.feature}, which lora-wizard does not offer ({rule.does})"
    return text


def refusal_fix(key: str) -> str:
    rule = NOT_OFFERED[key]
    if rule.instead:
        return f"use {rule.instead} instead, or remove the key"
    return "remove the key (or set it off) to train without it"

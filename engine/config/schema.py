"""The one typed training config.

Everything a run needs is a field here, grouped by concern; the wizard fills it, `config_io` loads
and saves it, and the engine reads it. Field names follow the kohya/sd-scripts vocabulary so the
metadata written into a LoRA (`ss_*`) maps one to one. This module checks each field on its own
(type, range, form); the rules between fields, and between a config and the model, the machine
and the files it names, are the rulebook's (engine/config/rules.py), which every way into training runs.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

CONFIG_VERSION = 1

#: keywords that stand for the built-in demo model and the generated sample dataset
DEMO_MODEL = "builtin:demo"
SAMPLE_DATASET = "builtin:sample"


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo in a hand-edited file must not be ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_empty_path(cls, value: Any, info: ValidationInfo) -> Any:
        # Path("") is the current folder: an empty string in a file would silently mean "here".
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, str) and not value.strip() and Path in (annotation, *get_args(annotation)):
            nullable = type(None) in get_args(annotation)
            raise ValueError(
                "an empty path would mean the current folder: write a real path" + (", or null for none" if nullable else "")
            )
        return value


class ModelFamily(StrEnum):
    AUTO = "auto"  # read from the weights' keys
    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"


class Attention(StrEnum):
    SDPA = "sdpa"  # torch scaled_dot_product_attention (flash / memory-efficient kernels)
    XFORMERS = "xformers"
    MEM_EFF = "mem_eff"  # sd-scripts' name for the memory-efficient path; SDPA's kernel here


class NetworkType(StrEnum):
    LORA = "lora"
    LOCON = "locon"
    LOHA = "loha"
    LOKR = "lokr"


class TrainOn(StrEnum):
    BOTH = "both"
    UNET_ONLY = "unet_only"
    TEXT_ONLY = "text_only"


class Optimizer(StrEnum):
    ADAMW = "AdamW"
    ADAMW8BIT = "AdamW8bit"
    LION = "Lion"
    LION8BIT = "Lion8bit"
    SGD_NESTEROV = "SGDNesterov"
    SGD_NESTEROV8BIT = "SGDNesterov8bit"
    DADAPT_ADAM = "DAdaptAdam"
    PRODIGY = "Prodigy"
    ADAFACTOR = "AdaFactor"


class LrScheduler(StrEnum):
    LINEAR = "linear"
    COSINE = "cosine"
    COSINE_WITH_RESTARTS = "cosine_with_restarts"
    POLYNOMIAL = "polynomial"
    CONSTANT = "constant"
    CONSTANT_WITH_WARMUP = "constant_with_warmup"


class MixedPrecision(StrEnum):
    NO = "no"
    FP16 = "fp16"
    BF16 = "bf16"


class SavePrecision(StrEnum):
    FLOAT = "float"
    FP16 = "fp16"
    BF16 = "bf16"


class SaveFormat(StrEnum):
    SAFETENSORS = "safetensors"
    CKPT = "ckpt"
    PT = "pt"


class TagFile(StrEnum):
    OFF = "off"
    BY_COUNT = "by_count"
    ALPHABETICAL = "alphabetical"


class NoiseOffsetType(StrEnum):
    ORIGINAL = "original"
    MULTIRES = "multires"


class LossType(StrEnum):
    L2 = "l2"
    HUBER = "huber"
    SMOOTH_L1 = "smooth_l1"


class HuberSchedule(StrEnum):
    SNR = "snr"
    EXPONENTIAL = "exponential"
    CONSTANT = "constant"


class Sampler(StrEnum):
    DDIM = "ddim"
    EULER = "euler"
    EULER_A = "euler_a"
    DPMSOLVER_PP = "dpmsolver++"
    K_EULER = "k_euler"
    K_EULER_A = "k_euler_a"


class ModelConfig(StrictModel):
    base_model: str = Field(
        DEMO_MODEL,
        min_length=1,
        description="base checkpoint: a .safetensors/.ckpt file, a diffusers folder, or builtin:demo",
    )
    family: ModelFamily = Field(
        ModelFamily.AUTO, description="sd1, sd2 or sdxl; auto reads it from the weights"
    )
    v_parameterization: bool = Field(False, description="v-prediction objective (SD2 768-v models)")
    vae: Path | None = Field(None, description="a VAE file to use instead of the checkpoint's own")
    clip_skip: int = Field(2, ge=1, le=12, description="use the CLIP hidden state k from the end")
    max_token_length: Literal[75, 150, 225] = Field(
        150, description="caption tokens: 150/225 = 2/3 chunks of 75 encoded separately"
    )
    lowram: bool = Field(False, description="load models straight to the GPU, keep CPU RAM low")
    attention: Attention = Field(Attention.SDPA, description="attention kernel")


class DatasetConfig(StrictModel):
    img_folder: str = Field(
        SAMPLE_DATASET,
        min_length=1,
        description="parent of the <repeats>_<name> folders, or builtin:sample",
    )
    reg_img_folder: Path | None = Field(None, description="regularisation images, same layout")
    prior_loss_weight: float = Field(1.0, ge=0.0, description="loss weight of regularisation samples")
    caption_extension: str = Field(".txt", description="caption file extension next to each image")
    resolution: int | tuple[int, int] = Field(
        512, description="training area: one side, or [width, height]"
    )
    enable_bucket: bool = Field(True, description="aspect-ratio bucketing")
    min_bucket_reso: int = Field(320, ge=32)
    max_bucket_reso: int = Field(960, ge=32)
    bucket_reso_steps: int = Field(64, ge=8, description="step between bucket sides (32 for SDXL)")
    bucket_no_upscale: bool = Field(False, description="never upscale an image to reach a bucket")
    shuffle_caption: bool = Field(False, description="shuffle comma-separated tags each time")
    keep_tokens: int = Field(0, ge=0, description="first N tags stay in place when shuffling")
    caption_dropout_rate: float = Field(0.0, ge=0.0, le=1.0)
    caption_dropout_every_n_epochs: int = Field(0, ge=0)
    caption_tag_dropout_rate: float = Field(0.0, ge=0.0, le=1.0)
    weighted_captions: bool = Field(False, description="(word:1.3) emphasis in captions")
    flip_aug: bool = False
    color_aug: bool = False
    random_crop: bool = False
    cache_latents: bool = Field(True, description="encode images with the VAE once, before training")
    cache_latents_to_disk: bool = Field(False, description="keep latent caches beside the images")
    vae_batch_size: int = Field(1, ge=1)
    max_data_loader_n_workers: int = Field(1, ge=0)
    persistent_data_loader_workers: bool = True

    @field_validator("caption_extension")
    @classmethod
    def _dot_extension(cls, value: str) -> str:
        if not value.startswith(".") or len(value) < 2 or "/" in value or "\\" in value:
            raise ValueError(f"write it with its dot, like '.txt' or '.caption' (got {value!r})")
        return value

    @field_validator("resolution")
    @classmethod
    def _positive_resolution(cls, value: int | tuple[int, int]) -> int | tuple[int, int]:
        sides = (value, value) if isinstance(value, int) else value
        if min(sides) < 64:
            raise ValueError(f"each side must be at least 64 pixels (got {value})")
        return value

    @property
    def width_height(self) -> tuple[int, int]:
        res = self.resolution
        return (res, res) if isinstance(res, int) else (res[0], res[1])


class NetworkConfig(StrictModel):
    type: NetworkType = NetworkType.LORA
    dim: int = Field(32, ge=1, le=1024, description="LoRA rank (network_dim)")
    alpha: float = Field(16.0, gt=0.0, description="scale = alpha / dim")
    conv_dim: int | None = Field(None, ge=1, le=1024, description="LoCon rank of the 3x3 convs")
    conv_alpha: float | None = Field(None, gt=0.0)
    train_on: TrainOn = TrainOn.BOTH
    network_weights: Path | None = Field(
        None, description="start from this LoRA's weights (a new run, not an exact resume)"
    )
    dim_from_weights: bool = Field(False, description="take dim/alpha from network_weights")
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description="neuron dropout on down(x)")
    rank_dropout: float | None = Field(None, ge=0.0, lt=1.0)
    module_dropout: float | None = Field(None, ge=0.0, lt=1.0)
    block_dims: list[int] | None = None
    block_alphas: list[float] | None = None
    conv_block_dims: list[int] | None = None
    conv_block_alphas: list[float] | None = None
    down_lr_weight: str | list[float] | None = None
    mid_lr_weight: float | list[float] | None = None
    up_lr_weight: str | list[float] | None = None
    block_lr_zero_threshold: float = Field(0.0, ge=0.0)


class OptimConfig(StrictModel):
    optimizer: Optimizer = Optimizer.ADAMW8BIT
    optimizer_args: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments of the optimizer"
    )
    learning_rate: float = Field(1e-4, gt=0.0)
    text_encoder_lr: float | None = Field(None, gt=0.0)
    unet_lr: float | None = Field(None, gt=0.0)
    lr_scheduler: LrScheduler = LrScheduler.COSINE_WITH_RESTARTS
    lr_scheduler_num_cycles: int = Field(1, ge=1, description="cycles of cosine_with_restarts")
    lr_scheduler_power: float = Field(1.0, gt=0.0, description="power of polynomial")
    lr_warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="share of steps spent warming up")
    lr_scheduler_args: dict[str, Any] = Field(default_factory=dict)
    max_grad_norm: float = Field(1.0, ge=0.0, description="gradient clipping; 0 turns it off")
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    mixed_precision: MixedPrecision = MixedPrecision.FP16
    full_fp16: bool = False
    full_bf16: bool = False
    scale_weight_norms: float | None = Field(None, gt=0.0, description="max-norm of each module")


class TrainingConfig(StrictModel):
    batch_size: int = Field(1, ge=1)
    epochs: int = Field(1, ge=1)
    max_train_epochs: int | None = Field(None, ge=1, description="overrides epochs")
    max_steps: int | None = Field(None, ge=1, description="overrides the epoch-derived step count")
    seed: int = Field(23, ge=0, description="the training seed (reproducibility)")
    noise_offset_type: NoiseOffsetType = NoiseOffsetType.ORIGINAL
    noise_offset: float = Field(0.0, ge=0.0, le=1.0)
    adaptive_noise_scale: float | None = None
    noise_offset_random_strength: bool = False
    multires_noise_iterations: int = Field(0, ge=0, le=64)
    multires_noise_discount: float = Field(0.3, gt=0.0, le=1.0)
    ip_noise_gamma: float | None = Field(None, ge=0.0)
    min_snr_gamma: float | None = Field(None, gt=0.0)
    min_timestep: int = Field(0, ge=0, le=1000)
    max_timestep: int = Field(1000, ge=1, le=1000)
    loss_type: LossType = LossType.L2
    huber_c: float | None = Field(None, gt=0.0, le=1.0)
    huber_schedule: HuberSchedule = HuberSchedule.SNR
    v_pred_like_loss: float | None = Field(None, gt=0.0)
    debiased_estimation_loss: bool = False
    zero_terminal_snr: bool = False
    stop_text_encoder_training: int = Field(
        0, ge=0, le=100, description="% of steps after which the text encoder stops training"
    )

    @property
    def epoch_count(self) -> int:
        return self.max_train_epochs or self.epochs


class SavingConfig(StrictModel):
    output_folder: Path = Path("output")
    output_name: str | None = Field(None, description="base file name (else 'last')")
    save_model_as: SaveFormat = SaveFormat.SAFETENSORS
    save_precision: SavePrecision = SavePrecision.FP16
    save_every_n_epochs: int | None = Field(None, ge=1)
    save_every_n_steps: int | None = Field(None, ge=1)
    save_last_n_epochs: int | None = Field(None, ge=1)
    save_last_n_steps: int | None = Field(None, ge=1)
    save_state: bool = Field(False, description="also save the state for an exact resume")
    save_last_n_epochs_state: int | None = Field(None, ge=1)
    save_last_n_steps_state: int | None = Field(None, ge=1)
    save_state_every_n_minutes: int | None = Field(None, ge=1)
    resume: Path | None = Field(None, description="resume exactly from a saved state folder")
    training_comment: str | None = None
    no_metadata: bool = False
    tag_file: TagFile = TagFile.BY_COUNT

    @field_validator("output_name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        bad = set('/\\:*?"<>|') & set(value)
        if not value.strip() or bad:
            raise ValueError(
                f"use a plain file name without {''.join(sorted(bad)) or 'blanks'} (got {value!r})"
            )
        return value


class SamplingConfig(StrictModel):
    sample_prompts: Path | None = Field(None, description="a text file, one prompt per line")
    sample_sampler: Sampler = Sampler.DDIM
    sample_every_n_epochs: int | None = Field(None, ge=1)
    sample_every_n_steps: int | None = Field(None, ge=1)


class LoggingConfig(StrictModel):
    # on unless turned off: the loss curve is how a user sees a run learn (files written before this
    # field existed load with it on, and log into their run folder)
    tensorboard: bool = Field(True, description="write TensorBoard logs (to log_dir, else to <run folder>/logs)")
    log_dir: Path | None = Field(None, description="TensorBoard logs of every run in one folder (else each run's own logs/)")
    log_prefix: str | None = None


class TrainConfig(StrictModel):
    version: int = CONFIG_VERSION
    model: ModelConfig = Field(default_factory=ModelConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    saving: SavingConfig = Field(default_factory=SavingConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("version")
    @classmethod
    def _current_version(cls, value: int) -> int:
        if value != CONFIG_VERSION:
            raise ValueError(
                f"this build reads version {CONFIG_VERSION}; load older files with load_config, "
                "which migrates them"
            )
        return value


SECTIONS: tuple[str, ...] = tuple(
    name for name in TrainConfig.model_fields if name != "version"
)


def field_paths() -> list[str]:
    """Every leaf field as 'section.name', in declaration order."""
    return [
        f"{section}.{name}"
        for section in SECTIONS
        for name in TrainConfig.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
    ]


def section_model(section: str) -> type[StrictModel]:
    return TrainConfig.model_fields[section].annotation  # type: ignore[return-value]

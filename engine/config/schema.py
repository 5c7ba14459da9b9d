"""The one typed training config.

Everything a run needs is a field here, grouped by concern (the dataset section in
engine/config/dataset_section.py); the wizard fills it, engine/config/io.py loads
and saves it, and the engine reads it. Field names follow the kohya/sd-scripts vocabulary so the
metadata written into a LoRA (`ss_*`) maps one to one. This module checks each field on its own
(type, range, form); the rules between fields, and between a config and the model, the machine
and the files it names, are the rulebook's (engine/config/rules.py), which every way into training runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from engine.config.choices import (  # noqa: F401 - re-exported: the config's choices live with it
    Attention,
    HuberSchedule,
    LossType,
    LrScheduler,
    MixedPrecision,
    ModelFamily,
    NetworkType,
    NoiseOffsetType,
    Optimizer,
    Sampler,
    SaveFormat,
    SavePrecision,
    TagFile,
    TrainOn,
)
from engine.config.dataset_section import (  # noqa: F401 - re-exported: the sections are read from here
    CAPTION_OPTIONS,
    DatasetConfig,
    SubsetConfig,
)
from engine.config.strict import DEMO_MODEL, SAMPLE_DATASET, StrictModel  # noqa: F401 - re-exported

CONFIG_VERSION = 1

class ModelConfig(StrictModel):
    base_model: str = Field(
        DEMO_MODEL,
        min_length=1,
        description="base checkpoint: a .safetensors/.ckpt file, a diffusers folder, or builtin:demo",
    )
    family: ModelFamily = Field(
        ModelFamily.AUTO, description="sd1, sd2 or sdxl; auto reads it from the weights"
    )
    v_parameterization: bool | None = Field(
        None, description="v-prediction objective (SD2 768-v and v-pred models); null: as the model says"
    )
    vae: Path | None = Field(None, description="a VAE file to use instead of the checkpoint's own")
    clip_skip: int = Field(2, ge=1, le=12, description="use the CLIP hidden state k from the end")
    max_token_length: Literal[75, 150, 225] = Field(
        150, description="caption tokens: 150/225 = 2/3 chunks of 75 encoded separately"
    )
    lowram: bool = Field(False, description="load models straight to the GPU, keep CPU RAM low")
    attention: Attention = Field(Attention.SDPA, description="attention kernel")


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
    lokr_factor: int = Field(
        -1, ge=-1, description="LoKr: the size of the small Kronecker factor (-1: LyCORIS' own choice)"
    )

    @field_validator("lokr_factor")
    @classmethod
    def _factor(cls, value: int) -> int:
        if value == 0:
            raise ValueError("use -1 for LyCORIS' own choice, or a factor of 1 or more")
        return value


class OptimConfig(StrictModel):
    optimizer: Optimizer = Optimizer.ADAMW8BIT
    optimizer_args: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments of the optimizer"
    )
    learning_rate: float = Field(1e-4, gt=0.0)
    text_encoder_lr: float | None = Field(None, description="the text encoders' rate (else learning_rate)")
    unet_lr: float | None = Field(None, description="the U-Net's rate (else learning_rate)")
    lr_scheduler: LrScheduler = LrScheduler.COSINE_WITH_RESTARTS
    lr_scheduler_num_cycles: int = Field(1, ge=1, description="cycles of cosine_with_restarts")
    lr_scheduler_power: float = Field(1.0, gt=0.0, description="power of polynomial")
    lr_warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="share of steps spent warming up")
    lr_warmup_steps: int | None = Field(
        None, ge=0, description="warm-up as a number of steps (sd-scripts' lr_warmup_steps), instead of the ratio"
    )
    lr_scheduler_args: dict[str, Any] = Field(default_factory=dict)
    max_grad_norm: float = Field(1.0, ge=0.0, description="gradient clipping; 0 turns it off")
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    mixed_precision: MixedPrecision = MixedPrecision.FP16
    full_fp16: bool = False
    full_bf16: bool = False
    scale_weight_norms: float | None = Field(None, gt=0.0, description="max-norm of each module")

    @field_validator("text_encoder_lr", "unet_lr")
    @classmethod
    def _positive_part_rate(cls, value: float | None) -> float | None:
        # sd-scripts and the kohya_ss GUI read 0 as "don't train that part" or "use the other
        # rate"; here a part is left out with network.train_on, so 0 would be ambiguous
        if value is not None and value <= 0:
            raise ValueError(
                "must be greater than 0; to leave a part untrained set network.train_on, and to use "
                "learning_rate for it leave this out (null)"
            )
        return value


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
    ip_noise_gamma_random_strength: bool = Field(
        False, description="scale the input perturbation noise by a random factor in [0, 1) per step"
    )
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
    sample_prompts: Path | list[str] | None = Field(
        None, description="a text file, one prompt per line, or the prompt lines themselves as a list"
    )
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

"""The choices of the config's fields, as StrEnums (their values are what a config file holds).

engine/config/schema.py uses them in the sections and re-exports them, so both import paths work.
"""

from __future__ import annotations

from enum import StrEnum


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
    # Adafactor's own step size (relative_step=True): the optimizer sets its rate, the configured
    # learning rate is only reported before the first step (sd-scripts' "adafactor" scheduler,
    # transformers' AdafactorSchedule)
    ADAFACTOR = "adafactor"


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

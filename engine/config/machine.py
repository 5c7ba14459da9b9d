"""The machine a run trains on, as the rulebook needs it: a CUDA GPU or not, bfloat16 or not, and
the optional packages installed. Asked of torch by preflight, or read without importing torch for
the wizard, whose questions must stay instant."""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from engine.config.optimizers import REGISTRY as OPTIMIZERS
from engine.config.schema import ModelFamily, TrainConfig

#: packages whose presence a rule depends on (import names): the optimizers' and the options'
OPTIONAL_PACKAGES: tuple[str, ...] = tuple(
    sorted({"xformers", "lycoris"} | {spec.package for spec in OPTIMIZERS.values() if spec.package})
)


@dataclass(frozen=True)
class Machine:
    """The machine the run will train on."""

    cuda: bool
    bf16: bool = False  # the GPU computes in bfloat16 (Ampere or newer)
    packages: frozenset[str] = field(default_factory=frozenset)  # optional packages installed

    def has(self, package: str) -> bool:
        return package in self.packages


@cache
def this_machine() -> Machine:
    """This machine, as torch sees it; asked once per process (preflight and training import torch
    anyway)."""
    import torch

    cuda = torch.cuda.is_available()
    return Machine(cuda=cuda, bf16=cuda and torch.cuda.is_bf16_supported(), packages=installed_packages())


@cache
def this_machine_at_a_glance() -> Machine:
    """This machine without importing torch, for the wizard's questions (which must stay instant):
    a CUDA GPU when torch is a CUDA build (its version.py says so) and the NVIDIA driver sees a GPU;
    bfloat16 when nvidia-smi reports compute capability 8.0 or more. Preflight asks torch itself."""
    cuda = _torch_is_a_cuda_build() and _nvidia_gpu_present()
    capability = _compute_capability() if cuda else None
    return Machine(cuda=cuda, bf16=capability is not None and capability >= 8.0, packages=installed_packages())


def installed_packages() -> frozenset[str]:
    return frozenset(p for p in OPTIONAL_PACKAGES if importlib.util.find_spec(p) is not None)


def _torch_is_a_cuda_build() -> bool:
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    version = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        found = re.search(r"^cuda\s*(?::[^=]*)?=\s*(.+)$", version.read_text(encoding="utf-8"), re.MULTILINE)
    except OSError:
        return False
    return found is not None and found.group(1).strip() not in ("None", "''", '""')


def _nvidia_gpu_present() -> bool:
    if os.name == "nt":
        return ctypes.util.find_library("nvcuda") is not None
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def _compute_capability() -> float | None:
    """The lowest compute capability of the GPUs nvidia-smi lists (driver 510 or newer)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        ).stdout
        values = [float(line) for line in out.split()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return min(values) if values else None


@dataclass(frozen=True)
class Facts:
    """What preflight knows beyond the config itself."""

    machine: Machine
    family: ModelFamily | None = None  # the base model's family as read from it; None: unknown
    num_processes: int = 1
    paths: bool = True  # check the paths the run reads and writes (off for a config not yet run)
    v_prediction: bool | None = None  # what the model's files say of its objective; None: unknown


def v_prediction_of(cfg: TrainConfig, facts: Facts | None) -> bool | None:
    """The objective the run trains with, as far as known before it loads: the config's word, else
    what the model's files say (None: decided when the model loads)."""
    if cfg.model.v_parameterization is not None:
        return cfg.model.v_parameterization
    return None if facts is None else facts.v_prediction


def family_of(cfg: TrainConfig, facts: Facts | None) -> ModelFamily | None:
    """The model family the run trains: read from the model, else as the config names it."""
    if facts is not None and facts.family is not None:
        return facts.family
    return None if cfg.model.family == ModelFamily.AUTO else cfg.model.family

"""Running configs: preflight every run before the first starts, then train each into run<N>/.

The front-end (wizard/app.py) and the queue (engine/queue.py) call these; they never print. A run's
outputs all go in a fresh `<output_folder>/run<N>/` (LoRA files, the config that made them, the tag
list), so nothing from an earlier run is ever overwritten.
"""

from __future__ import annotations

import gc
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.config import (
    DEMO_MODEL,
    ModelFamily,
    NetworkType,
    SavePrecision,
    TrainConfig,
)
from engine.errors import ConfigError, LoraWizardError, TrainingError, problems_message
from engine.events import Reporter, RunResult, StopSignal
from engine.plan import RunPlan, make_plan


@dataclass(frozen=True)
class PlannedRun:
    source: str  # where the config came from (a file name, "demo", "wizard")
    config: TrainConfig
    plan: RunPlan
    warnings: tuple[str, ...] = ()  # dataset lint warnings: it trains, but maybe not as meant
    saves: int = 1  # LoRA files the run writes (epoch and step saves, and the final one)
    output_bytes: int = 0  # about how much the run writes to disk


def preflight(runs: list[tuple[str, TrainConfig]], num_processes: int = 1, problems: list[str] | None = None) -> list[PlannedRun]:
    """Plan every run; collect every problem of every run (and free disk for all of them) and
    raise them together, so a queue never stops at 3 a.m. on something checkable at 11 p.m.
    `problems` found before (config files that did not load) are reported with these."""
    checked = check_runs(runs, num_processes)
    problems = list(problems or []) + [p for c in checked if not isinstance(c, PlannedRun) for p in c]
    planned = [c for c in checked if isinstance(c, PlannedRun)]
    if not problems:
        problems = disk_problems(planned)
    if problems:
        raise LoraWizardError(problems_message("nothing was trained, fix these first", problems))
    return planned


def check_runs(runs: list[tuple[str, TrainConfig]], num_processes: int = 1) -> list[PlannedRun | list[str]]:
    """Each run's plan, or the list of its problems (each starting with the run's source), in the
    order of `runs`. Free disk is not checked here: it is a matter of all the runs together
    (disk_problems)."""
    from engine.lint import ImageChecks, Level, lint_dataset
    from engine.optim import check_available

    checked: list[PlannedRun | list[str]] = []
    checks = ImageChecks()  # each image is decoded once, however many runs use it
    for source, cfg in runs:
        found: list[str] = []
        family = None
        try:
            check_available(cfg.optim.optimizer)
        except LoraWizardError as exc:
            found.append(str(exc))
        try:
            family = _check_paths(cfg)
        except LoraWizardError as exc:
            found.append(str(exc))
        lint = lint_dataset(cfg, checks)
        found += [str(p) for p in lint if p.level == Level.ERROR]
        if not found:
            try:
                plan = make_plan(cfg, num_processes)
            except LoraWizardError as exc:
                found.append(str(exc))
        if found:
            checked.append([f"{source}: {p}" for p in found])
            continue
        saves = planned_saves(cfg, plan)
        checked.append(
            PlannedRun(
                source,
                cfg,
                plan,
                warnings=tuple(str(p) for p in lint if p.level == Level.WARNING),
                saves=saves,
                output_bytes=estimate_output_bytes(cfg, family, saves),
            )
        )
    return checked


def _check_paths(cfg: TrainConfig) -> str:
    """Every path the run reads exists; returns the model family for the size estimate ("demo"
    for the built-in models). A single-file model's family is read from its header, which also
    finds a LoRA or a VAE given as the base model before the queue starts."""
    from engine.models.detect import detect, resolve_family
    from engine.models.loading import BUILTIN_MODELS

    for field, value, kind in (
        ("model.vae", cfg.model.vae, "file"),
        ("network.network_weights", cfg.network.network_weights, "file"),
        ("saving.resume", cfg.saving.resume, "folder"),
        ("sampling.sample_prompts", cfg.sampling.sample_prompts, "file"),
    ):
        path = None if value is None else Path(value).expanduser()
        if path is not None and not (path.is_file() if kind == "file" else path.is_dir()):
            raise ConfigError(f"{field}: {value} is not a {kind}; fix the path or remove the field")
    model = cfg.model.base_model
    if model.startswith("builtin:"):
        if model not in BUILTIN_MODELS:
            raise ConfigError(f"model.base_model: unknown built-in model {model!r}; choose one of {', '.join(BUILTIN_MODELS)}")
        return "demo"
    path = Path(model).expanduser()
    if not path.exists():
        raise ConfigError(f"model.base_model: {model} does not exist; give a .safetensors/.ckpt file or a diffusers folder (or {DEMO_MODEL})")
    if path.is_dir() or path.suffix.lower() == ".safetensors":
        # the header says the family: a config that names another one is caught before any run
        return resolve_family(cfg.model.family, detect(path), path).value
    if cfg.model.family != ModelFamily.AUTO:
        return cfg.model.family.value
    return ModelFamily.SDXL.value  # a .ckpt is read only by loading it all: assume the largest


@dataclass(frozen=True)
class LoraSize:
    """LoRA parameters per unit of rank: sum of (in + out) over the layers that get a module."""

    linear: int  # LoRA: attention/MLP Linears and 1x1 convs of the U-Net and text encoder(s)
    locon_linear: int  # LoCon: the same plus the resnets' Linear/1x1 layers
    conv: int  # LoCon: per unit of conv_dim, the 3x3 convs (in * 9 + out)


# Counted on the real-size models built on the meta device (as in tests/test_network.py):
# SD1.5 dim 32 in fp16 gives 37.7 MB and SDXL dim 32 228 MB, the sizes of kohya's files.
LORA_SIZES: dict[str, LoraSize] = {
    "sd1": LoraSize(linear=423_936 + 165_888, locon_linear=506_816 + 165_888, conv=544_000),
    "sd2": LoraSize(linear=432_128 + 423_936, locon_linear=515_008 + 423_936, conv=544_000),
    "sdxl": LoraSize(linear=2_659_840 + 903_168, locon_linear=2_718_400 + 903_168, conv=355_840),
    "demo": LoraSize(linear=8_448 + 896, locon_linear=11_232 + 896, conv=13_856),
}
FILE_OVERHEAD = 1 << 20  # metadata (tag frequencies), the config copy, the tag list
STATE_BYTES_PER_PARAM = 12  # a training state: fp32 weights and two fp32 optimizer moments (Adam)


def planned_saves(cfg: TrainConfig, plan: RunPlan) -> int:
    """LoRA files a run writes if it is not stopped: the final one, every Nth epoch before the
    last, every Nth step before the last (engine/train.py's rules)."""
    sv = cfg.saving
    saves = 1
    if sv.save_every_n_epochs:
        saves += (plan.epochs - 1) // sv.save_every_n_epochs
    if sv.save_every_n_steps:
        saves += (plan.total_steps - 1) // sv.save_every_n_steps
    return saves


def estimate_output_bytes(cfg: TrainConfig, family: str | None, saves: int) -> int:
    """About how many bytes a run writes: each LoRA file, plus a state per save with save_state.
    Deletion of old saves (save_last_n_*) is not counted: the estimate errs on the large side."""
    size = LORA_SIZES.get(family or "", LORA_SIZES["sdxl"])
    net = cfg.network
    if net.type == NetworkType.LOCON:
        params = size.locon_linear * net.dim + size.conv * (net.conv_dim or 0)
    else:
        params = size.linear * net.dim
    per_file = params * (4 if cfg.saving.save_precision == SavePrecision.FLOAT else 2) + FILE_OVERHEAD
    per_state = params * STATE_BYTES_PER_PARAM if cfg.saving.save_state else 0
    return saves * (per_file + per_state)


def disk_problems(planned: list[PlannedRun]) -> list[str]:
    """One problem per disk that the queue's outputs do not fit on."""
    need: dict[int, tuple[Path, int, list[str]]] = {}
    for run in planned:
        folder = _existing_ancestor(Path(run.config.saving.output_folder).expanduser())
        device = folder.stat().st_dev
        where, total, names = need.get(device, (folder, 0, []))
        need[device] = (where, total + run.output_bytes, [*names, run.source])
    problems = []
    for folder, total, names in need.values():
        free = shutil.disk_usage(folder).free
        if total > free:
            problems.append(
                f"{folder}: the runs {', '.join(names)} write about {human_size(total)} on this disk but only "
                f"{human_size(free)} is free; free some space, or save fewer files (saving.save_every_n_epochs), "
                "or lower network.dim"
            )
    return problems


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def run_one(planned: PlannedRun, reporter: Reporter, stop: StopSignal | None = None, run_dir: Path | None = None) -> RunResult:
    """Train one preflighted config into a fresh run folder (or `run_dir`, made by the caller with
    next_run_dir), with its config saved beside the LoRA. Running out of memory is a TrainingError
    that says what to change."""
    from engine.config_io import save_config
    from engine.distributed import shared_path
    from engine.fileio import next_run_dir
    from engine.train import train

    cfg = planned.config

    written: list[Path] = []

    def make_run_dir() -> Path:
        folder = run_dir or next_run_dir(Path(cfg.saving.output_folder).expanduser())
        written.append(save_config(cfg, folder, name=cfg.saving.output_name or "config"))
        return folder

    # with several processes, the main one makes the folder and saves the config; all train into it
    run_dir = shared_path(make_run_dir)
    try:
        result = train(cfg, run_dir, reporter, stop)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise TrainingError(out_of_memory_advice(cfg, exc)) from exc
        raise
    result.files[:0] = written  # the config, on the main process
    return result


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA), a RuntimeError saying so (MPS, the CPU allocator), MemoryError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def out_of_memory_advice(cfg: TrainConfig, exc: BaseException) -> str:
    """What to change, only the changes that are still possible for this config."""
    ds, tr, opt = cfg.dataset, cfg.training, cfg.optim
    fixes = []
    if tr.batch_size > 1:
        fixes.append(
            f"lower training.batch_size (now {tr.batch_size}; raise optim.gradient_accumulation_steps to keep the effective batch)"
        )
    if not opt.gradient_checkpointing:
        fixes.append("set optim.gradient_checkpointing=true")
    width, height = ds.width_height
    fixes.append(f"lower dataset.resolution (now {width}x{height})")
    if not ds.cache_latents:
        fixes.append("set dataset.cache_latents=true")
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"out of memory ({first_line}): " + ", or ".join(fixes)


def release_memory() -> None:
    """Free what the last run left before the next one starts. A failed run's model is held by
    the frames of its exception's traceback until those are collected; then the CUDA cache goes
    back to the driver, so the next run (or another program) gets the memory."""
    gc.collect()
    torch = sys.modules.get("torch")  # never import torch just for this
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()

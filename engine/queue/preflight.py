"""Preflight: every run of a queue checked and planned before the first one starts.

For each config, one call (`check_run`) reads what can be known without training: the base model
(its family, its architecture, code hidden in a pickle; engine/models/inspect.py), the machine,
the dataset (engine/data/lint.py) and the rulebook's verdict on all of it (engine/config/rules.py); then it
plans the run (engine/data/plan.py): buckets, the exact step count, the files it will write. The queue
adds the free disk of all runs together. Every problem of every run is reported at once, so a
queue never stops at 3 a.m. on something checkable at 11 p.m.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from engine.config import rules
from engine.config.machine import Facts, Machine, this_machine
from engine.config.schema import ModelFamily, NetworkType, SavePrecision, TrainConfig
from engine.data.lint import ImageChecks, lint_dataset
from engine.data.plan import RunPlan, make_plan
from engine.errors import ConfigError, LoraWizardError, problems_message
from engine.models.inspect import inspect_base_model
from engine.problems import Level, Problem, render
from engine.run.cadence import planned_saves


@dataclass(frozen=True)
class PlannedRun:
    source: str  # where the config came from (a file name, "demo", "wizard")
    config: TrainConfig
    plan: RunPlan
    warnings: tuple[str, ...] = ()  # it trains, but maybe not as meant (dataset lint, rule warnings)
    saves: int = 1  # LoRA files the run writes (epoch and step saves, and the final one)
    output_bytes: int = 0  # about how much the run writes to disk
    family: str | None = None  # sd1, sd2, sdxl, or demo for the built-in model (None: not known)


def preflight(
    runs: list[tuple[str, TrainConfig]],
    num_processes: int = 1,
    problems: list[str] | None = None,
    machine: Machine | None = None,
) -> list[PlannedRun]:
    """Plan every run; collect every problem of every run (and free disk for all of them) and
    raise them together. `problems` found before (config files that did not load) are reported
    with these."""
    checked = check_runs(runs, num_processes, machine)
    problems = list(problems or []) + [p for c in checked if not isinstance(c, PlannedRun) for p in c]
    planned = [c for c in checked if isinstance(c, PlannedRun)]
    if not problems:
        problems = disk_problems(planned)
    if problems:
        raise ConfigError(problems_message("nothing was trained, fix these first", problems))
    return planned


def check_runs(
    runs: list[tuple[str, TrainConfig]], num_processes: int = 1, machine: Machine | None = None
) -> list[PlannedRun | list[str]]:
    """Each run's plan, or the list of its problems (each line starting with the run's source), in
    the order of `runs`. Free disk is not checked here: it is a matter of all the runs together
    (disk_problems)."""
    checks = ImageChecks()  # each image is decoded once, however many runs use it
    machine = machine or this_machine()
    return [check_run(source, cfg, machine, num_processes, checks) for source, cfg in runs]


def check_run(
    source: str, cfg: TrainConfig, machine: Machine, num_processes: int = 1, checks: ImageChecks | None = None
) -> PlannedRun | list[str]:
    """One config against everything preflight knows: its plan, or its problems."""
    family, problems = _verdict(cfg, machine, num_processes, checks)
    found = [render(p, source) for p in problems if p.level == Level.ERROR]
    plan = None
    if not found:
        try:
            plan = make_plan(cfg, num_processes)
        except LoraWizardError as exc:
            found.append(f"{source}: {exc}")
    if found or plan is None:
        return found
    saves = planned_saves(cfg.saving, plan.epochs, plan.steps_per_epoch, plan.total_steps)
    size_family = "demo" if cfg.model.base_model.startswith("builtin:") else getattr(family, "value", None)
    return PlannedRun(
        source,
        cfg,
        plan,
        warnings=tuple(str(p) for p in problems if p.level == Level.WARNING),
        saves=saves,
        output_bytes=estimate_output_bytes(cfg, size_family, saves),
        family=size_family,
    )


def run_problems(
    cfg: TrainConfig, machine: Machine, num_processes: int = 1, checks: ImageChecks | None = None
) -> list[Problem]:
    """The base model's, the rulebook's and the dataset's problems of one config, errors and
    warnings; what the wizard's review shows and what refuses a queue."""
    return _verdict(cfg, machine, num_processes, checks)[1]


def _verdict(
    cfg: TrainConfig, machine: Machine, num_processes: int, checks: ImageChecks | None
) -> tuple[ModelFamily | None, list[Problem]]:
    inspection = inspect_base_model(cfg)
    facts = Facts(machine, inspection.family, num_processes, v_prediction=inspection.prediction.v)
    problems = [*inspection.problems, *rules.check(cfg, facts)]
    if not any(p.where in INPUT_FIELDS and p.level == Level.ERROR for p in problems):
        problems += input_file_problems(cfg, num_processes)
    problems += lint_dataset(cfg, checks or ImageChecks())
    return inspection.family, problems


#: fields naming files that preflight reads (beyond the base model and the dataset)
INPUT_FIELDS = ("sampling.sample_prompts", "saving.resume", "network.network_weights", "model.vae", "optim.optimizer")


def input_file_problems(cfg: TrainConfig, num_processes: int) -> list[Problem]:
    """What the files a run reads at its start hold, read now instead of after the model loaded:
    the sample prompts (every line parsed), the state to resume (its seed and process count), the
    LoRA to start from and the VAE (their tensor names), and the optimizer's arguments."""
    from engine.run.optim import argument_problems
    from engine.run.prompts import parse_prompt_file
    from engine.run.state import check_compatible, read_position

    problems: list[Problem] = []
    if cfg.sampling.sample_prompts is not None:
        try:
            parse_prompt_file(cfg.sampling.sample_prompts)
        except LoraWizardError as err:
            problems.append(Problem("", str(err)))
    if cfg.saving.resume is not None:
        try:
            position = read_position(cfg.saving.resume)
            check_compatible(position, seed=cfg.training.seed, num_processes=num_processes, folder=cfg.saving.resume)
        except LoraWizardError as err:
            problems.append(Problem("", str(err)))
    problems += weights_file_problems("network.network_weights", cfg.network.network_weights, LORA_MARKERS, "a LoRA/LyCORIS file")
    problems += weights_file_problems("model.vae", cfg.model.vae, VAE_MARKERS, "a VAE")
    problems += argument_problems(cfg.optim.optimizer, cfg.optim.optimizer_args)
    return problems


LORA_MARKERS = (".lora_down.", ".hada_w1_a", ".lokr_w1", ".lora_up.")
VAE_MARKERS = ("encoder.", "decoder.", "first_stage_model.")


def weights_file_problems(field: str, path: Path | None, markers: tuple[str, ...], what: str) -> list[Problem]:
    """A .safetensors file named for `field` holds what it should (its header's tensor names)."""
    from engine.models.checkpoint_file import safetensors_keys

    if path is None or Path(path).suffix.lower() != ".safetensors" or not Path(path).is_file():
        return []
    try:
        keys = safetensors_keys(Path(path))
    except LoraWizardError as err:
        return [Problem(field, str(err), value=str(path))]
    if any(marker in key or key.startswith(marker) for key in keys for marker in markers):
        return []
    return [Problem(field, f"is not {what} (none of its {len(keys)} tensors is named like one)", "check the path", str(path))]


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



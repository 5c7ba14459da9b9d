"""Running configs: preflight every run before the first starts, then train each into run<N>/.

The front-end (wizard/app.py) calls these; they never print. A run's outputs all go in a fresh
`<output_folder>/run<N>/` (LoRA files, the config that made them, the tag list), so nothing from an
earlier run is ever overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.config import TrainConfig
from engine.errors import LoraWizardError, problems_message
from engine.events import Reporter, RunResult, StopSignal
from engine.plan import RunPlan, make_plan


@dataclass(frozen=True)
class PlannedRun:
    source: str  # where the config came from (a file name, "demo", "wizard")
    config: TrainConfig
    plan: RunPlan


def preflight(runs: list[tuple[str, TrainConfig]], num_processes: int = 1) -> list[PlannedRun]:
    """Plan every run; collect every problem of every run and raise them together."""
    from engine.optim import check_available

    planned: list[PlannedRun] = []
    problems: list[str] = []
    for source, cfg in runs:
        try:
            check_available(cfg.optim.optimizer)
            _check_paths(cfg)
            planned.append(PlannedRun(source, cfg, make_plan(cfg, num_processes)))
        except LoraWizardError as exc:
            problems.append(f"{source}: {exc}")
    if problems:
        raise LoraWizardError(problems_message("nothing was trained, fix these first", problems))
    return planned


def _check_paths(cfg: TrainConfig) -> None:
    from engine.config import DEMO_MODEL
    from engine.errors import ConfigError

    model = cfg.model.base_model
    if not model.startswith("builtin:") and not Path(model).expanduser().exists():
        raise ConfigError(f"model.base_model: {model} does not exist; give a .safetensors/.ckpt file or a diffusers folder (or {DEMO_MODEL})")
    for field, value in (("model.vae", cfg.model.vae), ("network.network_weights", cfg.network.network_weights)):
        if value is not None and not Path(value).expanduser().is_file():
            raise ConfigError(f"{field}: {value} is not a file")


def run_one(planned: PlannedRun, reporter: Reporter, stop: StopSignal | None = None) -> RunResult:
    """Train one preflighted config into a fresh run folder, with its config saved beside the LoRA."""
    from engine.config_io import save_config
    from engine.fileio import next_run_dir
    from engine.train import train

    cfg = planned.config
    run_dir = next_run_dir(Path(cfg.saving.output_folder).expanduser())
    config_path = save_config(cfg, run_dir, name=cfg.saving.output_name or "config")
    result = train(cfg, run_dir, reporter, stop)
    result.files.insert(0, config_path)
    return result

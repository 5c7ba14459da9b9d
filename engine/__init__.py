"""lora-wizard's training engine: what a front end needs, through one door. It never prints and
never imports the UI; importing it does not import torch (a run does, when it starts).

    cfg = load_config(path)                     # any version; LETS / kohya_ss flat JSON too
    problems = check(cfg, Facts(this_machine()))   # the rulebook: errors and warnings, each with its fix
    planned = preflight([("my.json", cfg)])     # every run checked and planned, or one ConfigError
    journal, runs = in_memory_queue(planned)    # or open_queue(...) + check_queue(...): a journal on disk
    run_queue(journal, runs, listener, StopSignal())   # trains in order; listener.starting() gives a Reporter
    code = outcome(runs, (), stopped=False)     # Outcome: the exit code a script can trust

Inside: config/ (schema, files, rulebook), data/ (folders, buckets, plan, latents), text/, models/,
network/ (kohya LoRA/LoCon; self_check.py: each saved file against its base model), run/ (one
training run), queue/ (preflight, journal, runner; sweeps, estimates and the time budget, the
out-of-memory retry), report/ (the contact sheet after a run), prep/ (dataset tools).
"""

from engine.config.io import load_config, read_config, save_config
from engine.config.machine import Facts, Machine, this_machine
from engine.config.rules import check
from engine.config.schema import DEMO_MODEL, SAMPLE_DATASET, TrainConfig
from engine.errors import (
    ConfigError,
    DatasetError,
    LoraWizardError,
    MissingPackageError,
    ModelError,
    OutputExistsError,
    TrainingError,
)
from engine.events import (
    Outcome,
    Phase,
    Reporter,
    RunResult,
    RunStatus,
    SilentReporter,
    StepStats,
    StopSignal,
)
from engine.problems import Level, Problem, render
from engine.queue.execute import QueueListener, run_queue
from engine.queue.journal import Journal, journal_path, open_queue, queue_lock
from engine.queue.policy import (
    check_queue,
    demo_config,
    in_memory_queue,
    load_one,
    load_runs,
    outcome,
)
from engine.queue.preflight import PlannedRun, check_runs, preflight
from engine.queue.runner import Trainer, default_trainer, new_run_folder, run_one

__all__ = [
    "DEMO_MODEL",
    "SAMPLE_DATASET",
    "ConfigError",
    "DatasetError",
    "Facts",
    "Journal",
    "Level",
    "LoraWizardError",
    "Machine",
    "MissingPackageError",
    "ModelError",
    "Outcome",
    "OutputExistsError",
    "Phase",
    "PlannedRun",
    "Problem",
    "QueueListener",
    "Reporter",
    "RunResult",
    "RunStatus",
    "SilentReporter",
    "StepStats",
    "StopSignal",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "check",
    "check_queue",
    "check_runs",
    "default_trainer",
    "demo_config",
    "in_memory_queue",
    "journal_path",
    "load_config",
    "load_one",
    "load_runs",
    "new_run_folder",
    "open_queue",
    "outcome",
    "preflight",
    "queue_lock",
    "read_config",
    "render",
    "run_one",
    "run_queue",
    "save_config",
    "this_machine",
]

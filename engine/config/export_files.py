"""Writing an sd-scripts export (engine/config/export.py) into a folder, and the command to run it.

The files get fresh names (never over an existing file) and are written whole (a temporary file
renamed into place). The training TOML names the dataset TOML and the prompt file by absolute path,
because sd-scripts reads them relative to the folder it is started in.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from engine.config.export import SdScriptsRun, sd_scripts_run
from engine.config.schema import ModelFamily, SubsetConfig, TrainConfig
from engine.config.toml_write import dumps
from engine.errors import ConfigError, LoraWizardError
from engine.fileio import atomic_write_text, next_free_path

HEADER = "written by lora-wizard for kohya-ss/sd-scripts; train with:\n{command}"


@dataclass(frozen=True)
class ExportedFiles:
    training_toml: Path
    dataset_toml: Path
    prompts: Path | None
    command: str
    notes: tuple[str, ...]


def export_family(cfg: TrainConfig) -> ModelFamily:
    """The base model's family, which picks sd-scripts' script: the config's, else read from the weights."""
    if cfg.model.family != ModelFamily.AUTO:
        return cfg.model.family
    from engine.models.detect import detect_family

    try:
        return detect_family(Path(cfg.model.base_model).expanduser())
    except LoraWizardError as exc:
        raise ConfigError(
            f"model.family is auto and the base model cannot be read to tell its family ({exc}); "
            "set model.family (sd1, sd2 or sdxl) to export"
        ) from None


def export_subsets(cfg: TrainConfig) -> list[SubsetConfig]:
    """The folders to list: the config's own, or its `<repeats>_<name>` folders as scanned."""
    from engine.data.layout import concept_subsets
    from engine.data.subsets import resolve_img_folder

    ds = cfg.dataset
    if ds.subsets:
        return list(ds.subsets)
    subsets = concept_subsets(resolve_img_folder(ds.img_folder), is_reg=False) if ds.img_folder else []
    if ds.reg_img_folder is not None:
        subsets += concept_subsets(Path(ds.reg_img_folder).expanduser(), is_reg=True)
    return subsets


def export_config(cfg: TrainConfig, folder: Path, name: str) -> ExportedFiles:
    """Write `<name>.toml`, `<name>-dataset.toml` (and `<name>-prompts.txt` for prompt lines) into
    `folder`; another number is added to a name that is taken."""
    run = sd_scripts_run(cfg, export_family(cfg), export_subsets(cfg))
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    training_path = next_free_path(folder / f"{name}.toml")
    dataset_path = next_free_path(folder / f"{name}-dataset.toml")
    prompts_path = next_free_path(folder / f"{name}-prompts.txt") if run.prompts else None
    command = launch_command(run, training_path)
    training = {"dataset_config": str(dataset_path.resolve()), **run.training}
    if prompts_path is not None:
        training.setdefault("sampling", {})["sample_prompts"] = str(prompts_path.resolve())
        atomic_write_text(prompts_path, "\n".join(run.prompts or []) + "\n")
    atomic_write_text(dataset_path, dumps(run.dataset, "the folders of " + training_path.name))
    atomic_write_text(training_path, dumps(training, HEADER.format(command=command)))
    return ExportedFiles(training_path, dataset_path, prompts_path, command, run.notes)


def launch_command(run: SdScriptsRun, training_path: Path) -> str:
    """Run from sd-scripts' folder (its scripts import its `library` package)."""
    return f"accelerate launch {run.script} --config_file {shlex.quote(str(training_path.resolve()))}"

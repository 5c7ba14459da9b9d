"""The rulebook's rules about what preflight knows beyond the config: the machine (a CUDA GPU,
bfloat16, the optional packages an option needs) and the paths the run reads and writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from engine.config.machine import Facts, Machine
from engine.config.optimizers import REGISTRY as OPTIMIZERS
from engine.config.schema import Attention, MixedPrecision, NetworkType, TrainConfig
from engine.problems import Level, Problem


def machine_rules(cfg: TrainConfig, facts: Facts | None) -> Iterator[Problem]:
    """What the machine has: the packages an option needs, a CUDA GPU, bfloat16."""
    if facts is None:
        return
    yield from _packages(cfg, facts.machine)
    yield from _precision(cfg, facts.machine)
    yield from _attention(cfg, facts.machine)
    if cfg.model.lowram and not facts.machine.cuda:
        yield Problem("model.lowram", "has no effect on a CPU run: the models are in RAM either way", "turn it off", True, Level.WARNING)


def _packages(cfg: TrainConfig, machine: Machine) -> Iterator[Problem]:
    spec = OPTIMIZERS[cfg.optim.optimizer]
    if spec.package and not machine.has(spec.package):
        yield Problem(
            "optim.optimizer",
            f"needs the '{spec.pip_name}' package, which is not installed",
            f"run `.venv/bin/pip install {spec.pip_name}` (or pick another optimizer)",
            cfg.optim.optimizer,
        )
    if cfg.network.type in (NetworkType.LOHA, NetworkType.LOKR) and not machine.has("lycoris"):
        yield Problem(
            "network.type",
            "needs the lycoris-lora package, which is not installed",
            "run `.venv/bin/pip install lycoris-lora` (or pip install -e '.[lycoris]'), or use lora/locon",
            cfg.network.type,
        )


def _precision(cfg: TrainConfig, machine: Machine) -> Iterator[Problem]:
    opt = cfg.optim
    for name in ("full_fp16", "full_bf16"):
        if getattr(opt, name) and not machine.cuda:
            yield Problem(f"optim.{name}", "keeps the LoRA in half precision, which needs a CUDA GPU", "turn it off for a CPU run", True)
    if machine.cuda and opt.mixed_precision == MixedPrecision.BF16 and not machine.bf16:
        yield Problem(
            "optim.mixed_precision",
            "this GPU cannot compute in bfloat16 (it needs an Ampere or newer card)",
            "use fp16",
            opt.mixed_precision,
        )
    if not machine.cuda and opt.mixed_precision != MixedPrecision.NO:
        yield Problem(
            "optim.mixed_precision",
            "applies on a GPU; this machine has none, so the run trains in fp32 on the CPU",
            "set it to no to say so",
            opt.mixed_precision,
            Level.WARNING,
        )


def _attention(cfg: TrainConfig, machine: Machine) -> Iterator[Problem]:
    """xformers where it cannot run, and mem_eff, train with torch's SDPA, which computes the same."""
    attention = cfg.model.attention
    if attention == Attention.XFORMERS and not (machine.cuda and machine.has("xformers")):
        why = "there is no CUDA GPU here" if not machine.cuda else "the xformers package is not installed"
        yield Problem(
            "model.attention",
            f"{why}, so the run uses torch's SDPA attention (the same math)",
            "set it to sdpa to say so" + ("" if not machine.cuda else ", or `.venv/bin/pip install -e '.[xformers]'`"),
            attention,
            Level.WARNING,
        )
    if attention == Attention.MEM_EFF:
        yield Problem(
            "model.attention",
            "torch's SDPA already picks its memory-efficient (or flash) kernel on a GPU",
            "set it to sdpa to say so",
            attention,
            Level.WARNING,
        )


def path_rules(cfg: TrainConfig, facts: Facts | None) -> Iterator[Problem]:
    """Paths the run reads exist; the output folder can be made. The base model and the dataset
    are read (not only looked at) by preflight's model and dataset checks."""
    if facts is None or not facts.paths:
        return
    prompts = cfg.sampling.sample_prompts
    for where, value, kind in (
        ("model.vae", cfg.model.vae, "file"),
        ("network.network_weights", cfg.network.network_weights, "file"),
        ("saving.resume", cfg.saving.resume, "folder"),
        ("sampling.sample_prompts", None if isinstance(prompts, list) else prompts, "file"),  # a list holds the prompts
    ):
        path = None if value is None else Path(value).expanduser()
        if path is not None and not (path.is_file() if kind == "file" else path.is_dir()):
            what = "does not exist" if not path.exists() else f"is not a {kind}"
            yield Problem(where, what, "fix the path or remove the field", str(value))
    output = Path(cfg.saving.output_folder).expanduser()
    blocker = _file_in_the_way(output)
    if blocker is not None:
        where = "it is" if blocker == output else f"{blocker} is"
        yield Problem(
            "saving.output_folder",
            f"{where} a file, so the run folders cannot be made there",
            "choose another folder, or move the file",
            str(cfg.saving.output_folder),
        )


def _file_in_the_way(folder: Path) -> Path | None:
    """The folder itself or the nearest existing parent, when that is not a folder."""
    path = folder.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return None if path.is_dir() else path

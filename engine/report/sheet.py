"""What goes on a run's contact sheet, and the two files it is written to."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from engine.config.schema import TrainConfig
from engine.data.plan import RunPlan
from engine.events import Reporter, RunResult
from engine.fileio import atomic_write, atomic_write_text, next_free_path
from engine.run.prompts import SamplePrompt, parse_prompt_file

LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt")
DEFAULT_STEPS = 20  # the prompt made from the dataset's tags: enough for a recognisable image
TOP_TAGS = 6


def lora_files(cfg: TrainConfig, files: Sequence[Path]) -> list[tuple[str, Path]]:
    """(row label, file) of each LoRA the run saved, in the order saved (so by step)."""
    base = re.escape(cfg.saving.output_name or "last")
    rows = []
    for path in files:
        path = Path(path)
        if path.suffix not in LORA_SUFFIXES or not path.is_file():
            continue
        match = re.fullmatch(rf"{base}(?:-(step)?(\d{{6,}})|-(interrupted))?(?:-\d+)?", path.stem)
        if match is None:
            label = path.stem
        elif match[3]:
            label = "interrupted"
        elif match[2] is None:
            label = "final"
        else:
            label = f"{'step' if match[1] else 'epoch'} {int(match[2])}"
        rows.append((label, path))
    return rows


def report_prompts(cfg: TrainConfig, plan: RunPlan) -> list[SamplePrompt]:
    """The run's sample prompts; without any, one of the dataset's most frequent tags (what the
    LoRA was trained on, so its effect shows), at DEFAULT_STEPS steps."""
    if cfg.sampling.sample_prompts is not None:
        prompts = parse_prompt_file(cfg.sampling.sample_prompts)
        if prompts:
            return prompts
    return [default_prompt(list(plan.captions.values()))]


def default_prompt(captions: list[str]) -> SamplePrompt:
    from engine.data.captions import count_tags

    counts = count_tags(captions)
    tags = sorted(counts, key=lambda tag: (-counts[tag], tag))[:TOP_TAGS]
    return SamplePrompt(", ".join(tags) or "a picture", steps=DEFAULT_STEPS)


def image_count(prompts: int, files: int, strengths: int = 3) -> int:
    """Images a sheet makes: strength 0 once per prompt, the other strengths for every file."""
    return prompts * (1 + (strengths - 1) * files)


def write_report(cfg: TrainConfig, plan: RunPlan, result: RunResult, reporter: Reporter) -> list[Path]:
    """Render and write `<name>-report.html` and `<name>-report.png` beside the LoRA files;
    returns them ([] when the run saved no LoRA). Unreadable LoRA files are a ModelError before
    the model is loaded."""
    from engine.network.lora_file import load_lora_file
    from engine.report.draw import grid_image, loss_curve, png_bytes
    from engine.report.page import page
    from engine.report.render import render_sheet

    files = lora_files(cfg, result.files)
    if not files:
        return []
    for _, path in files:
        load_lora_file(path)  # a damaged file stops here, before minutes of loading and sampling
    prompts = report_prompts(cfg, plan)
    reporter.notice(f"contact sheet: {image_count(len(prompts), len(files))} images ({len(files)} files x {len(prompts)} prompts x strengths 0, 0.5, 1)")
    sheet = render_sheet(cfg, files, prompts)
    curve = loss_curve(result.losses, plan.total_steps, plan.steps_per_epoch)
    stem = f"{cfg.saving.output_name or 'last'}-report"
    grid = grid_image(sheet)
    png = atomic_write(next_free_path(result.run_dir / f"{stem}.png"), lambda tmp: tmp.write_bytes(png_bytes(grid)))
    html = atomic_write_text(next_free_path(result.run_dir / f"{stem}.html"), page(cfg, plan, result, sheet, curve))
    reporter.notice(f"contact sheet: {html}")
    return [html, png]

"""The contact sheet as one self-contained HTML page: every image embedded (base64), no script, no
link to anything outside the file, so it can be mailed, archived or opened years later."""

from __future__ import annotations

import base64
import json
from html import escape

from engine.config.schema import TrainConfig
from engine.data.plan import RunPlan
from engine.events import RunResult
from engine.report.draw import jpeg_bytes, png_bytes
from engine.report.render import Sheet

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #141414; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.facts, .hint { color: #555; margin: 2px 0; }
table.grid { border-collapse: collapse; }
table.grid th, table.grid td { border: 1px solid #ddd; padding: 3px; vertical-align: middle; }
table.grid thead th { background: #f4f4f4; font-weight: 600; }
table.grid tbody th { text-align: left; min-width: 140px; }
table.grid img { display: block; width: 200px; height: auto; }
table.settings td { padding: 2px 14px 2px 0; } table.settings td:first-child { color: #555; }
pre { background: #f6f6f6; padding: 10px; overflow: auto; }
"""


HINT = (
    "<p class=\"hint\">One row per saved LoRA. Each prompt at LoRA strength 0 (the base model: the same image in "
    "every row), 0.5 and 1.0, with the prompt's fixed seed, so a column compares the epochs.</p>"
)


def page(cfg: TrainConfig, plan: RunPlan, result: RunResult, sheet: Sheet, curve) -> str:
    name = cfg.saving.output_name or "last"
    minutes = f"{result.seconds / 60:.1f} min" if result.seconds >= 60 else f"{result.seconds:.0f} s"
    parts = [
        f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(name)}: contact sheet</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{escape(name)}: contact sheet</h1>",
        f"<p class=\"facts\">{escape(str(result.run_dir))} &middot; {result.steps} steps &middot; {minutes} &middot; {escape(cfg.model.base_model)}</p>",
        "<h2>Samples</h2>",
        HINT,
        grid_table(sheet),
        "<h2>Loss</h2>",
        _image_tag(png_bytes(curve), "image/png", "the loss curve") if curve is not None else "<p class=\"hint\">Too few loss reads to draw a curve.</p>",
        "<p class=\"hint\">The mean loss between reads (every 10 steps and at each epoch's end); grey lines: epoch ends.</p>",
        "<h2>Settings</h2>",
        settings_table(cfg, plan, result),
        f"<details><summary>The full config</summary><pre>{escape(json.dumps(cfg.model_dump(mode='json'), indent=2))}</pre></details>",
        "</body></html>\n",
    ]
    return "\n".join(parts)


def _image_tag(data: bytes, mime: str, alt: str) -> str:
    return f"<img src=\"data:{mime};base64,{base64.b64encode(data).decode('ascii')}\" alt=\"{escape(alt)}\">"


def grid_table(sheet: Sheet) -> str:
    count = len(sheet.strengths)
    head1 = "".join(f"<th colspan=\"{count}\" title=\"{escape(p.prompt)}\">{escape(_short(p.prompt))}</th>" for p in sheet.prompts)
    head2 = "".join(f"<th>strength {s:g}</th>" for _ in sheet.prompts for s in sheet.strengths)
    rows = []
    for row in sheet.rows:
        cells = "".join(
            f"<td>{_image_tag(jpeg_bytes(image), 'image/jpeg', f'{row.label}, {prompt.prompt}, strength {strength:g}')}</td>"
            for prompt, images in zip(sheet.prompts, row.images)
            for strength, image in zip(sheet.strengths, images)
        )
        rows.append(f"<tr><th>{escape(row.label)}<br><small>{escape(row.path.name)}</small></th>{cells}</tr>")
    return (
        "<table class=\"grid\" id=\"grid\"><thead>"
        f"<tr><th rowspan=\"2\">file</th>{head1}</tr><tr>{head2}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def settings_rows(cfg: TrainConfig, plan: RunPlan, result: RunResult) -> list[tuple[str, str]]:
    """The settings that explain a sheet: what trained, how long, at what learning rates."""
    net, opt, tr = cfg.network, cfg.optim, cfg.training
    width, height = cfg.dataset.width_height
    conv = f", conv {net.conv_dim} / {net.conv_alpha}" if net.conv_dim else ""
    rows = [
        ("base model", cfg.model.base_model),
        ("images", f"{cfg.dataset.img_folder} ({plan.num_train_images} images x repeats)"),
        ("resolution", f"{width}x{height}"),
        ("network", f"{net.type.value}, dim {net.dim} / alpha {net.alpha:g}{conv}, trains {net.train_on.value}"),
        ("optimizer", f"{opt.optimizer.value}, {opt.lr_scheduler.value}"),
        ("learning rate", f"{opt.learning_rate:g} (U-Net {opt.unet_lr or opt.learning_rate:g}, text encoder {opt.text_encoder_lr or opt.learning_rate:g})"),
        ("batch", f"{plan.batch_size} x accumulation {plan.grad_accum} x {plan.num_processes} process(es) = {plan.effective_batch}"),
        ("steps", f"{result.steps} of {plan.total_steps} ({plan.epochs} epochs of {plan.steps_per_epoch})"),
        ("seed", str(tr.seed)),
        ("precision", f"{opt.mixed_precision.value}, saved as {cfg.saving.save_precision.value}"),
        ("sampler", cfg.sampling.sample_sampler.value),
    ]
    rows += [("note", note) for note in result.notes]
    return rows


def settings_table(cfg: TrainConfig, plan: RunPlan, result: RunResult) -> str:
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in settings_rows(cfg, plan, result))
    return f"<table class=\"settings\">{body}</table>"

"""The contact sheet's pictures, drawn with PIL (no plotting library): the grid of images with its
row and column labels, and the loss curve with its epoch boundaries."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from engine.report.render import Sheet

CELL = 256  # the grid's cell side: a sheet of 10 epochs x 4 prompts x 3 strengths stays viewable
LABEL_WIDTH = 180
HEADER = 56
PAD = 4
BACKGROUND, INK, FAINT, LINE = (255, 255, 255), (20, 20, 20), (150, 150, 150), (200, 40, 40)


def font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def grid_image(sheet: Sheet) -> Image.Image:
    """Rows: the saved files; for each prompt a group of columns, one per strength."""
    columns = len(sheet.prompts) * len(sheet.strengths)
    width = LABEL_WIDTH + columns * (CELL + PAD) + PAD
    height = HEADER + len(sheet.rows) * (CELL + PAD) + PAD
    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    small, big = font(13), font(16)
    group = len(sheet.strengths) * (CELL + PAD)
    for p, prompt in enumerate(sheet.prompts):
        left = LABEL_WIDTH + p * group + PAD
        draw.text((left, 6), shorten(prompt.prompt, group // 7), fill=INK, font=small)
        for s, strength in enumerate(sheet.strengths):
            draw.text((left + s * (CELL + PAD), 30), f"strength {strength:g}", fill=FAINT, font=small)
    for r, row in enumerate(sheet.rows):
        top = HEADER + r * (CELL + PAD)
        draw.text((PAD * 2, top + CELL // 2 - 10), row.label, fill=INK, font=big)
        for p, images in enumerate(row.images):
            for s, image in enumerate(images):
                left = LABEL_WIDTH + p * group + s * (CELL + PAD) + PAD
                grid.paste(fit(image, CELL), (left, top))
    return grid


def fit(image: Image.Image, side: int) -> Image.Image:
    """The image scaled to fit a side x side cell (aspect kept), centred on the background."""
    scale = side / max(image.width, image.height)
    small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    cell = Image.new("RGB", (side, side), BACKGROUND)
    cell.paste(small, ((side - small.width) // 2, (side - small.height) // 2))
    return cell


def loss_curve(losses: Sequence[tuple[int, float]], total_steps: int, steps_per_epoch: int, size: tuple[int, int] = (900, 320)) -> Image.Image | None:
    """The loss at each read (the mean since the previous read) against the step, with a faint
    line at each epoch's end; None without two reads to draw between."""
    if len(losses) < 2:
        return None
    width, height = size
    left, right, top, bottom = 70, 20, 20, 40
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    small = font(12)
    low, high = min(v for _, v in losses), max(v for _, v in losses)
    span = (high - low) or max(abs(high), 1e-6) * 0.1
    low, high = low - span * 0.05, high + span * 0.05

    def at(step: float, value: float) -> tuple[float, float]:
        x = left + (width - left - right) * step / max(total_steps, 1)
        y = top + (height - top - bottom) * (high - value) / (high - low)
        return x, y

    for epoch_end in range(steps_per_epoch, total_steps, max(steps_per_epoch, 1)):
        x, _ = at(epoch_end, low)
        draw.line([(x, top), (x, height - bottom)], fill=(225, 225, 225))
    draw.rectangle([left, top, width - right, height - bottom], outline=FAINT)
    draw.line([at(s, v) for s, v in losses], fill=LINE, width=2)
    for value in (low, (low + high) / 2, high):
        _, y = at(0, value)
        draw.text((6, y - 7), f"{value:.4f}", fill=INK, font=small)
    draw.text((left, height - bottom + 8), "step 0", fill=INK, font=small)
    draw.text((width - right - 80, height - bottom + 8), f"step {total_steps}", fill=INK, font=small)
    return image


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def jpeg_bytes(image: Image.Image, side: int = 512) -> bytes:
    """An image for the HTML page: at most `side` pixels a side, JPEG (a page of a hundred PNGs
    would weigh tens of megabytes; the PNG grid beside it is lossless)."""
    scale = min(1.0, side / max(image.width, image.height))
    if scale < 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()

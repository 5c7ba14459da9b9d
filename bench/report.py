"""The benchmark's outputs: one plain-text table (the README keeps rich to the wizard) and the
same rows as JSON, so two runs can be compared field by field."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

from bench.measure import RowResult
from bench.rows import RowSpec

#: (header, how a row's value is shown); a missing value shows as "-"
COLUMNS: tuple[tuple[str, str], ...] = (
    ("model", "{}"),
    ("res", "{}"),
    ("train_on", "{}"),
    ("batch", "{}"),
    ("samples/s", "{:.2f}"),
    ("step ms", "{:.1f}"),
    ("peak GiB", "{:.2f}"),
    ("TFLOP/sample", "{:.3f}"),
    ("MFU %", "{:.1f}"),
    ("first step s", "{:.2f}"),
    ("setup s", "{:.1f}"),
)
SCHEMA = 1


def row_record(spec: RowSpec, result: RowResult) -> dict:
    """One JSON row: what was run, then what was measured."""
    return {
        "model": spec.model.name,
        "resolution": spec.resolution,
        "train_on": spec.train_on.value,
        "batch": spec.batch,
        **asdict(result),
    }


def _cells(record: dict) -> list:
    flops = record["flops_per_sample"]
    mfu = record["mfu"]
    return [
        record["model"],
        record["resolution"],
        record["train_on"],
        record["batch"],
        record["samples_per_s"],
        record["step_ms"],
        record["peak_gib"],
        None if flops is None else flops / 1e12,
        None if mfu is None else mfu * 100,
        record["first_step_s"],
        record["setup_s"],
    ]


def row_brief(record: dict) -> str:
    """One line per measured row, printed as it finishes."""
    if record["error"]:
        return f"  {record['error']}"
    peak = "" if record["peak_gib"] is None else f", peak {record['peak_gib']:.2f} GiB"
    return f"  {record['samples_per_s']:.2f} samples/s, MFU {record['mfu'] * 100:.1f}%{peak}, first step {record['first_step_s']:.2f} s"


def format_table(records: list[dict]) -> str:
    headers = [h for h, _ in COLUMNS]
    lines = [
        [("-" if value is None else fmt.format(value)) for value, (_, fmt) in zip(_cells(r), COLUMNS)]
        for r in records
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    out = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    out.append("  ".join("-" * w for w in widths))
    for record, line in zip(records, lines):
        text = "  ".join(cell.rjust(w) for cell, w in zip(line, widths))
        out.append(text + (f"  {record['error']}" if record["error"] else ""))
    return "\n".join(out)


def format_summary(doc: dict) -> str:
    """The lines under the table: device, matmul peak, latent caching."""
    peak, caching = doc["matmul_peak"], doc["latent_caching"]
    lines = [f"device: {doc['device']}; matmul peak: {peak['tflops']:.1f} TFLOP/s ({peak['n']}^3 {peak['dtype']}, median)"]
    if caching is not None:
        lines.append(
            f"latent caching: {caching['images']} images at {caching['resolution']} px in {caching['seconds']:.2f} s "
            f"({caching['images_per_s']:.1f} images/s, vae_batch_size {caching['vae_batch_size']})"
        )
    return "\n".join(lines)


def device_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (a file-name part)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def default_json_path(results_dir: Path, date: str, device: str, smoke: bool) -> Path:
    """results/<date>-<device>[-smoke].json; -2, -3 ... when a run of that day exists (never overwritten)."""
    stem = f"{date}-{device_slug(device)}" + ("-smoke" if smoke else "")
    path, n = results_dir / f"{stem}.json", 1
    while path.exists():
        n += 1
        path = results_dir / f"{stem}-{n}.json"
    return path


def write_json(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path

"""`python -m bench`: time the product's training step on full-size SD1.5 / SDXL (random weights).

    python -m bench                         # every default row (needs CUDA; says so and exits 0 without)
    python -m bench --model sd15 --batches 1,4 --steps 20
    python -m bench --smoke                 # the tiny demo model on any device: proves the harness

Rows run one after the other in this process, each with a fresh session (model loaded from the
cached random-weight folder, latents cached, LoRA injected, optimizer built), so each row's setup
time and first-step latency are measured as a user's run would see them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from bench.rows import (
    DEFAULT_ROWS,
    MODELS,
    SHARED_SETTINGS,
    SMOKE_ROWS,
    RowSpec,
    make_config,
    select_rows,
)
from engine.config.schema import TrainOn

BENCH_DIR = Path(__file__).resolve().parent
NEEDS_CUDA = (
    "python -m bench needs a CUDA GPU and torch {torch} sees none: nothing was measured. "
    "`python -m bench --smoke` checks the harness on this machine with the tiny demo model."
)


@dataclasses.dataclass(frozen=True, slots=True)
class Mode:
    """What differs between a real run and --smoke: sizes only, never the code path."""

    warmup: int
    windows: int
    steps: int
    min_images: int  # a row's dataset holds a multiple of its batch size, at least this many
    caching_images: int
    caching_model: str


FULL = Mode(warmup=5, windows=5, steps=10, min_images=16, caching_images=100, caching_model="sd15")
SMOKE = Mode(warmup=1, windows=2, steps=2, min_images=4, caching_images=4, caching_model="demo")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the tiny demo model, batch 1-2, a few steps, any device")
    parser.add_argument("--model", choices=("sd15", "sdxl", "all"), help="default: all")
    parser.add_argument("--batches", type=_batch_list, help="comma-separated batch sizes replacing each model's defaults, e.g. 1,4")
    parser.add_argument("--train-on", choices=("both", "unet_only"), help="only rows with this text-encoder setting")
    parser.add_argument("--steps", type=_positive, help="steps per timed window (default 10)")
    parser.add_argument("--windows", type=_positive, help="timed windows per row; samples/s is their median (default 5)")
    parser.add_argument("--warmup", type=_positive, help="untimed steps first, the first step included (default 5)")
    parser.add_argument("--json", type=Path, help="where to write the results (default bench/results/<date>-<device>.json)")
    parser.add_argument("--model-cache", type=Path, help="folder of the random-weight models (default <LORA_WIZARD_HOME>/bench-models)")
    args = parser.parse_args(argv)
    if args.smoke and args.model:
        parser.error("--smoke always uses the built-in demo model; drop --model")
    return args


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def _batch_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(_positive(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected batch sizes like 1,4,8, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print(NEEDS_CUDA.format(torch=torch.__version__))
        return 0
    if args.smoke and not torch.cuda.is_available():
        # BLAS threads that spin on a small CPU shared with other jobs can make a step 40x slower;
        # the smoke run proves the harness, its CPU numbers are not for comparison
        torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # one line per row, not a bar per file
    from bench.assets import BenchError
    from engine.errors import LoraWizardError
    from engine.run.setup import quiet_heavy_imports

    quiet_heavy_imports()
    try:
        run(args, say)
    except (BenchError, LoraWizardError) as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    return 0


def say(message: str) -> None:
    print(message, flush=True)


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict:
    """Measure every selected row, then the latent caching. The JSON file is rewritten after each
    measurement (with "complete": false until the end), so a run cut short keeps what it measured."""
    from bench.assets import write_dataset
    from bench.measure import LoopCounts, measure_latent_caching, measure_row
    from bench.report import (
        default_json_path,
        format_summary,
        format_table,
        row_brief,
        row_record,
        write_json,
    )

    mode = SMOKE if args.smoke else FULL
    counts = LoopCounts(args.warmup or mode.warmup, args.windows or mode.windows, args.steps or mode.steps)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    models = ["demo"] if args.smoke else ["sd15", "sdxl"] if args.model in (None, "all") else [args.model]
    train_on = TrainOn(args.train_on) if args.train_on else None
    rows = select_rows(SMOKE_ROWS if args.smoke else DEFAULT_ROWS, models, args.batches, train_on)
    now = dt.datetime.now()
    path = args.json or default_json_path(BENCH_DIR / "results", now.strftime("%Y-%m-%d"), device_name, args.smoke)
    bases = ModelFolders(args.model_cache, device, say)

    peak = measure_peak(device)
    say(f"matmul peak: {peak.tflops:.2f} TFLOP/s ({peak.n}^3 {peak.dtype})")
    doc = new_document(now, device_name, args.smoke, counts, peak)
    with tempfile.TemporaryDirectory(prefix="lora-wizard-bench-") as tmp:
        work = Path(tmp)
        for row in rows:
            images = row.batch * -(-mode.min_images // row.batch)  # only full batches
            folder = work / f"data-{row.resolution}-{images}"
            if not folder.exists():
                write_dataset(folder, images, row.resolution)
            cfg = make_config(row, bases.get(row.model.name), folder, work / "out")
            say(f"{row.model.name} {row.resolution}px {row.train_on.value} batch {row.batch} ({images} images) ...")
            doc["rows"].append(row_record(row, measure_row(cfg, row.batch, counts, peak, device)))
            write_json(path, doc)
            say(row_brief(doc["rows"][-1]))
        if mode.caching_model in models:
            spec = MODELS[mode.caching_model]
            folder = write_dataset(work / "caching", mode.caching_images, spec.resolution)
            cfg = make_config(RowSpec(spec, TrainOn.BOTH, 1), bases.get(spec.name), folder, work / "out")
            say(f"latent caching: {mode.caching_images} images at {spec.resolution}px ...")
            caching = measure_latent_caching(cfg, device)
            doc["latent_caching"] = {**dataclasses.asdict(caching), "images_per_s": caching.images_per_s}
    doc["complete"] = True
    write_json(path, doc)

    say("")
    say(format_table(doc["rows"]))
    say("")
    say(format_summary(doc))
    for note in dict.fromkeys(n for r in doc["rows"] for n in r["notices"]):  # each distinct notice once
        say(f"note: {note}")
    say(f"results: {path}")
    return doc


def measure_peak(device: torch.device):
    """The ceiling the MFU column is measured against: issue 6's 8192^3 bf16 matmul on the GPU, an
    fp32 one on a CPU (where the steps run in fp32 too)."""
    from bench.measure import clock_for, matmul_peak

    if device.type == "cuda":
        return matmul_peak(device, clock_for(device), n=8192, dtype=torch.bfloat16, repeats=50, warmup=10)
    return matmul_peak(device, clock_for(device), n=1024, dtype=torch.float32, repeats=5)


def new_document(now: dt.datetime, device_name: str, smoke: bool, counts, peak) -> dict:
    from bench.report import SCHEMA

    return {
        "schema": SCHEMA,
        "complete": False,
        "date": now.isoformat(timespec="seconds"),
        "device": device_name,
        "smoke": smoke,
        "cpu_threads": torch.get_num_threads(),
        "versions": versions(),
        "commit": git_commit(),
        "loop": dataclasses.asdict(counts),
        "settings": SHARED_SETTINGS,
        "matmul_peak": dataclasses.asdict(peak),
        "latent_caching": None,
        "rows": [],
    }


class ModelFolders:
    """The base_model each row names: builtin:demo, or the cached random-weight folder."""

    def __init__(self, cache: Path | None, device: torch.device, say: Callable[[str], None]) -> None:
        from engine.data.sample_data import cache_root

        self.cache = cache or cache_root() / "bench-models"
        self.device = device
        self.say = say

    def get(self, name: str) -> str:
        from bench.assets import random_model_folder

        folder = MODELS[name].config_folder
        if folder is None:
            return "builtin:demo"
        return str(random_model_folder(folder, self.cache, self.device, self.say))


def versions() -> dict[str, str | None]:
    import diffusers
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def git_commit() -> str | None:
    """The checkout's commit, with "+dirty" when files differ from it; None outside a git checkout."""
    def git(*args: str) -> str | None:
        done = subprocess.run(["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    return commit


if __name__ == "__main__":
    raise SystemExit(main())

"""What the benchmark measures: the rows, and the TrainConfig each row trains with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.config.schema import TrainConfig, TrainOn


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str  # what --model says and the table shows
    config_folder: str | None  # engine/assets/model_configs/<this>; None: the built-in demo
    resolution: int  # the model's native training size


MODELS: dict[str, ModelSpec] = {
    "sd15": ModelSpec("sd15", "sd15", 512),
    "sdxl": ModelSpec("sdxl", "sdxl_base", 1024),
    "demo": ModelSpec("demo", None, 256),  # --smoke: 256 px keeps a CPU step well under a second
}

#: model -> text-encoder setting -> batch sizes (issue 6). UNet + text encoder is the LETS
#: default; UNet only reads cached text-encoder outputs, the setting of the UNet-only targets.
DEFAULT_ROWS: dict[str, dict[TrainOn, tuple[int, ...]]] = {
    "sd15": {TrainOn.BOTH: (1, 4, 8, 16), TrainOn.UNET_ONLY: (1, 4)},
    "sdxl": {TrainOn.UNET_ONLY: (1, 4)},
}
SMOKE_ROWS: dict[str, dict[TrainOn, tuple[int, ...]]] = {
    "demo": {TrainOn.BOTH: (1, 2), TrainOn.UNET_ONLY: (2,)},
}

#: Settings every row shares. They follow the conditions of the sd-scripts anchors in issue 6
#: (LoRA rank 32 on the kohya target set, AdamW, bf16 autocast, SDPA, cached latents) and
#: sd-scripts' defaults where the product's differ: 75 caption tokens (the product's 150 would run
#: the text encoder twice per caption) and a constant schedule (the run never reaches its end).
SHARED_SETTINGS: dict[str, dict] = {
    "model": {"max_token_length": 75, "attention": "sdpa"},
    "network": {"type": "lora", "dim": 32, "alpha": 16.0},
    "optim": {"optimizer": "AdamW", "mixed_precision": "bf16", "lr_scheduler": "constant"},
    "dataset": {"cache_latents": True},
    "saving": {"tag_file": "off"},
    "logging": {"tensorboard": False},  # the timed steps write no event files (a run's default does)
}
#: far beyond any benchmark run, so the plan never ends before the timing does
PLAN_STEPS = 100_000


@dataclass(frozen=True, slots=True)
class RowSpec:
    model: ModelSpec
    train_on: TrainOn
    batch: int

    @property
    def resolution(self) -> int:
        return self.model.resolution


def select_rows(
    table: dict[str, dict[TrainOn, tuple[int, ...]]],
    models: list[str],
    batches: tuple[int, ...] | None = None,
    train_on: TrainOn | None = None,
) -> list[RowSpec]:
    """The rows of `table` for `models`, in order. `batches` replaces every row group's batch
    sizes; `train_on` keeps one text-encoder setting (a model without rows for it gets that
    setting with the batch sizes of its first group)."""
    rows = []
    for name in models:
        groups = table[name]
        if train_on is not None:
            groups = {train_on: groups.get(train_on) or next(iter(groups.values()))}
        for setting, sizes in groups.items():
            rows += [RowSpec(MODELS[name], setting, batch) for batch in batches or sizes]
    return rows


def make_config(row: RowSpec, base_model: str, img_folder: Path, output_folder: Path) -> TrainConfig:
    """The config of one row: the shared settings, this row's model, dataset and batch size.

    All images are square at the row's resolution, so every batch falls in one bucket and has the
    same shape (no bucket mixing inside the timed windows)."""
    side = row.resolution
    data = {section: dict(values) for section, values in SHARED_SETTINGS.items()}
    data["model"]["base_model"] = base_model
    data["network"]["train_on"] = row.train_on.value
    data["dataset"].update(
        img_folder=str(img_folder), resolution=side, min_bucket_reso=side // 2, max_bucket_reso=side
    )
    data["training"] = {"batch_size": row.batch, "max_steps": PLAN_STEPS, "seed": 0}
    data["saving"]["output_folder"] = str(output_folder)
    return TrainConfig.model_validate(data)

"""TensorBoard logs of a run, under the tag names sd-scripts uses, so runs compare side by side.

    log = open_train_log(cfg, run_dir, is_main_process=acc.is_main_process)
    log.step(step, loss, learning_rates(optimizer))   # every optimizer step; loss=None between reads
    log.epoch(epoch)                                  # at the end of each epoch
    log.samples(step, paths)                          # after sample images were written
    log.close()

Tags (kohya-ss/sd-scripts `train_network.py`, `generate_step_logs` and the end of each epoch):
`loss/current` (the loss as read), `loss/average` (mean over the current epoch so far),
`lr/textencoder`, `lr/unet` (`lr/textencoder1`, `lr/textencoder2` with one rate per SDXL encoder),
`lr/d*lr/<group>` for D-Adaptation/Prodigy, and `loss/epoch_average` with the epoch as its x axis
(sd-scripts' current name; versions before 2024 called it `loss/epoch`).

By default (logging.tensorboard, no log_dir) a run logs into its own run folder, `<run folder>/logs`:
`tensorboard --logdir output` then shows every run of an output folder side by side. With
logging.log_dir, each run writes into its own folder `<log_dir>/<log_prefix><output_name or
'last'>-<run folder name>` (`logs/mychar-run3`); a folder that already exists (another output
folder with the same run number) is never shared: the next free name (`mychar-run3-2`) is used
instead, so two runs' curves never mix. logging.tensorboard=false writes no logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.config.schema import TrainConfig
from engine.errors import MissingPackageError
from engine.fileio import next_free_path

LOSS_CURRENT = "loss/current"
LOSS_AVERAGE = "loss/average"
LOSS_EPOCH = "loss/epoch_average"
FLUSH_SECONDS = 10  # TensorBoard is watched while the run goes on: do not hold events for the default 2 min


def learning_rates(optimizer) -> dict[str, float]:
    """{"textencoder": lr, "unet": lr, ...} from the optimizer's named param groups (the names that
    `LoraNetwork.param_groups` gives), plus "d*lr/<name>" where the optimizer adapts a `d`."""
    rates: dict[str, float] = {}
    for index, group in enumerate(optimizer.param_groups):
        name = str(group.get("name", f"group{index}")).replace("text_encoder", "textencoder")
        rates[name] = float(group["lr"])
        if "d" in group:
            rates[f"d*lr/{name}"] = float(group["d"]) * float(group["lr"])
    return rates


#: a run's own log folder, inside its run folder, when logging.log_dir is not set
RUN_LOGS = "logs"


def log_folder(cfg: TrainConfig, run_dir: Path) -> Path:
    """Where this run's events go (not created): `<run folder>/logs`, or with logging.log_dir
    `<log_dir>/<prefix><name>-<run folder name>`."""
    if cfg.logging.log_dir is None:
        return Path(run_dir) / RUN_LOGS
    name = f"{cfg.logging.log_prefix or ''}{cfg.saving.output_name or 'last'}-{Path(run_dir).name}"
    return Path(cfg.logging.log_dir) / name


def open_train_log(cfg: TrainConfig, run_dir: Path, *, is_main_process: bool) -> TrainLog | NullTrainLog:
    """The run's TensorBoard log; a log that does nothing with logging.tensorboard off or on a
    process other than the main one (only one process writes events)."""
    if not cfg.logging.tensorboard or not is_main_process:
        return NullTrainLog()
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MissingPackageError(
            "TensorBoard logs need the tensorboard package: run `.venv/bin/pip install tensorboard`, "
            "or set logging.tensorboard to false"
        ) from None
    folder = _fresh_folder(log_folder(cfg, run_dir))
    writer = SummaryWriter(log_dir=str(folder), flush_secs=FLUSH_SECONDS)
    log = TrainLog(writer, folder)
    log.text("config", "```json\n" + cfg.model_dump_json(indent=2) + "\n```")
    return log


def _fresh_folder(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        candidate = next_free_path(path)
        try:
            candidate.mkdir()  # atomic: a second run racing for the same name gets the next one
            return candidate
        except FileExistsError:
            continue


class TrainLog:
    """Writes one run's scalars (and sample images) as TensorBoard events into `folder`."""

    def __init__(self, writer: Any, folder: Path):
        self.writer = writer
        self.folder = folder
        self._loss_sum = 0.0  # loss x steps covered, over the current epoch
        self._loss_steps = 0
        self._last_loss_step: int | None = None  # set by the first step: a resumed run starts late

    def step(self, step: int, loss: float | None, lrs: Mapping[str, float]) -> None:
        """Log the learning rates at `step`, and the loss when one was read at this step.

        The loop reads the loss from the device only every few steps (a host sync per step would
        stall the GPU); the value it reads is the mean over the steps since the previous read, so
        the running average weighs it by that many steps. Call this at every optimizer step (the
        first call marks where a resumed run starts), and read the loss at each epoch's last step
        too: then `loss/average` and `loss/epoch_average` are the exact means of the epoch's steps.
        """
        if self._last_loss_step is None:
            self._last_loss_step = step - 1
        for name, value in lrs.items():
            self.writer.add_scalar(f"lr/{name}", value, step)
        if loss is None:
            return
        covered = max(1, step - self._last_loss_step)
        self._last_loss_step = step
        self._loss_sum += loss * covered
        self._loss_steps += covered
        self.writer.add_scalar(LOSS_CURRENT, loss, step)
        self.writer.add_scalar(LOSS_AVERAGE, self._loss_sum / self._loss_steps, step)

    def epoch(self, epoch: int, mean_loss: float | None = None) -> None:
        """End of an epoch: log its mean loss (by default the running average of the losses that
        arrived during it) against the epoch number, and start the next epoch's average."""
        if mean_loss is None and self._loss_steps:
            mean_loss = self._loss_sum / self._loss_steps
        if mean_loss is not None:
            self.writer.add_scalar(LOSS_EPOCH, mean_loss, epoch)
        self._loss_sum, self._loss_steps = 0.0, 0

    def samples(self, step: int, paths: Sequence[Path]) -> None:
        """Show sample images in TensorBoard's Images tab: `samples/00`, `samples/01`, `samples/grid`
        (the part of each file name after its last `_`), so a slider walks through the steps."""
        import numpy as np
        from PIL import Image

        for path in paths:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            self.writer.add_image(f"samples/{Path(path).stem.rsplit('_', 1)[-1]}", pixels, step, dataformats="HWC")

    def text(self, tag: str, markdown: str) -> None:
        self.writer.add_text(tag, markdown, 0)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Other per-step numbers, e.g. max-norm regularisation's `max_norm/keys_scaled`."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()

    def __enter__(self) -> TrainLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullTrainLog:
    """The log of a run with logging.tensorboard off, and of every process but the main one."""

    folder = None

    def step(self, step: int, loss: float | None, lrs: Mapping[str, float]) -> None:
        pass

    def epoch(self, epoch: int, mean_loss: float | None = None) -> None:
        pass

    def samples(self, step: int, paths: Sequence[Path]) -> None:
        pass

    def text(self, tag: str, markdown: str) -> None:
        pass

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullTrainLog:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

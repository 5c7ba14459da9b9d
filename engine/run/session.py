"""A run's working state: what setup made once (engine/run/setup.py) and the loop works with.

A record, without behaviour: the step reads its own part (`StepInputs`, engine/run/step.py), saving
takes the network and the metadata, sampling the model and the prompts; each helper receives what
it uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config.schema import TrainConfig
from engine.data.plan import RunPlan
from engine.events import Reporter

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch.optim.lr_scheduler import LambdaLR

    from engine.models.components import BaseComponents
    from engine.run.prompts import SamplePrompt
    from engine.run.state import Position
    from engine.run.step import StepInputs
    from engine.run.tracking import NullTrainLog, TrainLog


@dataclass
class Session:
    cfg: TrainConfig  # as validated; never rewritten
    plan: RunPlan  # the plan preflight made: the step count printed is the step count trained
    run_dir: Path
    accelerator: Accelerator
    model: BaseComponents
    network: Any  # engine.network.inject.LoraNetwork, or the LyCORIS one (same interface)
    optimizer: Any  # accelerate's wrapper of the torch optimizer (it unscales fp16 gradients)
    scheduler: LambdaLR
    inputs: StepInputs
    metadata: dict[str, str]  # ss_* / modelspec.* of every file this run saves
    reporter: Reporter
    train_log: TrainLog | NullTrainLog
    start: Position | None = None  # where a resumed run continues
    sample_prompts: list[SamplePrompt] = field(default_factory=list)
    extra_files: list[Path] = field(default_factory=list)  # written at setup (the tag list)

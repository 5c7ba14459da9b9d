"""A run's working state, set up once by engine.run.setup.prepare_session and used by every step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.config.schema import TrainConfig
from engine.data.latents import LatentCache
from engine.events import Reporter

#: with several processes, how often (in steps) they compare stop requests and timed-save clocks
AGREE_EVERY = 10


@dataclass
class Session:
    """What the loop works with, set up once per run."""

    cfg: TrainConfig
    plan: Any
    run_dir: Path
    accelerator: Any
    components: Any
    network: Any
    optimizer: Any
    scheduler: Any
    latents: LatentCache | None
    alphas_cumprod: torch.Tensor  # the training schedule, on the CPU (noise is drawn there)
    all_snr: torch.Tensor  # SNR of the plain schedule, on the device (sd-scripts weights by it)
    weight_dtype: torch.dtype
    train_unet: bool
    train_text_encoder: bool
    captions: dict[Path, str]
    metadata: dict[str, str]
    reporter: Reporter
    extra_files: list[Path] = field(default_factory=list)
    sample_prompts: list = field(default_factory=list)  # engine.run.sampling.SamplePrompt
    train_log: Any = None  # engine.run.tracking.TrainLog or NullTrainLog
    start: Any = None  # engine.run.state.Position when resuming a saved state
    text_cache: Any = None  # engine.text.cache.TextCache when the text-encoder outputs are cached
    _image_pool: Any = None  # the image-loading threads (uncached latents only)

    def sample(self, epoch: int, step: int, epoch_end: bool) -> list[Path]:
        """Sample images on the main process (the others wait), shown in TensorBoard too."""
        from engine.run.sampling import generate_samples, sample_tag

        acc, cfg = self.accelerator, self.cfg
        paths: list[Path] = []
        if acc.is_main_process:
            encoders_were = [next(e.parameters()).device for e in self.components.text_encoders]
            for encoder in self.components.text_encoders:
                encoder.to(acc.device)  # the text cache may have parked them on the CPU
            paths = generate_samples(
                self.components,
                acc.unwrap_model(self.network),
                self.sample_prompts,
                sampler=cfg.sampling.sample_sampler,
                seed=cfg.training.seed,
                out_dir=self.run_dir / "sample",
                tag=sample_tag(cfg.saving.output_name, epoch, step, epoch_end),
                device=acc.device,
                dtype=self.weight_dtype,
                clip_skip=cfg.model.clip_skip,
                v_parameterization=cfg.model.v_parameterization,
                max_token_length=cfg.model.max_token_length,
                default_size=cfg.dataset.width_height,
            )
            for encoder, device in zip(self.components.text_encoders, encoders_were):
                encoder.to(device)
            self.train_log.samples(step, paths)
            self.reporter.notice(f"sample images at step {step}: {paths[-1]}")
        acc.wait_for_everyone()
        return paths

    @property
    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.network.parameters() if p.requires_grad]

    def batch_loss(self, batch, epoch: int, index: int) -> torch.Tensor:
        from engine.run.step import batch_loss

        return batch_loss(self, batch, epoch, index)

    def save(self, epoch: int, step: int, suffix: str | None) -> list[Path]:
        from engine.run.saving import save_lora

        if not self.accelerator.is_main_process:
            return []
        path = save_lora(self, self.run_dir, epoch, step, suffix)
        self.reporter.saved(path)
        return [path]

    def image_loader(self):
        """Threads that decode images for uncached latents (dataset.max_data_loader_n_workers; 0 =
        in the training thread). Kept for the whole run with persistent_data_loader_workers,
        else started afresh each epoch (`end_epoch`)."""
        workers = self.cfg.dataset.max_data_loader_n_workers
        if self.latents is not None or workers == 0:
            return None
        if self._image_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._image_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lora-wizard-images")
        return self._image_pool

    def end_epoch(self) -> None:
        if self._image_pool is not None and not self.cfg.dataset.persistent_data_loader_workers:
            self._image_pool.shutdown()
            self._image_pool = None

    def average_gradients(self) -> None:
        """With several processes: every process gets the mean of all processes' gradients."""
        if self.accelerator.num_processes == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for p in self.trainable if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.accelerator.num_processes
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def agree(self, step: int, *flags: bool) -> tuple[bool, ...]:
        """Decisions every process must take together (stop on Ctrl-C, a timed state save).

        One process alone: the flags as they are. Several: each process may see a Ctrl-C or the
        clock at a different step, and one that stops or saves alone would leave the others
        waiting in a collective. So they compare flags (any process's True wins) every
        `AGREE_EVERY` steps, the same steps on every process, and act only then.
        """
        if self.accelerator.num_processes == 1:
            return flags
        if step % AGREE_EVERY:
            return tuple(False for _ in flags)
        import torch.distributed as dist

        votes = torch.tensor([float(f) for f in flags], device=self.accelerator.device)
        dist.all_reduce(votes, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in votes.tolist())

    def maybe_stop_text_encoder(self, step: int) -> None:
        """training.stop_text_encoder_training: after that share of the steps, the text encoder's
        LoRA stops learning (its gradients stop; the optimizer skips parameters without one)."""
        percent = self.cfg.training.stop_text_encoder_training
        if not percent or not self.train_text_encoder:
            return
        if step >= math.ceil(self.plan.total_steps * percent / 100):
            for module in self.accelerator.unwrap_model(self.network).text_encoder_loras:
                module.requires_grad_(False)
            self.train_text_encoder = False
            self.reporter.notice(f"step {step}: the text encoder stops training ({percent}% of the steps)")

    def release(self) -> None:
        """Drop the model and optimizer so the next run of a queue starts with free memory."""
        if self._image_pool is not None:
            self._image_pool.shutdown()
            self._image_pool = None
        if self.network is not None:
            self.accelerator.unwrap_model(self.network).remove()
        self.train_log.close()
        self.components = self.network = self.optimizer = self.scheduler = self.latents = None

"""Everything a run sets up once before its first step, as a short list of named parts:

    accelerator -> model (loaded, checked, frozen) -> inputs cached (latents, text-encoder outputs)
    -> network (the LoRA, maybe from a LoRA file) -> optimizer and LR schedule -> restored state
    -> the Session the loop works with (engine/run/session.py)

The order matters for reproducibility: the LoRA's initial weights are the first draw from torch's
global generator after it is seeded here, so nothing before them may draw from it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from engine.config.machine import Facts, this_machine
from engine.config.rules import check
from engine.config.schema import Attention, MixedPrecision, TrainConfig
from engine.data.plan import RunPlan
from engine.errors import ConfigError, problems_message
from engine.events import Phase, Reporter, StopSignal
from engine.models.components import BaseComponents
from engine.problems import errors, warnings
from engine.quiet import quiet_heavy_imports  # noqa: F401 - train and the benchmark call it from here
from engine.run.build import (
    build_network,
    build_optimizer,
    restore,
    starting_network,
    trains,
)
from engine.run.distributed import check_launch
from engine.run.inputs import cache_latents, image_loader, text_cache_for
from engine.run.losses import compute_snr
from engine.run.metadata import RunFacts, training_metadata
from engine.run.noise import ddpm_alphas_cumprod
from engine.run.prompts import parse_prompt_file
from engine.run.saving import write_tag_file
from engine.run.session import Session
from engine.run.step import StepInputs
from engine.run.tracking import open_train_log
from engine.text.encoding import clip_skip_used


def prepare_session(
    cfg: TrainConfig,
    plan: RunPlan,
    run_dir: Path,
    reporter: Reporter,
    stop: StopSignal | None = None,
    resume_from: Path | None = None,
) -> Session:
    """Set up a run of `cfg` with the plan preflight made; `resume_from` is a state folder to
    continue from (saving.resume, or the queue's retry of an interrupted run)."""
    acc = make_accelerator(cfg, plan)
    if acc.device.type == "cpu":
        use_one_cpu_thread(reporter)
    prompts = parse_prompt_file(cfg.sampling.sample_prompts) if cfg.sampling.sample_prompts else []
    torch.manual_seed(cfg.training.seed)
    started_at = time.time()
    model = load_model(cfg, acc, reporter)
    weight_dtype = weight_dtype_for(acc.mixed_precision)
    latents = cache_latents(cfg, plan, model, acc, reporter, stop) if cfg.dataset.cache_latents else None
    text_cache = ready_for_training(cfg, plan, model, acc, weight_dtype, reporter)
    network_cfg, start_weights = starting_network(cfg, reporter)
    network = build_network(cfg, network_cfg, model, start_weights, acc, weight_dtype, reporter)
    optimizer, scheduler, optimizer_name = build_optimizer(cfg, network, plan, model.family, acc)
    start = restore(resume_from or cfg.saving.resume, cfg, plan, network, optimizer, scheduler, acc, reporter)
    inputs = StepInputs(
        cfg, model, acc, plan, latents, text_cache, *noise_schedules(cfg, acc), weight_dtype, model.v_prediction,
        images=image_loader(cfg, latents),
        train_text_encoder=trains(network_cfg)[1],
    )
    facts = RunFacts(
        family=model.family,
        session_id=random.Random(f"session:{started_at}").randint(0, 2**32),
        started_at=started_at,
        optimizer=optimizer_name,
        v_prediction=model.v_prediction,
        clip_skip=clip_skip_used(model.family, cfg.model.clip_skip),
    )
    tag_file = write_tag_file(cfg, plan.captions, run_dir) if acc.is_main_process else None
    return Session(
        cfg=cfg,
        plan=plan,
        run_dir=run_dir,
        accelerator=acc,
        model=model,
        network=network,
        optimizer=optimizer,
        scheduler=scheduler,
        inputs=inputs,
        metadata=training_metadata(cfg, network_cfg, plan, facts),
        reporter=reporter,
        train_log=open_train_log(cfg, run_dir, is_main_process=acc.is_main_process),
        start=start,
        sample_prompts=prompts,
        extra_files=[tag_file] if tag_file else [],
    )


def make_accelerator(cfg: TrainConfig, plan: RunPlan):
    """accelerate for mixed precision, the devices and the processes. Gradient accumulation is
    the loop's own (engine/run/train.py), so accelerate steps the optimizer whenever asked."""
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    precision = cfg.optim.mixed_precision if cuda else MixedPrecision.NO  # the rulebook warned about it
    acc = Accelerator(mixed_precision=precision.value, cpu=not cuda)
    check_launch(acc.num_processes)
    if plan.num_processes != acc.num_processes:
        raise ConfigError(
            f"the run was planned for {plan.num_processes} processes but {acc.num_processes} were launched; "
            "plan it in the same launch that trains it"
        )
    return acc


def use_one_cpu_thread(reporter: Reporter) -> None:
    """A CPU run computes on one thread, however it was started (train() gives the count back).

    A CPU run's bytes depend on torch's thread count, and that count comes from outside the config:
    OMP_NUM_THREADS / MKL_NUM_THREADS, the CPUs the process may use, and `accelerate launch`, which
    exports OMP_NUM_THREADS=1 unless told otherwise; so `python run_wizard.py replay` and
    `accelerate launch run_wizard.py replay` of one config gave different LoRAs on one machine.
    torch picks kernels by the count (a 1x1 convolution goes to oneDNN only with more than one
    thread: `ConvParams::use_mkldnn` in aten/src/ATen/native/Convolution.cpp, pytorch PR #52909);
    `at::parallel_for` cuts a loop into one chunk per thread (aten/src/ATen/ParallelOpenMP.h), and
    where a chunk's edge falls inside a vector the elementwise kernels compute it with scalar code
    that rounds differently (GELU on the GEGLU gate, a strided view: 3 threads differ); and the CPU
    flash-attention kernel gives each thread a scratch buffer at thread x buffer size, so for short
    queries (1 token in the 64 px SD1.5 mid block) a head's last bits depend on which thread runs
    it, through that buffer's alignment (aten/src/ATen/native/cpu/FlashAttentionKernel.cpp; a
    buffer size that is a multiple of 64 bytes removes it). oneDNN, too, gives equal results only
    for an equal thread count (https://github.com/uxlfoundation/oneDNN/issues/1443). With one
    thread, how the process was started no longer matters.
    A CPU run is the demo, the tests or a check; on a small CPU shared with other jobs a second
    OpenMP thread that waits for a busy core made steps slower, not faster. GPU runs are untouched.
    """
    threads = torch.get_num_threads()
    if threads != 1:
        reporter.notice(f"CPU run: computing on 1 thread (not {threads}) so that a replay gives the same bytes")
        torch.set_num_threads(1)


def noise_schedules(cfg: TrainConfig, acc) -> tuple[torch.Tensor, torch.Tensor]:
    """The training noise schedule (on the CPU, where noise is drawn; zero terminal SNR when asked)
    and the plain schedule's SNR on the device (sd-scripts weights losses by it)."""
    return ddpm_alphas_cumprod(zero_terminal_snr=cfg.training.zero_terminal_snr), compute_snr(ddpm_alphas_cumprod()).to(acc.device)


def weight_dtype_for(precision: str) -> torch.dtype:
    """Frozen base weights are stored in the autocast dtype; the LoRA's own weights stay fp32."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)


def load_model(cfg: TrainConfig, acc, reporter: Reporter) -> BaseComponents:
    """The base model, checked against the rulebook now that its family is certain, and frozen:
    nothing of it trains but the LoRA that is added later. The VAE runs in fp32 (SD's VAEs
    overflow in fp16)."""
    from engine.models.loading import load_base_model

    reporter.phase(Phase.LOADING_MODEL)
    model = load_base_model(
        cfg.model.base_model, cfg.model.family, vae=cfg.model.vae, v_parameterization=cfg.model.v_parameterization
    )
    for note in model.notes:
        reporter.notice(note)
    hold_to_the_rulebook(cfg, model.family, acc.num_processes, model.v_prediction, reporter)
    for module in (model.unet, model.vae, *model.text_encoders):
        module.requires_grad_(False)
        module.eval()
    model.vae.to(acc.device, dtype=torch.float32)
    if cfg.model.lowram and acc.device.type != "cpu":
        # for machines with more GPU memory than RAM (Colab): the weights leave RAM at once
        weight_dtype = weight_dtype_for(acc.mixed_precision)
        for module in (model.unet, *model.text_encoders):
            module.to(acc.device, dtype=weight_dtype)
    return model


def hold_to_the_rulebook(cfg: TrainConfig, family, num_processes: int, v_prediction: bool, reporter: Reporter) -> None:
    """The rulebook's verdict once the model's family is known for sure: its warnings are shown in
    the run's log; an error means the run was started without preflight (a direct `train` call),
    and is the same error preflight would have given."""
    problems = check(cfg, Facts(this_machine(), family, num_processes, paths=False, v_prediction=v_prediction))
    refused = errors(problems)
    if refused:
        raise ConfigError(problems_message("the config breaks these rules", [str(p) for p in refused]))
    for problem in warnings(problems):
        reporter.notice(str(problem))


def ready_for_training(cfg: TrainConfig, plan: RunPlan, model: BaseComponents, acc, weight_dtype, reporter: Reporter):
    """The U-Net and text encoders on the device in their training dtype, the attention kernel and
    gradient checkpointing set; returns the text-encoder cache when the captions allow one (the
    encoders then leave the device: the steps read the cache)."""
    model.unet.to(acc.device, dtype=weight_dtype)
    for encoder in model.text_encoders:
        encoder.to(acc.device, dtype=weight_dtype)
    text_cache = text_cache_for(cfg, plan, model, acc, reporter)
    if text_cache is not None:
        for encoder in model.text_encoders:
            encoder.to("cpu")
    if cfg.model.attention == Attention.XFORMERS and torch.cuda.is_available() and _has_xformers():
        model.unet.enable_xformers_memory_efficient_attention()  # else diffusers' default, torch SDPA
    if cfg.optim.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
        for encoder in model.text_encoders:
            encoder.gradient_checkpointing_enable()
    return text_cache


def _has_xformers() -> bool:
    import importlib.util

    return importlib.util.find_spec("xformers") is not None


def release(session: Session) -> None:
    """Drop the model and optimizer so the next run of a queue starts with free memory."""
    if session.inputs.images is not None:
        session.inputs.images.close()
    session.network.remove()
    session.train_log.close()
    session.model = session.network = session.optimizer = session.scheduler = session.inputs = None  # type: ignore[assignment]

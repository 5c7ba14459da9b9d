"""Sample images while training: the prompt file, when to sample, and the images.

A prompt file is sd-scripts' text format, one prompt a line; blank lines and `#` lines are skipped:

    # my character, two views
    mychar, red dress, standing --n lowres, bad hands --w 512 --h 768 --s 28 --l 7 --d 42
    mychar, sitting --ss euler_a

Options (sd-scripts `line_to_prompt_dict`): `--n` negative prompt, `--w`/`--h` size (multiples of 8),
`--s` steps (1-1000, default 30), `--l` guidance scale (default 7.5), `--d` seed (default: the
training seed + the prompt's index, so every sampling shows the same noise and the images of two
epochs compare), `--ss` sampler for this prompt. A size left out is the training resolution (sd-scripts
uses 512x512, too small for SDXL). Unlike sd-scripts, an option we do not know, or a value it cannot
use, is an error naming the file and line, not a silently ignored or rounded value.

Images are made with diffusers' pipelines built around the training's own modules: the LoRA is
patched into the U-Net and text encoders, so the pipeline sees the trained network as it is now.
The conditioning is computed as in training (`engine.text.encoding`: clip_skip, 75-token chunks
up to max_token_length, SDXL's pooled embedding) and handed to the pipeline as `prompt_embeds`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.config.schema import ModelFamily, Sampler, SamplingConfig
from engine.errors import ConfigError
from engine.fileio import atomic_write, next_free_path

DEFAULT_STEPS = 30  # sd-scripts' defaults for a prompt without --s / --l
DEFAULT_SCALE = 7.5
MAX_STEPS = 1000


@dataclass(frozen=True, slots=True)
class SamplePrompt:
    prompt: str
    negative: str = ""
    width: int | None = None  # None: the training resolution
    height: int | None = None
    steps: int = DEFAULT_STEPS
    scale: float = DEFAULT_SCALE
    seed: int | None = None  # None: the training seed + the prompt's index
    sampler: Sampler | None = None  # None: sampling.sample_sampler


# ---------------------------------------------------------------------------------------- prompt file


class BadValue(ValueError):
    """A prompt option's value that parses but cannot be used; the message says what to write."""


def _size(text: str) -> int:
    value = int(text)
    if value < 64 or value % 8:
        below = max(64, value - value % 8)
        raise BadValue(f"must be a multiple of 8 and at least 64, e.g. {below} or {below + 8}")
    return value


def _steps(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_STEPS:
        raise BadValue(f"must be between 1 and {MAX_STEPS}")
    return value


def _scale(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise BadValue("must be a number of 0 or more (7.5 is usual; 1 or less turns guidance off)")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**63:
        raise BadValue(f"must be a whole number from 0 to {2**63 - 1}")
    return value


def _sampler(text: str) -> Sampler:
    try:
        return Sampler(text.lower())
    except ValueError:
        raise BadValue(f"must be one of {', '.join(s.value for s in Sampler)}") from None


def _text(text: str) -> str:
    return text


#: option letter -> (SamplePrompt field, parser); the parser raises BadValue with the fix
PROMPT_OPTIONS: dict[str, tuple[str, Callable[[str], object]]] = {
    "n": ("negative", _text),
    "w": ("width", _size),
    "h": ("height", _size),
    "s": ("steps", _steps),
    "l": ("scale", _scale),
    "d": ("seed", _seed),
    "ss": ("sampler", _sampler),
}


def parse_prompt_line(line: str, where: str) -> SamplePrompt:
    """One line `prompt --x value --y value`; `where` ("file, line N") prefixes every error."""
    # sd-scripts splits on " --": a prompt cannot hold " --" itself, and neither can a negative prompt
    text, *options = line.strip().split(" --")
    text = text.strip()
    if not text or text.startswith("--"):
        raise ConfigError(f"{where}: the line has no prompt before its options; write the prompt first")
    values: dict[str, object] = {}
    for option in options:
        letter, _, raw = option.strip().partition(" ")
        letter, raw = letter.lower(), raw.strip()
        if letter not in PROMPT_OPTIONS:
            known = " ".join(f"--{k}" for k in PROMPT_OPTIONS)
            raise ConfigError(f"{where}: unknown option --{letter}; the options are {known}")
        field, parse = PROMPT_OPTIONS[letter]
        if field in values:
            raise ConfigError(f"{where}: --{letter} is given twice; keep one")
        if not raw:
            raise ConfigError(f"{where}: --{letter} needs a value")
        try:
            values[field] = parse(raw)
        except BadValue as exc:
            raise ConfigError(f"{where}: --{letter} {raw}: {exc}") from None
        except ValueError:  # int() or float() of something else
            raise ConfigError(f"{where}: --{letter} {raw}: is not a number") from None
    return SamplePrompt(prompt=text, **values)  # type: ignore[arg-type]


def parse_prompt_file(path: Path | list[str]) -> list[SamplePrompt]:
    """The prompts of a sd-scripts-style .txt prompt file, or of the prompt lines a config holds
    itself (sampling.sample_prompts as a list, as the kohya_ss GUI keeps them); any problem is a
    ConfigError naming the file (or the list) and the line. Call it before training starts, so a
    typo does not surface hours in."""
    if isinstance(path, list):
        lines, where = [str(line) for line in path], "sampling.sample_prompts"
    else:
        path = Path(path)
        where = str(path)
        if path.suffix.lower() in (".toml", ".json"):
            raise ConfigError(
                f"sampling.sample_prompts={path}: only the .txt format (one prompt a line) is read; "
                "write the prompts one a line in a .txt file"
            )
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except FileNotFoundError:
            raise ConfigError(f"sampling.sample_prompts={path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"sampling.sample_prompts={path}: cannot be read as UTF-8 text ({exc})") from None
    prompts = [
        parse_prompt_line(line, f"{where}, line {number}")
        for number, line in enumerate(lines, start=1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if not prompts:
        raise ConfigError(f"sampling.sample_prompts={where} holds no prompts (only blank or # lines)")
    return prompts


# ----------------------------------------------------------------------------------------- when


def should_sample(sampling: SamplingConfig, epoch: int, step: int, epoch_end: bool) -> bool:
    """sd-scripts' rule: with sample_every_n_epochs, at the end of every Nth epoch (and never by
    steps); otherwise every Nth step, but not at an epoch's end (the step check ran there already).
    Never before the first step."""
    if sampling.sample_prompts is None or step <= 0:
        return False
    if sampling.sample_every_n_epochs:
        return epoch_end and epoch % sampling.sample_every_n_epochs == 0
    if sampling.sample_every_n_steps:
        return not epoch_end and step % sampling.sample_every_n_steps == 0
    return False


def sample_tag(output_name: str | None, epoch: int, step: int, epoch_end: bool) -> str:
    """sd-scripts' sample file prefix: `<name>_e000002` after epoch 2, `<name>_000100` at step 100."""
    return f"{output_name or 'last'}_" + (f"e{epoch:06d}" if epoch_end else f"{step:06d}")


# ------------------------------------------------------------------------------------- schedulers


def _ddim(common: dict):
    from diffusers import DDIMScheduler

    # as SD's own scheduler config: no clipping of x0, alphas_cumprod[0] for the last step
    return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False)


def _euler(common: dict):
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**common)


def _euler_ancestral(common: dict):
    from diffusers import EulerAncestralDiscreteScheduler

    return EulerAncestralDiscreteScheduler(**common)


def _dpmsolver_pp(common: dict):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++")


#: sd-scripts `get_my_scheduler`: the k_ names are the same samplers as in diffusers
SCHEDULERS: dict[Sampler, Callable[[dict], object]] = {
    Sampler.DDIM: _ddim,
    Sampler.EULER: _euler,
    Sampler.K_EULER: _euler,
    Sampler.EULER_A: _euler_ancestral,
    Sampler.K_EULER_A: _euler_ancestral,
    Sampler.DPMSOLVER_PP: _dpmsolver_pp,
}


def make_scheduler(sampler: Sampler, v_parameterization: bool):
    """A fresh diffusers scheduler on SD's training schedule (the one engine.run.noise trains with)."""
    common = {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "steps_offset": 1,  # as SD's scheduler configs; diffusers' SD pipeline rewrites anything else
        "prediction_type": "v_prediction" if v_parameterization else "epsilon",
    }
    return SCHEDULERS[sampler](common)


# ----------------------------------------------------------------------------------------- images


def generate_samples(
    components,
    network,
    prompts: Sequence[SamplePrompt],
    *,
    sampler: Sampler,
    seed: int,
    out_dir: Path,
    tag: str,
    device: torch.device | str,
    dtype: torch.dtype,
    clip_skip: int,
    v_parameterization: bool,
    max_token_length: int = 75,
    default_size: tuple[int, int] = (512, 512),
) -> list[Path]:
    """Make one image per prompt with the LoRA as trained so far; write `<out_dir>/<tag>_<NN>.png`
    (A1111-style "parameters" text inside) and `<tag>_grid.png`; return their paths.

    `components` are the run's `BaseComponents` and `network` its (unwrapped) `LoraNetwork`, already
    applied, or None for the base model. `dtype` is the base weights' dtype: anything but float32
    runs the U-Net and text encoders under autocast, as in training; the VAE decodes outside autocast
    in its own dtype (SDXL's VAE overflows in fp16). Nothing of the training changes: modules are
    put in eval mode and back, the VAE goes back to its device, no gradient is kept, and the global
    torch RNG states (CPU and this CUDA device) are restored. Files never overwrite others.
    """
    device = torch.device(device)
    vae = components.vae
    vae_device = next(vae.parameters()).device
    roots = [components.unet, vae, *components.text_encoders] + ([network] if network is not None else [])
    modes = [(module, module.training) for root in roots for module in root.modules()]
    cuda_devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    paths: list[Path] = []
    images = []
    try:
        for root in roots:
            root.eval()
        vae.to(device)
        pipe = _pipeline(components, make_scheduler(sampler, v_parameterization))
        with torch.random.fork_rng(devices=cuda_devices), torch.no_grad():
            for index, prompt in enumerate(prompts):
                chosen = prompt.sampler or sampler
                pipe.scheduler = make_scheduler(chosen, v_parameterization)  # schedulers keep state
                prompt_seed = seed + index if prompt.seed is None else prompt.seed
                width, height = prompt.width or default_size[0], prompt.height or default_size[1]
                image = _one_image(
                    pipe, components, prompt, prompt_seed, width, height, device, dtype, clip_skip, max_token_length
                )
                info = _parameters_text(prompt, chosen, prompt_seed, width, height)
                paths.append(_save_png(out_dir / f"{tag}_{index:02d}.png", image, info))
                images.append(image)
    finally:
        vae.to(vae_device)
        for module, training in modes:
            module.training = training
    if images:
        paths.append(_save_png(out_dir / f"{tag}_grid.png", image_grid(images), None))
    return paths


def _pipeline(components, scheduler):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if components.family == ModelFamily.SDXL:
        pipe = StableDiffusionXLPipeline(
            vae=components.vae,
            text_encoder=components.text_encoders[0],
            text_encoder_2=components.text_encoders[1],
            tokenizer=components.tokenizers[0],
            tokenizer_2=components.tokenizers[1],
            unet=components.unet,
            scheduler=scheduler,
            add_watermarker=False,
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=components.vae,
            text_encoder=components.text_encoders[0],
            tokenizer=components.tokenizers[0],
            unet=components.unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)  # the engine never prints; the reporter shows progress
    return pipe


def _one_image(
    pipe,
    components,
    prompt: SamplePrompt,
    seed: int,
    width: int,
    height: int,
    device,
    dtype,
    clip_skip,
    max_token_length,
):
    from engine.text.encoding import encode, tokenize

    def conditioning(text: str):
        ids = [tokenize(tok, [text], max_token_length) for tok in components.tokenizers]
        return encode(components.family, components.text_encoders, ids, clip_skip)

    # a CPU generator: the same seed gives the same starting noise on a CPU and on any GPU
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        positive, negative = conditioning(prompt.prompt), conditioning(prompt.negative)
        extra = {}
        if components.family == ModelFamily.SDXL:
            extra = {"pooled_prompt_embeds": positive.pooled, "negative_pooled_prompt_embeds": negative.pooled}
        latents = pipe(
            prompt_embeds=positive.hidden,
            negative_prompt_embeds=negative.hidden,
            width=width,
            height=height,
            num_inference_steps=prompt.steps,
            guidance_scale=prompt.scale,
            generator=generator,
            output_type="latent",
            **extra,
        ).images
    vae = components.vae
    decoded = vae.decode(latents.to(device, vae.dtype) / vae.config.scaling_factor).sample
    return pipe.image_processor.postprocess(decoded.float(), output_type="pil")[0]


def _parameters_text(prompt: SamplePrompt, sampler: Sampler, seed: int, width: int, height: int) -> str:
    """A1111's PNG "parameters" text, so the web UI's PNG Info tab reads the settings back."""
    negative = f"\nNegative prompt: {prompt.negative}" if prompt.negative else ""
    return (
        f"{prompt.prompt}{negative}\nSteps: {prompt.steps}, Sampler: {sampler.value}, "
        f"CFG scale: {prompt.scale}, Seed: {seed}, Size: {width}x{height}"
    )


def image_grid(images: Sequence) -> object:
    """All images on one sheet, row by row, in a near-square grid of cells as large as the largest."""
    from PIL import Image

    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    cell_w, cell_h = max(im.width for im in images), max(im.height for im in images)
    grid = Image.new("RGB", (cols * cell_w, rows * cell_h))
    for i, image in enumerate(images):
        grid.paste(image, ((i % cols) * cell_w, (i // cols) * cell_h))
    return grid


def _save_png(path: Path, image, parameters: str | None) -> Path:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    return atomic_write(next_free_path(path), lambda tmp: image.save(tmp, format="PNG", pnginfo=info))

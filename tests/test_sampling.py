"""Sample images: the prompt file, when to sample, and images made with the LoRA as trained so far."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config.schema import (
    ModelFamily,
    NetworkConfig,
    Sampler,
    SamplingConfig,
    TrainConfig,
)
from engine.errors import ConfigError
from engine.models.tiny import build_demo, build_tiny
from engine.network.inject import create_network
from engine.run.prompts import (
    SamplePrompt,
    parse_prompt_file,
    sample_tag,
    should_sample,
)
from engine.run.sampling import SCHEDULERS, generate_samples, make_scheduler

# ------------------------------------------------------------------------------------------ prompt file


def write(tmp_path: Path, text: str, name: str = "prompts.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_prompt_file_with_comments_blanks_and_sd_scripts_options(tmp_path):
    path = write(
        tmp_path,
        "\ufeff# my character\n"
        "\n"
        "mychar, red dress, standing --n lowres, bad hands --w 512 --h 768 --s 28 --l 7 --d 42\n"
        "   \n"
        "  # an indented comment\n"
        "mychar, sitting --SS euler_a --L 4.5\n"
        "plain prompt, (with parentheses:1.2)\n",
    )
    assert parse_prompt_file(path) == [
        SamplePrompt("mychar, red dress, standing", "lowres, bad hands", 512, 768, 28, 7.0, 42),
        SamplePrompt("mychar, sitting", scale=4.5, sampler=Sampler.EULER_A),
        SamplePrompt("plain prompt, (with parentheses:1.2)"),
    ]
    default = SamplePrompt("x")
    assert (default.steps, default.scale, default.seed, default.width) == (30, 7.5, None, None)


@pytest.mark.parametrize(
    "line, message",
    [
        ("cat --w 500", "--w 500: must be a multiple of 8 and at least 64, e.g. 496 or 504"),
        ("cat --h 32", "--h 32: must be a multiple of 8 and at least 64"),
        ("cat --s 0", "--s 0: must be between 1 and 1000"),
        ("cat --s many", "--s many: is not a number"),
        ("cat --l -1", "--l -1: must be a number of 0 or more"),
        ("cat --d -5", "--d -5: must be a whole number"),
        ("cat --ss heun", "--ss heun: must be one of ddim, euler, euler_a, dpmsolver++"),
        ("cat --x 1", "unknown option --x; the options are --n --w --h --s --l --d --ss"),
        ("cat --n", "--n needs a value"),
        ("cat --w 64 --w 128", "--w is given twice"),
        ("--n ugly", "the line has no prompt before its options"),
    ],
)
def test_bad_option_names_file_and_line(tmp_path, line, message):
    path = write(tmp_path, f"# header\nfine prompt --w 64\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        parse_prompt_file(path)
    assert str(caught.value).startswith(f"{path}, line 3: ")
    assert message in str(caught.value)


def test_unusable_prompt_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        parse_prompt_file(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="holds no prompts"):
        parse_prompt_file(write(tmp_path, "# only a comment\n\n"))
    with pytest.raises(ConfigError, match="only the .txt format"):
        parse_prompt_file(write(tmp_path, '[{"prompt": "cat"}]', "prompts.json"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ConfigError, match="cannot be read as UTF-8"):
        parse_prompt_file(tmp_path / "latin1.txt")


# ------------------------------------------------------------------------------------------------ when


def sampling(epochs: int | None = None, steps: int | None = None, prompts: str | None = "p.txt") -> SamplingConfig:
    return SamplingConfig(
        sample_prompts=Path(prompts) if prompts else None,
        sample_sampler=Sampler.DDIM,
        sample_every_n_epochs=epochs,
        sample_every_n_steps=steps,
    )


@pytest.mark.parametrize(
    "cfg, epoch, step, epoch_end, expected",
    [
        (sampling(epochs=2), 2, 40, True, True),
        (sampling(epochs=2), 1, 20, True, False),
        (sampling(epochs=2), 2, 40, False, False),  # epochs set: steps never trigger
        (sampling(epochs=1, steps=10), 1, 10, False, False),  # sd-scripts: every_n_steps ignored then
        (sampling(epochs=1, steps=10), 1, 13, True, True),
        (sampling(steps=10), 1, 10, False, True),
        (sampling(steps=10), 1, 15, False, False),
        (sampling(steps=10), 1, 20, True, False),  # the step check already ran for that step
        (sampling(steps=10), 1, 0, False, False),  # never before the first step
        (sampling(epochs=1), 1, 0, True, False),
        (sampling(), 3, 30, True, False),
        (sampling(epochs=1, steps=1, prompts=None), 1, 10, True, False),
    ],
)
def test_should_sample(cfg, epoch, step, epoch_end, expected):
    assert should_sample(cfg, epoch, step, epoch_end) is expected


def test_sample_tag_as_sd_scripts_names_files():
    assert sample_tag("mychar", 2, 140, epoch_end=True) == "mychar_e000002"
    assert sample_tag(None, 1, 100, epoch_end=False) == "last_000100"


# ------------------------------------------------------------------------------------------ schedulers


def test_every_sampler_has_a_scheduler_on_sds_training_schedule():
    assert set(SCHEDULERS) == set(Sampler)
    expected = {
        Sampler.DDIM: "DDIMScheduler",
        Sampler.EULER: "EulerDiscreteScheduler",
        Sampler.K_EULER: "EulerDiscreteScheduler",
        Sampler.EULER_A: "EulerAncestralDiscreteScheduler",
        Sampler.K_EULER_A: "EulerAncestralDiscreteScheduler",
        Sampler.DPMSOLVER_PP: "DPMSolverMultistepScheduler",
    }
    for sampler, name in expected.items():
        scheduler = make_scheduler(sampler, v_parameterization=False)
        config = scheduler.config
        assert type(scheduler).__name__ == name
        assert (config.num_train_timesteps, config.beta_schedule) == (1000, "scaled_linear")
        assert (config.beta_start, config.beta_end, config.prediction_type) == (0.00085, 0.012, "epsilon")
    assert make_scheduler(Sampler.EULER_A, v_parameterization=True).config.prediction_type == "v_prediction"
    assert make_scheduler(Sampler.DPMSOLVER_PP, False).config.algorithm_type == "dpmsolver++"
    assert make_scheduler(Sampler.DDIM, False).config.clip_sample is False


# -------------------------------------------------------------------------------------------- images


@pytest.fixture
def demo():
    """The demo model with a LoRA applied (its up weights zero, as after initialisation)."""
    components = build_demo()
    network = create_network(components, TrainConfig().network, train_unet=True, train_text_encoder=True)
    network.apply()
    network.train()  # as during training
    yield components, network
    network.remove()


def sample(components, network, out_dir: Path, prompts, tag: str = "mychar_e000001", **kw) -> list[Path]:
    options = {
        "sampler": Sampler.EULER_A,
        "seed": 23,
        "out_dir": out_dir,
        "tag": tag,
        "device": "cpu",
        "dtype": torch.float32,
        "clip_skip": 2,
        "v_parameterization": False,
        "default_size": (64, 64),
    }
    return generate_samples(components, network, prompts, **{**options, **kw})


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def randomize_up(network, std: float = 0.5) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in network.loras:
            module.lora_up.weight.copy_(torch.randn(module.lora_up.weight.shape, generator=generator) * std)


def snapshot(components, network) -> dict[str, torch.Tensor]:
    modules = {"unet": components.unet, "vae": components.vae, "te": components.text_encoders[0], "lora": network}
    return {f"{k}.{n}": t.clone() for k, m in modules.items() for n, t in m.state_dict().items()}


def test_writes_images_and_grid_and_leaves_training_untouched(tmp_path, demo):
    components, network = demo
    randomize_up(network)
    prompts = [
        SamplePrompt("a cat", steps=2),
        SamplePrompt("a dog", "blurry", width=128, height=64, steps=2, scale=5.0, seed=7),
    ]
    before = snapshot(components, network)
    grads = [p.requires_grad for p in (*components.unet.parameters(), *network.parameters())]
    rng = torch.get_rng_state()

    paths = sample(components, network, tmp_path / "sample", prompts)

    assert [p.name for p in paths] == ["mychar_e000001_00.png", "mychar_e000001_01.png", "mychar_e000001_grid.png"]
    assert [Image.open(p).size for p in paths] == [(64, 64), (128, 64), (256, 64)]
    with Image.open(paths[1]) as image:
        assert image.text["parameters"] == (
            "a dog\nNegative prompt: blurry\nSteps: 2, Sampler: euler_a, CFG scale: 5.0, Seed: 7, Size: 128x64"
        )
    assert "Seed: 23," in Image.open(paths[0]).text["parameters"]  # the run's seed + index 0
    assert sorted(p.name for p in (tmp_path / "sample").iterdir()) == [p.name for p in paths]  # no temp files
    assert torch.equal(torch.get_rng_state(), rng)
    after = snapshot(components, network)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert network.training and all(m.training for m in network.loras)
    assert not components.unet.training and not components.text_encoders[0].training
    assert [p.requires_grad for p in (*components.unet.parameters(), *network.parameters())] == grads


def test_deterministic_per_seed_and_never_overwrites(tmp_path, demo):
    components, network = demo
    randomize_up(network)
    prompts = [SamplePrompt("a cat", steps=2), SamplePrompt("a cat", steps=2), SamplePrompt("a cat", steps=2, seed=23)]
    first = sample(components, network, tmp_path, prompts, tag="t")
    second = sample(components, network, tmp_path, prompts[:1], tag="t")
    assert [p.name for p in second] == ["t_00-2.png", "t_grid-2.png"]
    assert np.array_equal(pixels(first[0]), pixels(second[0]))
    assert not np.array_equal(pixels(first[0]), pixels(first[1]))  # seed 23 + 0 and 23 + 1
    assert np.array_equal(pixels(first[0]), pixels(first[2]))  # --d 23 is the first prompt's seed
    third = sample(components, network, tmp_path, prompts[:1], tag="u", seed=24)
    assert np.array_equal(pixels(third[0]), pixels(first[1]))


def test_the_lora_shows_in_the_images_and_its_dropout_does_not(tmp_path, demo):
    components, network = demo
    prompt = [SamplePrompt("a cat", steps=2)]
    base = pixels(sample(components, network, tmp_path, prompt, tag="zero")[0])
    randomize_up(network)
    trained = pixels(sample(components, network, tmp_path, prompt, tag="trained")[0])
    assert np.abs(base - trained).max() > 8
    for module in network.loras:
        module.dropout, module.module_dropout = 0.9, 0.9  # dropouts act in training mode only
    dropped = pixels(sample(components, network, tmp_path, prompt, tag="dropout")[0])
    assert np.array_equal(trained, dropped)


def test_conditioning_matches_diffusers_own_prompt_encoding(tmp_path, demo):
    """With clip_skip 1 the pipeline encoding the prompt itself agrees with the training's encoding.
    (kohya clip_skip 2 would be diffusers' clip_skip 1, but diffusers 0.42 reads the final norm at
    `text_encoder.text_model`, which transformers 5 removed: why sampling encodes prompts itself.)"""
    from diffusers import StableDiffusionPipeline

    components, network = demo
    randomize_up(network)
    ours = pixels(
        sample(
            components,
            network,
            tmp_path,
            [SamplePrompt("a red cat", "dog", steps=2, seed=5)],
            sampler=Sampler.DDIM,
            clip_skip=1,
        )[0]
    )
    pipe = StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=components.text_encoders[0],
        tokenizer=components.tokenizers[0],
        unet=components.unet,
        scheduler=make_scheduler(Sampler.DDIM, False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    network.eval()
    image = pipe(
        "a red cat",
        negative_prompt="dog",
        width=64,
        height=64,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(5),
    ).images[0]
    assert np.abs(np.asarray(image, dtype=np.int16) - ours).max() <= 1


@pytest.mark.parametrize("sampler", [s for s in Sampler if s != Sampler.EULER_A])
def test_every_sampler_makes_an_image(tmp_path, demo, sampler):
    components, network = demo
    (path, _grid) = sample(components, network, tmp_path, [SamplePrompt("a cat", steps=3)], sampler=sampler)
    assert pixels(path).std() > 0


@pytest.mark.parametrize("family, v_pred", [(ModelFamily.SD2, True), (ModelFamily.SDXL, False)])
def test_sd2_and_sdxl(tmp_path, family, v_pred):
    components = build_tiny(family)
    network = create_network(components, NetworkConfig(dim=4, alpha=2.0), train_unet=True, train_text_encoder=True)
    network.apply()
    try:
        randomize_up(network)
        paths = sample(
            components,
            network,
            tmp_path,
            [SamplePrompt("a cat", "ugly", steps=2)],
            v_parameterization=v_pred,
            max_token_length=150,
        )
    finally:
        network.remove()
    assert Image.open(paths[0]).size == (64, 64)


def test_half_precision_base_weights_run_under_autocast(tmp_path, demo):
    """As on a GPU with mixed precision: base weights in the autocast dtype, LoRA and VAE in fp32."""
    components, network = demo
    randomize_up(network, std=0.05)
    prompt = [SamplePrompt("a cat", steps=2)]
    full = pixels(sample(components, network, tmp_path, prompt, tag="fp32")[0])
    components.unet.to(dtype=torch.bfloat16)
    components.text_encoders[0].to(dtype=torch.bfloat16)
    half = pixels(sample(components, network, tmp_path, prompt, tag="bf16", dtype=torch.bfloat16)[0])
    assert np.abs(full - half).max() <= 16
    assert components.vae.dtype == torch.float32 and components.unet.dtype == torch.bfloat16

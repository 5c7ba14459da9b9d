"""End to end on the built-in demo model: a real (tiny) LoRA is trained, saved in the kohya format
and loads into diffusers, where it changes the picture."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from engine.config.schema import TrainConfig
from engine.events import SilentReporter
from engine.queue.preflight import preflight
from engine.queue.runner import run_one

# The demo UNet has 4 Transformer2DModels (down 2, mid, up 0 x2) with 1 transformer block each:
# 10 Linear layers per block (attn1 q/k/v/out, attn2 q/k/v/out, ff in/out) + proj_in + proj_out.
DEMO_UNET_MODULES = 4 * 12
# The demo text encoder has 2 layers x (q, k, v, out, fc1, fc2).
DEMO_TE_MODULES = 2 * 6


def small_config(tmp_path, **changes) -> TrainConfig:
    """Exactly what pressing Enter on every question gives (AdamW8bit, 512 px, fp16 asked for),
    written to a temporary folder; `section__field=value` changes one field."""
    data = TrainConfig().model_dump(mode="json")
    data["saving"]["output_folder"] = str(tmp_path / "out")
    for dotted, value in changes.items():
        section, name = dotted.split("__")
        data[section][name] = value
    return TrainConfig.model_validate(data)


def train_once(cfg: TrainConfig):
    (planned,) = preflight([("test", cfg)])
    reporter = SilentReporter()
    result = run_one(planned, reporter)
    return planned, result, reporter


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    cfg = small_config(tmp_path_factory.mktemp("demo"))
    return (cfg, *train_once(cfg))


def test_trains_the_planned_number_of_steps(demo_run):
    cfg, planned, result, reporter = demo_run
    assert result.status == "done"
    # 6 sample images x 4 repeats = 24 samples, batch 1, so 24 steps in one epoch
    assert planned.plan.num_train_images == 24
    assert planned.plan.total_steps == result.steps == 24
    assert [s.step for s in reporter.steps] == list(range(1, 25))
    assert all(s.loss is None or s.loss > 0 for s in reporter.steps)
    assert any("fp32" in n for n in reporter.notices)  # fp16 requested, CPU run: says so


def test_the_first_loss_is_shown_at_step_1_and_caching_reports_progress(demo_run):
    _, planned, _, reporter = demo_run
    assert reporter.steps[0].loss is not None  # the bar shows a loss from the first step
    latents = [(done, total) for phase, done, total in reporter.progressed if phase == "caching latents"]
    assert latents[0] == (0, 6) and latents[-1] == (6, 6)  # 6 images, each encoded once (repeats reuse it)
    assert [d for d, _ in latents] == sorted(d for d, _ in latents)


def test_every_file_of_a_run_gets_the_umasks_mode(demo_run):
    """A LoRA readable by the user's other programs (a WebUI running as another user), as its JSON is."""
    import os

    _, _, result, _ = demo_run
    mask = os.umask(0)
    os.umask(mask)
    files = [f for f in result.run_dir.rglob("*") if f.is_file()]
    assert any(f.suffix == ".safetensors" for f in files) and any(f.suffix == ".json" for f in files)
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: oct(0o666 & ~mask) for f in files}


def test_the_run_logs_to_tensorboard_in_its_own_folder(demo_run):
    _, _, result, _ = demo_run
    assert list((result.run_dir / "logs").glob("events.out.tfevents.*"))


def test_lora_file_has_the_kohya_keys_and_metadata(demo_run):
    cfg, planned, result, _ = demo_run
    lora = result.run_dir / "last.safetensors"
    assert lora in result.files
    with safe_open(str(lora), framework="pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
        dtypes = {f.get_tensor(k).dtype for k in keys}
    names = {k.split(".")[0] for k in keys}
    assert len(names) == DEMO_UNET_MODULES + DEMO_TE_MODULES
    assert len(keys) == 3 * len(names)  # lora_down.weight, lora_up.weight, alpha
    assert "lora_unet_down_blocks_2_attentions_0_transformer_blocks_0_attn1_to_q" in names
    assert "lora_unet_mid_block_attentions_0_proj_in" in names
    assert "lora_te_text_model_encoder_layers_1_mlp_fc2" in names
    assert all(n.startswith(("lora_unet_", "lora_te_text_model_encoder_layers_")) for n in names)
    assert dtypes == {torch.float16}  # save_precision default fp16
    assert meta["ss_network_dim"] == "32" and meta["ss_network_alpha"] == "16.0"
    assert meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["ss_clip_skip"] == "2" and meta["ss_max_token_length"] == "150"
    assert meta["ss_num_train_images"] == "24" and meta["ss_max_train_steps"] == "24"
    assert json.loads(meta["ss_dataset_dirs"]) == {"4_shapes": {"n_repeats": 4, "img_count": 6}}
    # 5 captions say "shapes"; the uncaptioned image is captioned "shapes" by its folder name
    assert json.loads(meta["ss_tag_frequency"])["4_shapes"]["shapes"] == 6
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["sshs_model_hash"] and meta["sshs_legacy_hash"]


def test_alpha_tensors_hold_alpha(demo_run):
    _, _, result, _ = demo_run
    with safe_open(str(result.run_dir / "last.safetensors"), framework="pt") as f:
        alpha = f.get_tensor("lora_unet_mid_block_attentions_0_proj_in.alpha")
    assert float(alpha) == 16.0


def test_config_and_tag_list_are_saved_beside_the_lora(demo_run):
    cfg, _, result, _ = demo_run
    from engine.config.io import load_config

    config_files = [f for f in result.files if f.suffix == ".json"]
    assert len(config_files) == 1 and load_config(config_files[0]) == cfg
    tags = (result.run_dir / "last-tags.txt").read_text().splitlines()
    assert tags[0] == "[6] shapes" and "[5] flat colours" in tags


def test_lora_loads_in_diffusers_and_changes_the_image(demo_run):
    """The compatibility check that matters: diffusers' kohya loader reads our file."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from engine.models.tiny import build_demo

    _, _, result, _ = demo_run

    def image(with_lora: bool):
        m = build_demo()
        pipe = StableDiffusionPipeline(
            vae=m.vae, text_encoder=m.text_encoders[0], tokenizer=m.tokenizers[0], unet=m.unet,
            scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        if with_lora:
            pipe.load_lora_weights(str(result.run_dir), weight_name="last.safetensors")
        out = pipe("shapes, red circle", num_inference_steps=2, height=64, width=64, output_type="np",
                   generator=torch.Generator().manual_seed(0))
        return out.images[0]

    base, tuned = image(False), image(True)
    assert abs(base - tuned).max() > 1e-3


def test_same_seed_gives_byte_identical_lora(tmp_path, demo_run):
    _, _, first, _ = demo_run
    cfg = small_config(tmp_path)
    _, second, _ = train_once(cfg)
    a = (first.run_dir / "last.safetensors")
    b = (second.run_dir / "last.safetensors")
    with safe_open(str(a), framework="pt") as fa, safe_open(str(b), framework="pt") as fb:
        assert set(fa.keys()) == set(fb.keys())
        for k in fa.keys():
            assert torch.equal(fa.get_tensor(k), fb.get_tensor(k)), k


def test_a_second_run_never_overwrites_the_first(tmp_path):
    cfg = small_config(tmp_path, training__max_steps=2)
    _, r1, _ = train_once(cfg)
    _, r2, _ = train_once(cfg)
    assert r1.run_dir != r2.run_dir
    assert (r1.run_dir / "last.safetensors").exists() and (r2.run_dir / "last.safetensors").exists()

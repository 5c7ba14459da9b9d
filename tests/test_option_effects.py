"""Each training option changes the training the way sd-scripts defines it.

Effects are shown through the engine's own code: the plan (engine.data.plan), a prepared session
(engine.run.setup) and its step (engine.run.step), the text path (engine.text.encoding) and short real
runs (engine.queue.runner -> engine.run.train). Where a value inside a step matters (the target, the noise,
the timesteps), a spy wraps the engine function that computes it and records what it returned;
the step itself runs unchanged. Sessions take a changed config with `with_config`, which only
works for settings the step reads at step time; settings read at setup get their own session.

The models are the built-in tiny demo at 64 px (8x8 latents). Torch runs on one thread here: for
tensors this small, handing work between two threads costs more than the math (100x on a loaded
machine), so the whole file takes seconds instead of minutes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import engine.run.build
import engine.run.optim
import engine.run.step
from engine.config.schema import (
    LrScheduler,
    ModelFamily,
    NetworkConfig,
    Optimizer,
    TrainConfig,
)
from engine.data.plan import Sample, epoch_batches, make_plan, steps_before
from engine.errors import LoraWizardError, MissingPackageError
from engine.events import RunStatus, SilentReporter
from engine.network.inject import create_network
from engine.network.lora_file import load_lora_file
from engine.queue.preflight import preflight
from engine.queue.runner import run_one
from engine.run.inputs import image_loader
from engine.run.noise import ddpm_alphas_cumprod
from engine.run.setup import prepare_session, release
from engine.run.step import batch_captions, batch_loss, conditioning
from engine.run.train import trainable_parameters
from engine.text.encoding import encode, tokenize

# The demo UNet: 4 transformers x 12 Linear/1x1 layers (see test_train_demo); the text encoder
# 2 layers x 6 Linear layers.
DEMO_UNET_LORA = 48
DEMO_TE_LORA = 12
# LoCon adds, in the demo UNet (blocks 32/32/64, one resnet per down block, two per up block, two in
# the mid block): 11 resnets x (conv1, conv2, time_emb_proj) = 33, the 1x1 conv_shortcut of the 7
# resnets whose input and output widths differ (down block 2; all 6 up resnets, which take the
# skip connection), and the conv of 2 downsamplers and 2 upsamplers: 33 + 7 + 4 = 44.
DEMO_LOCON_EXTRA = 44
LOCON_CLASSES = ("ResnetBlock2D", "Downsample2D", "Upsample2D")

TAGS = "alpha, beta, c1, c2, c3, c4, c5"
KEPT, FLEXIBLE = ["alpha", "beta"], {"c1", "c2", "c3", "c4", "c5"}

#: small and quick: 64 px (one bucket, 64x64), rank 4, plain AdamW, fp32, float saves
SMALL = {
    "dataset": {"resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 128},
    "network": {"dim": 4, "alpha": 2.0},
    "optim": {"optimizer": "AdamW", "mixed_precision": "no", "lr_scheduler": "constant"},
    "saving": {"save_precision": "float"},
}


# ---- helpers ------------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def write_images(folder: Path, sizes: list[tuple[int, int]], caption: str | None, seed: int = 0) -> Path:
    """Random-pixel PNGs (asymmetric, so a mirrored image differs) with one caption each."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        if caption is not None:
            (folder / f"img{i}.txt").write_text(caption, encoding="utf-8")
    return folder.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("data")
    # 2 images x 2 repeats = 4 samples an epoch; the 64x96 one overhangs its 64x64 bucket by 32 rows
    train = write_images(root / "train" / "2_thing", [(64, 64), (64, 96)], "thing, red, square", seed=1)
    # 5 regularisation images, 1 repeat: the first 4 balance the 4 training samples, 1 is unused
    reg = write_images(root / "reg" / "1_person", [(64, 64)] * 5, "person", seed=2)
    tags = write_images(root / "tags" / "2_tags", [(64, 64)] * 2, TAGS, seed=3)
    return SimpleNamespace(train=train, reg=reg, tags=tags, out=root / "out")


def make_config(data_dir: Path, out: Path, **sections: dict) -> TrainConfig:
    """SMALL settings on `data_dir`, then per-section changes (`dataset={"flip_aug": True}`)."""
    raw = TrainConfig().model_dump(mode="json")
    for section, values in SMALL.items():
        raw[section].update(values)
    raw["dataset"]["img_folder"] = str(data_dir)
    raw["saving"]["output_folder"] = str(out)
    for section, values in sections.items():
        raw[section].update(values)
    return TrainConfig.model_validate(raw)


def changed(cfg: TrainConfig, **sections: dict) -> TrainConfig:
    raw = cfg.model_dump(mode="json")
    for section, values in sections.items():
        raw[section].update(values)
    return TrainConfig.model_validate(raw)


def with_config(session, **sections: dict):
    """The same session (same model, LoRA, latents) whose steps read a changed config; the
    objective follows the config's word, as the loader makes it."""
    cfg = changed(session.cfg, **sections)
    said = cfg.model.v_parameterization
    v_prediction = session.inputs.v_prediction if said is None else said
    return dataclasses.replace(session, cfg=cfg, inputs=dataclasses.replace(session.inputs, cfg=cfg, v_prediction=v_prediction))


def new_session(cfg: TrainConfig, tmp_path_factory):
    return prepare_session(cfg, make_plan(cfg), tmp_path_factory.mktemp("session"), SilentReporter())


def train_run(cfg: TrainConfig):
    """A real run, as the CLI makes it: preflight, then train into a fresh run folder."""
    (planned,) = preflight([("test", cfg)])
    reporter = SilentReporter()
    result = run_one(planned, reporter)
    assert result.status == RunStatus.DONE, result
    return planned.plan, result, reporter


def network_of(session):
    return session.network


def samples(session, *, reg: bool, n: int = 2, flip: bool = False) -> list[Sample]:
    items = [item for item in session.plan.items if item.record.is_reg == reg][:n]
    return [Sample(item, flip) for item in items]


def loss_and_grad_norm(session, batch, epoch: int = 1, index: int = 0) -> tuple[float, float]:
    network = network_of(session)
    network.zero_grad(set_to_none=True)
    loss = batch_loss(session.inputs, batch, epoch, index)
    loss.backward()
    grads = [p.grad for p in trainable_parameters(session.network) if p.grad is not None]
    norm = math.sqrt(sum(float((g.float() ** 2).sum()) for g in grads))
    network.zero_grad(set_to_none=True)
    return float(loss.detach()), norm


def no_grad_loss(session, batch, epoch: int = 1, index: int = 0) -> float:
    with torch.no_grad():
        return float(batch_loss(session.inputs, batch, epoch, index))


class Spy:
    """Wraps `module.name` (as the step module imported it) and records each call's result."""

    def __init__(self, monkeypatch, module, name: str) -> None:
        self.calls: list[SimpleNamespace] = []
        real = getattr(module, name)

        def spy(*args, **kwargs):
            out = real(*args, **kwargs)
            self.calls.append(SimpleNamespace(args=args, kwargs=kwargs, out=out))
            return out

        monkeypatch.setattr(module, name, spy)

    @property
    def last(self) -> SimpleNamespace:
        return self.calls[-1]


def engine_captions(cfg: TrainConfig, epochs: int) -> dict[int, list[str]]:
    """The captions a run of `cfg` trains on, epoch by epoch, from engine.run.step.batch_captions with
    the per-batch generator engine.run.step.batch_loss makes (test_captions_reaching_the_text_encoder
    checks that a real run sees exactly these)."""
    plan = make_plan(cfg)
    inputs = SimpleNamespace(cfg=cfg, plan=plan)
    seed = cfg.training.seed
    out: dict[int, list[str]] = {}
    for epoch in range(1, epochs + 1):
        for index, batch in enumerate(epoch_batches(plan, seed, epoch, cfg.dataset.flip_aug)):
            rng = random.Random(f"step:{seed}:{epoch}:{index}")
            out.setdefault(epoch, []).extend(batch_captions(inputs, batch, epoch, rng, steps_before(plan, epoch, index)))
    return out


def flat(by_epoch: dict[int, list[str]]) -> list[str]:
    return [c for epoch in sorted(by_epoch) for c in by_epoch[epoch]]


# ---- shared sessions and runs -------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo():
    from engine.models.tiny import build_demo

    return build_demo()


@pytest.fixture(scope="module")
def base(data, tmp_path_factory):
    """Training and regularisation images, flip_aug on (latents cached in both orientations)."""
    cfg = make_config(data.train, data.out, dataset={"reg_img_folder": str(data.reg), "flip_aug": True})
    return new_session(cfg, tmp_path_factory)


@pytest.fixture(scope="module")
def source_lora(data):
    """A LoRA trained for 2 steps with a large LR, so its up-projections are clearly non-zero."""
    cfg = make_config(data.train, data.out, optim={"learning_rate": 1e-2}, training={"max_steps": 2})
    _, result, _ = train_run(cfg)
    return result.run_dir / "last.safetensors"


# ---- captions -----------------------------------------------------------------------------------


def test_captions_reaching_the_text_encoder_are_processed_per_epoch(data, monkeypatch):
    """A real run: the captions its steps encode are shuffled behind the kept tags, emptied on
    every 2nd epoch, and exactly what `engine_captions` computes for the same config."""
    cfg = make_config(
        data.tags,
        data.out,
        dataset={"shuffle_caption": True, "keep_tokens": 2, "caption_dropout_every_n_epochs": 2},
        training={"epochs": 4},
    )
    seen = Spy(monkeypatch, engine.run.step, "conditioning")
    plan, _, _ = train_run(cfg)
    trained = [c for call in seen.calls for c in call.args[1]]
    expected = engine_captions(cfg, 4)
    assert trained == flat(expected)
    assert len(trained) == 4 * plan.num_train_images
    assert expected[2] == expected[4] == [""] * 4
    assert all(c.startswith("alpha, beta, ") for c in expected[1] + expected[3])


def test_keep_tokens_stay_first_while_the_other_tags_shuffle(data):
    cfg = make_config(data.tags, data.out, dataset={"shuffle_caption": True, "keep_tokens": 2})
    captions = flat(engine_captions(cfg, 50))  # 200 uses
    tails = []
    for caption in captions:
        tags = caption.split(", ")
        assert tags[:2] == KEPT
        assert sorted(tags[2:]) == sorted(FLEXIBLE)  # nothing lost or added
        tails.append(tuple(tags[2:]))
    assert len(set(tails)) > 50  # of 120 orders
    assert {tail[0] for tail in tails} == FLEXIBLE  # every flexible tag gets to come first
    unshuffled = make_config(data.tags, data.out, dataset={"keep_tokens": 2})
    assert set(flat(engine_captions(unshuffled, 5))) == {TAGS}


def test_caption_dropout_rate_empties_that_share_of_captions(data):
    cfg = make_config(data.tags, data.out, dataset={"caption_dropout_rate": 0.3})
    captions = flat(engine_captions(cfg, 500))  # 2000 uses
    empty = captions.count("") / len(captions)
    assert abs(empty - 0.3) < 0.04  # binomial sd 0.01
    assert set(captions) == {"", TAGS}


def test_tag_dropout_drops_each_flexible_tag_at_its_rate(data):
    cfg = make_config(data.tags, data.out, dataset={"caption_tag_dropout_rate": 0.25, "keep_tokens": 2})
    captions = flat(engine_captions(cfg, 500))
    uses = [caption.split(", ") for caption in captions]
    assert all(tags[:2] == KEPT for tags in uses)  # kept tags are never dropped
    for tag in FLEXIBLE:
        kept_share = sum(tag in tags for tags in uses) / len(uses)
        assert abs(kept_share - 0.75) < 0.04, tag


def test_caption_dropout_every_n_epochs_empties_those_epochs_only(data):
    cfg = make_config(data.tags, data.out, dataset={"caption_dropout_every_n_epochs": 3})
    by_epoch = engine_captions(cfg, 9)
    for epoch, captions in by_epoch.items():
        assert set(captions) == ({""} if epoch % 3 == 0 else {TAGS}), epoch


# ---- buckets ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    # aspect ratios 1, 0.3, 0.25, 3, 4; repeats 3 (and 1 more square image in another folder)
    sizes = [(100, 100), (100, 100), (60, 200), (50, 200), (300, 100), (300, 100), (300, 100), (400, 100)]
    write_images(root / "3_mix", sizes, None)
    write_images(root / "1_more", [(100, 100)], None)
    return root


def test_bucket_counts_follow_the_aspect_ratios(mixed_shapes, tmp_path):
    # 128 px area, sides 64..256 in steps of 64: buckets 64x256, 64x192, 128x128, 192x64, 256x64
    cfg = make_config(
        mixed_shapes, tmp_path, dataset={"resolution": 128, "max_bucket_reso": 256}, training={"batch_size": 2}
    )
    plan = make_plan(cfg)
    assert plan.bucket_counts == {
        (64, 192): 3,  # 60x200 (ratio 0.30 is nearest 1/3)
        (64, 256): 3,  # 50x200 (0.25)
        (128, 128): 7,  # 2 squares x 3 repeats + 1 square x 1
        (192, 64): 9,  # 3 images of ratio 3, x 3
        (256, 64): 3,  # 400x100 (4)
    }
    # batches are drawn within a bucket: ceil(count / 2) per bucket
    assert plan.batches_per_epoch == 2 + 2 + 4 + 5 + 2


def test_batches_never_mix_buckets_and_use_every_image_its_repeats(mixed_shapes, tmp_path):
    cfg = make_config(
        mixed_shapes, tmp_path, dataset={"resolution": 128, "max_bucket_reso": 256}, training={"batch_size": 2}
    )
    plan = make_plan(cfg)
    orders = []
    for epoch in (1, 2, 3):
        batches = epoch_batches(plan, cfg.training.seed, epoch, flip_aug=False)
        assert len(batches) == plan.batches_per_epoch
        for batch in batches:
            assert len({s.item.bucket for s in batch}) == 1
        uses: dict[Path, int] = {}
        for batch in batches:
            for s in batch:
                uses[s.item.record.path] = uses.get(s.item.record.path, 0) + 1
        assert uses == {item.record.path: item.uses for item in plan.items}
        orders.append([s.item.record.path for b in batches for s in b])
    assert orders[0] != orders[1] != orders[2]  # shuffled anew each epoch


def test_bucket_no_upscale_keeps_small_images_small(tmp_path):
    root = tmp_path / "data"
    write_images(root / "1_small", [(80, 100), (100, 70)], None)
    write_images(root / "1_large", [(512, 256)], None)
    upscaling = make_config(root, tmp_path, dataset={"resolution": 256, "max_bucket_reso": 512})
    no_upscale = changed(upscaling, dataset={"bucket_no_upscale": True})

    def placements(cfg):
        return {(i.record.width, i.record.height): i.choice for i in make_plan(cfg).items}

    for (w, h), choice in placements(no_upscale).items():
        if (w, h) == (512, 256):  # larger than 256x256: shrunk to about that area, never grown
            assert choice.resized[0] < 512 and choice.bucket[0] * choice.bucket[1] <= 256 * 256
        else:  # kept at its own size, cropped to a multiple of 64 inside it
            assert choice.resized == (w, h)
            assert choice.bucket == (w - w % 64, h - h % 64)
    for (w, h), choice in placements(upscaling).items():
        if (w, h) != (512, 256):  # without the option the same images are scaled up to a 256 px bucket
            assert choice.resized[0] > w and choice.resized[1] > h


# ---- regularisation images ----------------------------------------------------------------------


def test_reg_images_are_balanced_to_the_training_count(data, tmp_path):
    cfg = make_config(data.train, tmp_path, dataset={"reg_img_folder": str(data.reg)})
    plan = make_plan(cfg)
    assert plan.num_train_images == 4
    assert plan.num_reg_images == 4 and plan.unused_reg_images == 1  # 5 reg images, 4 needed
    assert sum(plan.bucket_counts.values()) == 8
    assert sum(len(b) for b in epoch_batches(plan, 23, 1, False)) == 8  # an epoch holds both

    one_reg = tmp_path / "one_reg"
    write_images(one_reg / "1_person", [(64, 64)], "person")
    plan = make_plan(changed(cfg, dataset={"reg_img_folder": str(one_reg)}))
    (reg_item,) = [i for i in plan.items if i.record.is_reg]
    assert reg_item.uses == 4  # used round robin until the reg uses match the training uses


def test_prior_loss_weight_scales_the_loss_of_reg_samples(base):
    reg_batch = samples(base, reg=True)
    full, full_grad = loss_and_grad_norm(with_config(base, dataset={"prior_loss_weight": 1.0}), reg_batch)
    half, _ = loss_and_grad_norm(with_config(base, dataset={"prior_loss_weight": 0.5}), reg_batch)
    zero, zero_grad = loss_and_grad_norm(with_config(base, dataset={"prior_loss_weight": 0.0}), reg_batch)
    assert full > 0 and full_grad > 0
    assert half == pytest.approx(full / 2, rel=1e-6)
    assert zero == 0.0 and zero_grad == 0.0  # reg samples weighted 0 teach the LoRA nothing
    # training samples are not weighted by it
    train_batch = samples(base, reg=False)
    assert no_grad_loss(with_config(base, dataset={"prior_loss_weight": 0.0}), train_batch) == pytest.approx(
        no_grad_loss(base, train_batch), rel=1e-6
    )


# ---- text encoder: clip_skip, max_token_length -------------------------------------------------


def test_clip_skip_2_is_the_penultimate_state_through_the_final_layer_norm(demo):
    (tokenizer,), (encoder,) = demo.tokenizers, demo.text_encoders
    ids = tokenize(tokenizer, ["shapes, red circle"], 75)
    with torch.no_grad():
        out = encoder(ids[:, 0], output_hidden_states=True)
        final_norm = getattr(encoder, "text_model", encoder).final_layer_norm
        skip2 = encode(ModelFamily.SD1, [encoder], [ids], clip_skip=2).hidden
        skip1 = encode(ModelFamily.SD1, [encoder], [ids], clip_skip=1).hidden
        torch.testing.assert_close(skip2, final_norm(out.hidden_states[-2]))
        torch.testing.assert_close(skip1, out.last_hidden_state)
    assert not torch.allclose(skip1, skip2)


def test_clip_skip_reaches_the_steps_conditioning(base):
    captions = ["thing, red, square"]
    model = base.model
    ids = tokenize(model.tokenizers[0], captions, base.cfg.model.max_token_length)
    with torch.no_grad():
        got = {k: conditioning(with_config(base, model={"clip_skip": k}).inputs, captions).hidden for k in (1, 2)}
        for k in (1, 2):
            torch.testing.assert_close(got[k], encode(ModelFamily.SD1, model.text_encoders, [ids], k).hidden)
    assert not torch.allclose(got[1], got[2])


def test_max_token_length_sets_the_number_of_75_token_chunks(demo):
    (tokenizer,), (encoder,) = demo.tokenizers, demo.text_encoders
    long = " ".join(["red"] * 100)  # 100 tokens
    for length, chunks in ((75, 1), (150, 2), (225, 3)):
        ids = tokenize(tokenizer, ["short", long], length)
        assert ids.shape == (2, chunks, 77)
        with torch.no_grad():
            hidden = encode(ModelFamily.SD1, [encoder], [ids], 2).hidden
        assert hidden.shape[:2] == (2, 75 * chunks + 2)
    red, eos = tokenizer("red").input_ids[1], tokenizer.eos_token_id
    one = tokenize(tokenizer, [long], 75)[0]
    three = tokenize(tokenizer, [long], 225)[0]
    assert one[0, 1:76].tolist() == [red] * 75 and one[0, 76] == eos  # cut after 75 tokens
    assert three[0, 1:76].tolist() == [red] * 75
    assert three[1, 1:26].tolist() == [red] * 25  # the rest goes on in the 2nd chunk
    assert set(three[1, 26:].tolist()) == {eos} and set(three[2, 1:].tolist()) == {eos}


# ---- noise, target and loss weighting -----------------------------------------------------------


def test_v_parameterization_trains_against_the_v_target(base, monkeypatch):
    latents = Spy(monkeypatch, engine.run.step, "batch_latents")
    noise = Spy(monkeypatch, engine.run.step, "make_noise")
    timesteps = Spy(monkeypatch, engine.run.step, "sample_timesteps")
    loss = Spy(monkeypatch, engine.run.step, "batch_loss_value")
    batch = samples(base, reg=False)
    targets = {}
    for v in (False, True):
        value = no_grad_loss(with_config(base, model={"v_parameterization": v}), batch)
        pred, target = loss.last.args[:2]
        targets[v] = target
        assert value == pytest.approx(float(((pred - target) ** 2).mean()), rel=1e-5)
    x0, eps, t = latents.last.out, noise.last.out, timesteps.last.out
    assert torch.equal(noise.calls[0].out, eps) and torch.equal(timesteps.calls[0].out, t)  # same draws
    acp = ddpm_alphas_cumprod()[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(targets[True], acp.sqrt() * eps - (1 - acp).sqrt() * x0)
    torch.testing.assert_close(targets[False], eps)


def test_noise_offset_shifts_each_channel_by_one_random_value(base, monkeypatch):
    noise = Spy(monkeypatch, engine.run.step, "make_noise")
    batch = samples(base, reg=False)
    for offset in (0.0, 0.1, 0.2):
        no_grad_loss(with_config(base, training={"noise_offset": offset}), batch)
    plain, small, large = (call.out for call in noise.calls)
    shift = small - plain
    per_channel = shift.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(shift, per_channel.expand_as(shift), rtol=0, atol=1e-6)  # flat over H, W
    assert per_channel.abs().min() > 1e-4  # every sample and channel moved
    torch.testing.assert_close(large - plain, 2 * shift, rtol=0, atol=1e-6)  # in proportion to the offset
    assert 0.01 < float(per_channel.std()) < 0.5  # offset x standard normal draws (8 of them), roughly 0.1


def test_min_snr_gamma_weights_each_sample_by_min_snr_over_snr(base, monkeypatch):
    loss = Spy(monkeypatch, engine.run.step, "batch_loss_value")
    timesteps = Spy(monkeypatch, engine.run.step, "sample_timesteps")
    batch = samples(base, reg=False)
    early = {"min_timestep": 0, "max_timestep": 100}  # SNR > 5 there, so gamma=5 changes every weight
    acp = ddpm_alphas_cumprod()
    for v in (False, True):
        plain = no_grad_loss(with_config(base, training=early, model={"v_parameterization": v}), batch)
        gamma = no_grad_loss(
            with_config(base, training={**early, "min_snr_gamma": 5.0}, model={"v_parameterization": v}), batch
        )
        pred, target = loss.last.args[:2]
        t = timesteps.last.out
        assert int(t.max()) < 100
        per_sample = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        snr = acp[t] / (1 - acp[t])
        weight = torch.clamp(snr, max=5.0) / (snr + 1 if v else snr)
        assert plain == pytest.approx(float(per_sample.mean()), rel=1e-5)
        assert gamma == pytest.approx(float((per_sample * weight).mean()), rel=1e-4)
        assert gamma < plain


# ---- augmentation -------------------------------------------------------------------------------


def test_flip_aug_caches_both_orientations_and_uses_them(base):
    from engine.data.latents import load_image
    from engine.run.step import batch_latents

    cache = base.inputs.latents.latents
    for item in base.plan.items:
        path = item.record.path
        assert (path, False) in cache and (path, True) in cache
        assert not torch.allclose(cache[(path, False)], cache[(path, True)])
        # what is encoded for the flipped entry: the mirrored pixels
        torch.testing.assert_close(load_image(path, item.choice, True), load_image(path, item.choice, False).flip(2))
    flips = {
        (s.item.record.path, s.flip)
        for epoch in range(1, 6)
        for batch in epoch_batches(base.plan, 23, epoch, flip_aug=True)
        for s in batch
    }
    assert flips == set(cache)  # over a few epochs every image is trained both ways
    assert not any(s.flip for b in epoch_batches(base.plan, 23, 1, flip_aug=False) for s in b)
    sample = samples(base, reg=False, n=1, flip=True)
    got = batch_latents(base.inputs, sample, 1, 0, [0])
    assert torch.equal(got[0], cache[(sample[0].item.record.path, True)])


@pytest.fixture(scope="module")
def uncached(data, tmp_path_factory):
    cfg = make_config(data.train, data.out, dataset={"cache_latents": False, "random_crop": True})
    return new_session(cfg, tmp_path_factory)


def test_random_crop_without_cached_latents_crops_differently_each_time(uncached, monkeypatch):
    from engine.run.step import batch_latents

    loads = Spy(monkeypatch, engine.run.step, "load_image")
    (tall,) = [Sample(i, False) for i in uncached.plan.items if i.record.height == 96]
    assert tall.item.choice.resized == (64, 96) and tall.item.bucket == (64, 64)  # 32 rows to spare

    def latents(session, index: int):
        return batch_latents(session.inputs, [tall], 1, index, [0])[0]  # batch `index` of epoch 1

    random_crops = [latents(uncached, index) for index in range(8)]
    crops = [call.args[3] for call in loads.calls]
    assert all(left == 0 and 0 <= top <= 32 for left, top in crops)
    assert len({top for _, top in crops}) >= 4
    assert any(not torch.allclose(random_crops[0], other) for other in random_crops[1:])
    centred = with_config(uncached, dataset={"random_crop": False})
    latents(centred, 0)
    latents(centred, 1)
    assert loads.calls[-1].args[3] is None and loads.calls[-2].args[3] is None  # the plan's centre crop


# ---- network: LoCon, train_on, starting weights, dropout ---------------------------------------


def test_locon_adds_exactly_the_resnet_and_sampler_layers(demo):
    lora = create_network(demo, NetworkConfig(dim=4, alpha=2.0), train_unet=True, train_text_encoder=False)
    locon_cfg = NetworkConfig(type="locon", dim=4, alpha=2.0, conv_dim=3, conv_alpha=1.0)
    locon = create_network(demo, locon_cfg, train_unet=True, train_text_encoder=False)
    lora_names = {m.lora_name for m in lora.unet_loras}
    extra = {m.lora_name: m for m in locon.unet_loras if m.lora_name not in lora_names}
    # KOHYA_FORMAT: LoCon also targets every Conv2d/Linear inside ResnetBlock2D, Downsample2D, Upsample2D
    in_locon_blocks = sum(
        isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear))
        for block in demo.unet.modules()
        if type(block).__name__ in LOCON_CLASSES
        for layer in block.modules()
    )
    assert len(lora_names) == DEMO_UNET_LORA
    assert lora_names < {m.lora_name for m in locon.unet_loras}
    assert len(extra) == in_locon_blocks == DEMO_LOCON_EXTRA
    assert all(("resnets" in n) or ("samplers" in n) for n in extra)
    for module in extra.values():
        kernel = tuple(module.lora_down.weight.shape[2:])
        if kernel == (3, 3):  # 3x3 convs take conv_dim / conv_alpha, the rest dim / alpha
            assert module.lora_dim == 3 and float(module.alpha) == 1.0
        else:
            assert module.lora_dim == 4 and float(module.alpha) == 2.0


def test_locon_conv_modules_train(data):
    cfg = make_config(
        data.train, data.out, network={"type": "locon", "conv_dim": 3, "conv_alpha": 1.0}, training={"max_steps": 3}
    )
    _, result, _ = train_run(cfg)
    tensors, _ = load_lora_file(result.run_dir / "last.safetensors")
    names = {k.split(".")[0] for k in tensors}
    assert len(names) == DEMO_UNET_LORA + DEMO_LOCON_EXTRA + DEMO_TE_LORA
    conv_ups = [tensors[f"{n}.lora_up.weight"] for n in names if "resnets" in n or "samplers" in n]
    assert len(conv_ups) == DEMO_LOCON_EXTRA
    assert all(float(up.abs().max()) > 0 for up in conv_ups)  # zero-initialised, moved by training


@pytest.mark.parametrize("train_on", ["unet_only", "text_only"])
def test_train_on_leaves_the_other_part_without_lora_and_frozen(train_on, data, tmp_path_factory):
    session = new_session(make_config(data.train, data.out, network={"train_on": train_on}), tmp_path_factory)
    network = network_of(session)
    model = session.model
    unet_part = train_on == "unet_only"
    assert len(network.unet_loras) == (DEMO_UNET_LORA if unet_part else 0)
    assert len(network.text_encoder_loras) == (0 if unet_part else DEMO_TE_LORA)
    prefix = "lora_unet_" if unet_part else "lora_te_"
    assert all(k.startswith(prefix) for k in network.kohya_state_dict())  # what the file will hold
    base_params = [p for m in (model.unet, model.vae, *model.text_encoders) for p in m.parameters()]
    assert not any(p.requires_grad for p in base_params)
    assert {id(p) for p in trainable_parameters(session.network)} == {id(p) for p in network.parameters()}
    _, grad = loss_and_grad_norm(session, samples(session, reg=False))
    assert grad > 0
    release(session)


def test_network_weights_start_the_lora_from_the_file(source_lora, data, tmp_path_factory):
    cfg = make_config(data.train, data.out, network={"network_weights": str(source_lora)})
    session = new_session(cfg, tmp_path_factory)
    network = network_of(session)
    file_tensors, _ = load_lora_file(source_lora)
    state = network.kohya_state_dict()
    assert state.keys() == file_tensors.keys()
    assert all(torch.equal(state[k].cpu(), file_tensors[k]) for k in state)
    assert any(float(t.abs().max()) > 0 for k, t in file_tensors.items() if k.endswith("lora_up.weight"))
    # the first step already sees the file's LoRA: its loss differs from the bare model's
    batch = samples(session, reg=False)
    with_lora = no_grad_loss(session, batch)
    network.set_multiplier(0.0)
    bare = no_grad_loss(session, batch)
    network.set_multiplier(1.0)
    assert with_lora != bare
    release(session)


def test_network_dropout_is_active_while_training(source_lora, data, tmp_path_factory):
    def loss_of(**network):
        cfg = make_config(data.train, data.out, network={"network_weights": str(source_lora), **network})
        session = new_session(cfg, tmp_path_factory)
        net, batch = network_of(session), samples(session, reg=False)
        assert all(m.training for m in net.loras)  # the loop trains in the modules' training mode
        training = no_grad_loss(session, batch)
        net.eval()
        evaluating = no_grad_loss(session, batch)
        net.train()
        release(session)
        return training, evaluating

    with_dropout, dropout_off = loss_of(dropout=0.5)
    plain, plain_eval = loss_of()
    assert plain == plain_eval == pytest.approx(dropout_off, rel=1e-6)
    assert with_dropout != pytest.approx(plain, rel=1e-6)


# ---- optimizers, schedules, steps ---------------------------------------------------------------

#: the package each optimizer needs and its pip name (README: "A missing package is reported before
#: training with the command that installs it")
NEEDS = {
    Optimizer.ADAMW8BIT: ("bitsandbytes", "bitsandbytes"),
    Optimizer.LION: ("lion_pytorch", "lion-pytorch"),
    Optimizer.LION8BIT: ("bitsandbytes", "bitsandbytes"),
    Optimizer.SGD_NESTEROV8BIT: ("bitsandbytes", "bitsandbytes"),
    Optimizer.DADAPT_ADAM: ("dadaptation", "dadaptation"),
    Optimizer.PRODIGY: ("prodigyopt", "prodigyopt"),
    Optimizer.ADAFACTOR: ("transformers", "transformers"),
}

OPTIMIZER_CLASS = {
    Optimizer.ADAMW: "AdamW",
    Optimizer.ADAMW8BIT: "AdamW8bit",
    Optimizer.LION: "Lion",
    Optimizer.LION8BIT: "Lion8bit",
    Optimizer.SGD_NESTEROV: "SGD",
    Optimizer.SGD_NESTEROV8BIT: "SGD8bit",
    Optimizer.DADAPT_ADAM: "DAdaptAdam",
    Optimizer.PRODIGY: "Prodigy",
    Optimizer.ADAFACTOR: "Adafactor",
}




@pytest.mark.parametrize("name", list(Optimizer))
def test_each_optimizer_trains_two_steps(name, data, monkeypatch):
    lr = 1.0 if name in (Optimizer.DADAPT_ADAM, Optimizer.PRODIGY) else 1e-3  # adaptive ones take ~1
    cfg = make_config(
        data.train, data.out, optim={"optimizer": name.value, "learning_rate": lr}, training={"max_steps": 2}
    )
    package, pip_name = NEEDS.get(name, (None, None))
    if package and importlib.util.find_spec(package) is None:
        with pytest.raises(MissingPackageError, match=f"pip install {pip_name}"):
            engine.run.optim.check_available(name)
        with pytest.raises(LoraWizardError, match=f"pip install {pip_name}"):
            preflight([("test", cfg)])  # refused before anything loads
        return
    built = Spy(monkeypatch, engine.run.build, "make_optimizer")  # the run's own reference
    _, result, reporter = train_run(cfg)
    assert type(built.last.out).__name__ == OPTIMIZER_CLASS[name]  # that optimizer was built
    assert result.steps == 2 and len(reporter.steps) == 2
    tensors, _ = load_lora_file(result.run_dir / "last.safetensors")
    ups = [t for k, t in tensors.items() if k.endswith("lora_up.weight")]
    assert all(torch.isfinite(t).all() for t in tensors.values())
    assert sum(float(t.abs().sum()) for t in ups) > 0  # zero-initialised, moved by the two steps


def expected_multiplier(kind: LrScheduler, step: int, total: int, warmup: int, lr: float) -> float:
    """Written out from transformers' schedules (not from engine.run.lr_schedule)."""
    if kind != LrScheduler.CONSTANT and step < warmup:
        return step / warmup
    progress = (step - warmup) / (total - warmup)
    return {
        LrScheduler.CONSTANT: 1.0,
        LrScheduler.CONSTANT_WITH_WARMUP: 1.0,
        LrScheduler.LINEAR: 1 - progress,
        LrScheduler.COSINE: 0.5 * (1 + math.cos(math.pi * progress)),
        # 2 cycles: restarts from the top half-way; 0 at the end
        LrScheduler.COSINE_WITH_RESTARTS: 0.0
        if progress >= 1
        else 0.5 * (1 + math.cos(math.pi * ((2 * progress) % 1))),
        # power 2, down to an absolute 1e-7
        LrScheduler.POLYNOMIAL: ((lr - 1e-7) * (1 - progress) ** 2 + 1e-7) / lr,
    }[kind]


@pytest.mark.parametrize(
    "scheduler",
    # the adafactor schedule is Adafactor's own step size (tests/test_lr_schedule.py)
    [s for s in LrScheduler if s != LrScheduler.ADAFACTOR],
)
def test_scheduler_lr_curve_over_a_run(scheduler, data):
    from engine.run.lr_schedule import lr_multiplier

    ratio = 0.0 if scheduler == LrScheduler.CONSTANT else 0.3
    lr = 2e-4  # not torch's default 1e-3, so an LR that never reaches the optimizer shows
    cfg = make_config(
        data.train,
        data.out,
        optim={
            "lr_scheduler": scheduler.value,
            "lr_warmup_ratio": ratio,
            "learning_rate": lr,
            "lr_scheduler_num_cycles": 2,
            "lr_scheduler_power": 2.0,
        },
        training={"max_steps": 7},
    )
    plan, _, reporter = train_run(cfg)
    warmup = int(ratio * 7)  # 0.3 x 7 -> 2 warmup steps
    assert plan.warmup_steps == warmup
    # StepStats.lr after optimizer step k is the LR the schedule gives for the next step: lr x m(k)
    reported = [s.lr for s in reporter.steps]
    expected = [lr * expected_multiplier(scheduler, k, 7, warmup, lr) for k in range(1, 8)]
    assert reported == pytest.approx(expected, rel=1e-6, abs=1e-12)
    engine_curve = [lr * lr_multiplier(k, 7, warmup, scheduler, 2, 2.0, initial_lr=lr) for k in range(1, 8)]
    assert reported == pytest.approx(engine_curve, rel=1e-9, abs=1e-15)


def test_max_steps_stops_the_run_there(data):
    cfg = make_config(data.train, data.out, training={"max_steps": 5, "epochs": 3})
    plan, result, reporter = train_run(cfg)
    assert plan.total_steps == 5 and plan.epochs == 2  # 4 steps an epoch: stops 1 step into epoch 2
    assert result.steps == 5 and [s.step for s in reporter.steps] == [1, 2, 3, 4, 5]
    assert reporter.steps[-1].epoch == 2


def test_gradient_accumulation_halves_the_optimizer_steps(data, monkeypatch):
    built = []
    real_build = engine.run.build.make_optimizer

    def keep(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(engine.run.build, "make_optimizer", keep)  # the run's own reference
    single = make_config(data.train, data.out, training={"epochs": 2})
    double = changed(single, optim={"gradient_accumulation_steps": 2, "lr_scheduler": "linear"})
    one, two = make_plan(single), make_plan(double)
    assert one.batches_per_epoch == two.batches_per_epoch == 4
    assert (one.steps_per_epoch, one.total_steps) == (4, 8)
    assert (two.steps_per_epoch, two.total_steps, two.effective_batch) == (2, 4, 2)
    _, result, reporter = train_run(double)
    assert result.steps == 4 and [s.step for s in reporter.steps] == [1, 2, 3, 4]
    (optimizer,) = built
    assert {int(state["step"]) for state in optimizer.state.values()} == {4}  # 8 batches, 4 updates
    # the LR schedule moves once per optimizer step, not once per batch (linear decay over 4 steps)
    from engine.run.lr_schedule import lr_multiplier

    lr = double.optim.learning_rate
    expected = [lr * lr_multiplier(k, 4, 0, double.optim.lr_scheduler, 1, 1.0, initial_lr=lr) for k in range(1, 5)]
    assert [s.lr for s in reporter.steps] == pytest.approx(expected, rel=1e-9)


def test_max_grad_norm_clips_the_update(data):
    """SGD (Nesterov, momentum 0.9) at lr 1 for one step: the first update is 1.9 x the (clipped)
    gradient. At step 1 only the up-projections move (they start at 0, and the down-projections'
    gradient is 0 because up is 0), so the file's up weights are the whole update."""

    def update_norm(max_grad_norm: float) -> float:
        cfg = make_config(
            data.train,
            data.out,
            optim={"optimizer": "SGDNesterov", "learning_rate": 1.0, "max_grad_norm": max_grad_norm},
            training={"max_steps": 1},
        )
        _, result, _ = train_run(cfg)
        tensors, _ = load_lora_file(result.run_dir / "last.safetensors")
        return math.sqrt(sum(float((t**2).sum()) for k, t in tensors.items() if k.endswith("lora_up.weight")))

    clipped = update_norm(1e-3)
    assert clipped == pytest.approx(1.9e-3, rel=1e-3)
    assert update_norm(0.0) > 20 * clipped  # the same step unclipped


def test_color_aug_shifts_hue_or_gamma_a_third_of_the_time():
    from engine.data.latents import color_augment

    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 200, 80, 40  # an orange
    rng = random.Random(0)
    outcomes = [color_augment(image, rng) for _ in range(3000)]
    changed = [o for o in outcomes if not np.array_equal(o, image)]
    assert 0.28 < len(changed) / 3000 < 0.38  # sd-scripts: p = 0.33
    # every change is small: a hue shift within +-16 degrees or a gamma within [0.95, 1.05]
    assert max(int(np.abs(o.astype(int) - image.astype(int)).max()) for o in changed) <= 60
    assert any(o[0, 0, 1] != image[0, 0, 1] and o[0, 0, 0] >= 190 for o in changed)  # hue moves green


def test_color_aug_reaches_the_uncached_images(uncached, monkeypatch):
    from engine.run.step import batch_latents

    loads = Spy(monkeypatch, engine.run.step, "load_image")
    session = with_config(uncached, dataset={"color_aug": True, "random_crop": False})
    sample = [Sample(uncached.plan.items[0], False)]
    batch_latents(session.inputs, sample, 1, 0, [0])
    assert isinstance(loads.last.args[4], random.Random)
    plain = with_config(uncached, dataset={"color_aug": False, "random_crop": False})
    batch_latents(plain.inputs, sample, 1, 0, [0])
    assert loads.last.args[4] is None


@pytest.mark.parametrize(("workers", "persistent"), [(0, True), (2, True), (2, False)])
def test_data_loader_workers_decode_uncached_images(uncached, monkeypatch, workers, persistent):
    import threading

    from engine.run.step import batch_latents

    threads = []
    real_load = engine.run.step.load_image

    def record(*args):
        threads.append(threading.current_thread().name)
        return real_load(*args)

    monkeypatch.setattr(engine.run.step, "load_image", record)
    session = with_config(
        uncached, dataset={"max_data_loader_n_workers": workers, "persistent_data_loader_workers": persistent}
    )
    session.inputs.images = image_loader(session.inputs.cfg, None)  # its own threads, not the fixture's
    batch = [Sample(item, False) for item in uncached.plan.items[:2] if item.bucket == uncached.plan.items[0].bucket]
    first = batch_latents(session.inputs, batch, 1, 0, list(range(len(batch))))
    images = session.inputs.images
    assert (images is None) == (workers == 0)
    if images is not None:
        assert images.running  # the threads decoded the batch
        images.end_epoch()
        assert images.running == persistent  # kept for the run, or started afresh next epoch
        images.close()
    if workers:
        assert all(name.startswith("lora-wizard-images") for name in threads)
    else:
        assert set(threads) == {threading.current_thread().name}
    serial = with_config(uncached, dataset={"max_data_loader_n_workers": 0})
    serial.inputs.images = None
    assert torch.equal(first, batch_latents(serial.inputs, batch, 1, 0, list(range(len(batch)))))  # same pixels


def test_stop_text_encoder_training_freezes_its_lora_from_that_step(data):
    from safetensors.torch import load_file

    cfg = make_config(
        data.train,
        data.out,
        training={"max_steps": 6, "stop_text_encoder_training": 50},
        saving={"save_every_n_steps": 3},
    )
    _, result, reporter = train_run(cfg)
    assert any("text encoder stops training" in n for n in reporter.notices)
    at_stop = load_file(result.run_dir / "last-step00000003.safetensors")
    final = load_file(result.run_dir / "last.safetensors")
    te = [k for k in final if k.startswith("lora_te_") and "lora_up" in k]
    unet = [k for k in final if k.startswith("lora_unet_") and "lora_up" in k]
    assert te and all(torch.equal(at_stop[k], final[k]) for k in te)  # frozen from step 3 on
    assert any(not torch.equal(at_stop[k], final[k]) for k in unet)  # the UNet keeps learning
    assert any(float(final[k].abs().max()) > 0 for k in te)  # it did learn before the stop

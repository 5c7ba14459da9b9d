"""SD2 (v-prediction and epsilon) and SDXL train end to end from single-file checkpoints, and
text-encoder outputs are cached when only the U-Net trains.

Each tiny model is written as an A1111-style LDM `.safetensors` and trained through the runner, as
a user's file would be. The one difference from a user's run: the loader takes the architecture
from the tiny model's own config folder instead of the shipped full-size one (the shipped folders
are checked against full-size models on the meta device in test_model_loading.py).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import save_file

from engine.config.schema import ModelFamily, TrainConfig
from engine.events import Outcome, RunStatus, SilentReporter
from engine.models import ldm_layout, loading
from engine.models.tiny import build_tiny
from engine.queue.preflight import preflight
from engine.queue.runner import run_one
from engine.run import setup, step
from engine.run import train as train_loop
from engine.text import cache as text_cache

SD2, SDXL = ModelFamily.SD2, ModelFamily.SDXL
SEED = 7  # the tiny models' weights

# --- the LoRA names each tiny architecture must get, written out (not from engine.network.names) ---

BLOCK_LAYERS = [f"attn{a}_to_{p}" for a in (1, 2) for p in ("q", "k", "v", "out_0")] + ["ff_net_0_proj", "ff_net_2"]
TE_LAYERS = ["self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "mlp_fc1", "mlp_fc2"]


def transformer_names(prefix: str, blocks: int) -> set[str]:
    names = {f"{prefix}_proj_in", f"{prefix}_proj_out"}
    return names | {f"{prefix}_transformer_blocks_{b}_{layer}" for b in range(blocks) for layer in BLOCK_LAYERS}


def te_names(prefix: str) -> set[str]:
    return {f"{prefix}_text_model_encoder_layers_{i}_{layer}" for i in range(2) for layer in TE_LAYERS}


# tiny SD2: attention in down block 0, the mid block and up block 1 (2 layers), 1 transformer each;
# diffusers names
SD2_UNET = set().union(
    *(
        transformer_names(f"lora_unet_{where}", 1)
        for where in ("down_blocks_0_attentions_0", "mid_block_attentions_0", "up_blocks_1_attentions_0", "up_blocks_1_attentions_1")
    )
)
# tiny SDXL (layers_per_block 1, transformer depth 2): SGM names as sd-scripts writes them.
# down block 1's attention is input_blocks.3.1, up block 0's are output_blocks.0.1 and 1.1
SDXL_UNET = set().union(
    *(
        transformer_names(f"lora_unet_{where}", 2)
        for where in ("input_blocks_3_1", "middle_block_1", "output_blocks_0_1", "output_blocks_1_1")
    )
)


def test_expected_name_counts():
    assert len(SD2_UNET) == 4 * 12 and len(te_names("lora_te")) == 2 * 6
    assert len(SDXL_UNET) == 4 * (2 + 2 * 10)


# --- fixtures: checkpoints, dataset, runs ----------------------------------------------------------


@dataclass
class Checkpoint:
    family: ModelFamily
    path: Path  # LDM .safetensors
    config_dir: Path  # the tiny architecture as a config-only diffusers folder


def write_checkpoint(family: ModelFamily, root: Path) -> Checkpoint:
    model = build_tiny(family, seed=SEED)
    root.mkdir(parents=True)
    path = root / f"tiny-{family.value}.safetensors"
    save_file({k: v.contiguous() for k, v in ldm_layout.components_to_ldm(model).items()}, str(path))
    configs = root / "configs"
    model.unet.save_config(configs / "unet")
    model.vae.save_config(configs / "vae")
    for name, encoder in zip(("text_encoder", "text_encoder_2"), model.text_encoders, strict=False):
        encoder.config.save_pretrained(configs / name)
    return Checkpoint(family, path, configs)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[ModelFamily, Checkpoint]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {family: write_checkpoint(family, root / family.value) for family in (SD2, SDXL)}


# name -> (width, height, caption); with bucket_reso_steps 32 the wide and tall images land in
# non-square buckets (160x96, 96x160) that they do not fill, so SDXL's crop conditioning is not 0
IMAGES = {
    "square": (128, 128, "thing, red square"),
    "wide": (200, 100, "thing, wide blue stripe"),
    "tall": (100, 200, "thing, tall green bar"),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    folder = root / "1_thing"  # one repeat: 3 steps of batch 1 use each image once
    folder.mkdir()
    for i, (name, (w, h, caption)) in enumerate(IMAGES.items()):
        img = Image.new("RGB", (w, h), (30 + 60 * i, 90, 200 - 50 * i))
        ImageDraw.Draw(img).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(240, 220 - 70 * i, 40))
        img.save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(caption, encoding="utf-8")
    return root


def run_config(tmp: Path, checkpoint: Checkpoint, images: Path, **sections) -> TrainConfig:
    data = TrainConfig().model_dump(mode="json")
    data["model"]["base_model"] = str(checkpoint.path)
    data["dataset"].update(img_folder=str(images), resolution=128, min_bucket_reso=64, max_bucket_reso=256)
    data["optim"].update(optimizer="AdamW", learning_rate=1e-3)
    data["training"].update(max_steps=3, seed=11)
    data["saving"]["output_folder"] = str(tmp / "out")
    for section, values in sections.items():
        data[section].update(values)
    return TrainConfig.model_validate(data)


@dataclass
class Probe:
    """What the run did, seen from hooks on the session's models."""

    config_dirs_asked: list[tuple[ModelFamily, bool]] = field(default_factory=list)
    te_calls: list[bool] = field(default_factory=list)  # one per text-encoder forward: grad enabled?
    batches: list[list] = field(default_factory=list)
    captions: list[list[str]] = field(default_factory=list)
    unet_time_ids: list[torch.Tensor] = field(default_factory=list)
    cached: bool = False

    def attach(self, session) -> None:
        self.cached = session.inputs.text_cache is not None
        for encoder in session.model.text_encoders:
            encoder.register_forward_pre_hook(lambda module, args: self.te_calls.append(torch.is_grad_enabled()))

        def unet_hook(module, args, kwargs):
            extra = kwargs.get("added_cond_kwargs")
            if extra is not None:
                self.unet_time_ids.append(extra["time_ids"].detach().cpu().clone())

        session.model.unet.register_forward_pre_hook(unet_hook, with_kwargs=True)


@dataclass
class Run:
    cfg: TrainConfig
    result: object
    reporter: SilentReporter
    probe: Probe

    @property
    def lora(self) -> Path:
        return self.result.run_dir / "last.safetensors"

    def read(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        with safe_open(str(self.lora), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def train(cfg: TrainConfig, checkpoint: Checkpoint, *, text_cache_allowed: bool = True) -> Run:
    probe = Probe()
    original_prepare, original_captions = setup.prepare_session, step.batch_captions

    def config_dir(family, v_parameterization=False):
        probe.config_dirs_asked.append((family, v_parameterization))
        return checkpoint.config_dir

    def prepare(*args):
        session = original_prepare(*args)
        probe.attach(session)
        return session

    def batch_captions(inputs, batch, epoch, rng, *step):
        captions = original_captions(inputs, batch, epoch, rng, *step)
        probe.batches.append(batch)
        probe.captions.append(captions)
        return captions

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loading, "shipped_config_dir", config_dir)
        mp.setattr(train_loop, "prepare_session", prepare)
        mp.setattr(step, "batch_captions", batch_captions)
        if not text_cache_allowed:
            mp.setattr(text_cache, "cache_blocker", lambda cfg: "turned off by the test")
        (planned,) = preflight([("test", cfg)])
        reporter = SilentReporter()
        result = run_one(planned, reporter)
    assert result.status == RunStatus.DONE and result.steps == 3
    return Run(cfg, result, reporter, probe)


@pytest.fixture(scope="module")
def sd2_v(tmp_path_factory, checkpoints, dataset) -> Run:
    """SD2 768-v style: v-prediction, U-Net and text encoder trained, clip_skip left at 2."""
    ckpt = checkpoints[SD2]
    return train(run_config(tmp_path_factory.mktemp("sd2v"), ckpt, dataset, model={"v_parameterization": True}), ckpt)


@pytest.fixture(scope="module")
def sd2_eps(tmp_path_factory, checkpoints, dataset) -> Run:
    """SD2 512-base style: epsilon, U-Net only (so the text-encoder outputs are cached)."""
    ckpt = checkpoints[SD2]
    cfg = run_config(
        tmp_path_factory.mktemp("sd2e"), ckpt, dataset, model={"clip_skip": 1, "v_parameterization": False}, network={"train_on": "unet_only"}
    )
    return train(cfg, ckpt)


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory, checkpoints, dataset) -> Run:
    ckpt = checkpoints[SDXL]
    cfg = run_config(tmp_path_factory.mktemp("sdxl"), ckpt, dataset, dataset={"bucket_reso_steps": 32})
    return train(cfg, ckpt)


def sdxl_unet_only_config(tmp: Path, checkpoints, dataset) -> TrainConfig:
    # caption dropout is on: it only swaps a caption for "", which the cache holds too
    return run_config(
        tmp,
        checkpoints[SDXL],
        dataset,
        dataset={"bucket_reso_steps": 32, "caption_dropout_rate": 0.5},
        network={"train_on": "unet_only"},
    )


@pytest.fixture(scope="module")
def sdxl_cached(tmp_path_factory, checkpoints, dataset) -> Run:
    return train(sdxl_unet_only_config(tmp_path_factory.mktemp("xc"), checkpoints, dataset), checkpoints[SDXL])


@pytest.fixture(scope="module")
def sdxl_uncached(tmp_path_factory, checkpoints, dataset) -> Run:
    cfg = sdxl_unet_only_config(tmp_path_factory.mktemp("xu"), checkpoints, dataset)
    return train(cfg, checkpoints[SDXL], text_cache_allowed=False)


# --- the LoRA files -------------------------------------------------------------------------------


def module_names(tensors: dict[str, torch.Tensor]) -> set[str]:
    names = {k.split(".", 1)[0] for k in tensors}
    assert set(tensors) == {f"{n}.{s}" for n in names for s in ("lora_down.weight", "lora_up.weight", "alpha")}
    return names


def test_sd2_v_lora_names_and_metadata(sd2_v):
    tensors, meta = sd2_v.read()
    assert module_names(tensors) == SD2_UNET | te_names("lora_te")
    assert meta["ss_v2"] == "True"
    assert meta["ss_base_model_version"] == "sd_v2_v"  # sd-scripts get_model_version_str_for_sd1_sd2
    assert meta["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
    assert meta["modelspec.prediction_type"] == "v"
    assert set(sd2_v.probe.config_dirs_asked) == {(SD2, True)}  # preflight and the loader picked the 768-v config
    # clip_skip was left at 2, which SD2 does not apply: the file records the layer that trained
    assert sd2_v.cfg.model.clip_skip == 2
    assert meta["ss_clip_skip"] == "1" and meta["modelspec.encoder_layer"] == "1"


def test_sd2_epsilon_lora_names_and_metadata(sd2_eps):
    tensors, meta = sd2_eps.read()
    assert module_names(tensors) == SD2_UNET  # U-Net only
    assert meta["ss_v2"] == "True"
    assert meta["ss_base_model_version"] == "sd_v2"
    assert meta["modelspec.architecture"] == "stable-diffusion-v2-512/lora"
    assert meta["modelspec.prediction_type"] == "epsilon"
    assert set(sd2_eps.probe.config_dirs_asked) == {(SD2, False)}


def test_sdxl_lora_names_and_metadata(sdxl):
    tensors, meta = sdxl.read()
    names = module_names(tensors)
    assert names == SDXL_UNET | te_names("lora_te1") | te_names("lora_te2")
    assert len(names) == 88 + 12 + 12
    assert "lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_k" in names
    assert meta["ss_v2"] == "False"
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert meta["modelspec.prediction_type"] == "epsilon"
    # three buckets, two of them non-square
    buckets = [b["resolution"] for b in json.loads(meta["ss_bucket_info"])["buckets"].values()]
    assert sorted(buckets) == [[96, 160], [128, 128], [160, 96]]


def untrained_modules(run: Run) -> set[str]:
    tensors, _ = run.read()
    return {k.split(".")[0] for k, t in tensors.items() if k.endswith("lora_up.weight") and not t.abs().any()}


def test_every_module_that_can_learn_did(sd2_v, sdxl):
    assert untrained_modules(sd2_v) == set()
    # SDXL reads CLIP-L's penultimate layer, so its last layer never reaches the U-Net and its
    # modules keep lora_up = 0 (as in sd-scripts, whose files hold them too). OpenCLIP-G's last
    # layer feeds the pooled embedding, so it learns.
    assert untrained_modules(sdxl) == {f"lora_te1_text_model_encoder_layers_1_{layer}" for layer in TE_LAYERS}


# --- family rules ---------------------------------------------------------------------------------


def test_sd2_says_clip_skip_is_ignored(sd2_v, sd2_eps, sdxl):
    assert any("model.clip_skip = 2: is ignored for SD2" in n for n in sd2_v.reporter.notices)
    assert not any("clip_skip" in n for n in sd2_eps.reporter.notices)  # clip_skip 1: nothing to say
    assert not any("clip_skip" in n for n in sdxl.reporter.notices)  # SDXL reads layer -2 anyway


def expected_time_ids(sample) -> list[float]:
    """SDXL size conditioning, computed here from sd-scripts' rule (BucketManager.get_crop_ltrb):
    the image is fitted *inside* the bucket and centred; the crop is that fit's margin."""
    record, (bw, bh) = sample.item.record, sample.item.bucket
    w, h = record.width, record.height
    if bw / bh > w / h:
        fit_w, fit_h = bh * w / h, bh
    else:
        fit_w, fit_h = bw, bw * h / w
    left, top = (bw - fit_w) // 2, (bh - fit_h) // 2
    if sample.flip:
        left = bw - (left + fit_w)
    return [h, w, int(top), int(left), bh, bw]


def test_sdxl_time_ids_reach_the_unet(sdxl):
    probe = sdxl.probe
    assert len(probe.unet_time_ids) == len(probe.batches) == 3
    seen = set()
    for batch, time_ids in zip(probe.batches, probe.unet_time_ids):
        assert time_ids.tolist() == [expected_time_ids(s) for s in batch]
        seen.add(batch[0].item.record.path.stem)
    assert seen == set(IMAGES)  # every image once, the non-square ones included
    wide = next(t for b, t in zip(probe.batches, probe.unet_time_ids) if b[0].item.record.path.stem == "wide")
    assert wide.tolist() == [[100, 200, 8, 0, 96, 160]]  # 200x100 fitted in 160x96: 160x80, 8 px above


def test_sdxl_time_ids_of_non_square_images():
    from engine.data.buckets import Placement
    from engine.data.dataset import ImageRecord
    from engine.data.plan import Sample, TrainItem

    def sample(w, h, bucket, flip):
        record = ImageRecord(Path(f"{w}x{h}.png"), None, "x", "1_x", 1, False, w, h)
        return Sample(TrainItem(record, 1, Placement(bucket, bucket, 0, 0)), flip)

    batch = [
        sample(300, 100, (256, 128), False),  # wide: fitted 256x85.3, 21 px above
        sample(100, 300, (128, 256), False),  # tall: fitted 85.3x256, 21 px left
        sample(100, 300, (128, 256), True),  # mirrored: left measured from the fit's right edge
        sample(128, 128, (128, 128), False),
    ]
    got = step.sdxl_time_ids(batch)
    assert got.dtype == torch.float32 and got.shape == (4, 6)
    assert got.tolist() == [
        [100, 300, 21, 0, 128, 256],
        [300, 100, 0, 21, 256, 128],
        [300, 100, 0, 21, 256, 128],  # 128 - 106.67 = 21.3
        [128, 128, 0, 0, 128, 128],
    ]
    assert got.tolist() == [expected_time_ids(s) for s in batch]


def replay_with_wrong_family(tmp_path, capsys, checkpoints, dataset) -> tuple[int, str]:
    from wizard.app import main

    cfg = run_config(tmp_path, checkpoints[SDXL], dataset, model={"family": "sd1"})
    path = tmp_path / "sd1-with-sdxl-file.json"
    path.write_text(cfg.model_dump_json(), encoding="utf-8")
    code = main(["replay", str(path)])
    out = capsys.readouterr()
    return code, " ".join((out.out + out.err).split())  # messages wrap to the terminal


def test_family_mismatch_is_a_clear_error(tmp_path, capsys, checkpoints, dataset):
    code, text = replay_with_wrong_family(tmp_path, capsys, checkpoints, dataset)
    assert code != 0
    assert "model.family=sd1" in text and "SDXL" in text and "set model.family to sdxl or auto" in text
    assert "Traceback" not in text
    assert not list((tmp_path / "out").rglob("*.safetensors"))


def test_family_mismatch_is_bad_input_found_before_training(tmp_path, capsys, checkpoints, dataset):
    
    code, _ = replay_with_wrong_family(tmp_path, capsys, checkpoints, dataset)
    assert code == Outcome.BAD_INPUT
    assert not (tmp_path / "out").exists()  # refused before a run folder was made


# --- loading into diffusers -----------------------------------------------------------------------


def sd2_pipeline(v_prediction: bool):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    m = build_tiny(SD2, seed=SEED)
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1,
        prediction_type="v_prediction" if v_prediction else "epsilon",
    )
    return StableDiffusionPipeline(
        vae=m.vae, text_encoder=m.text_encoders[0], tokenizer=m.tokenizers[0], unet=m.unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def sdxl_pipeline():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    m = build_tiny(SDXL, seed=SEED)
    return StableDiffusionXLPipeline(
        vae=m.vae, text_encoder=m.text_encoders[0], text_encoder_2=m.text_encoders[1], tokenizer=m.tokenizers[0],
        tokenizer_2=m.tokenizers[1], unet=m.unet, scheduler=EulerDiscreteScheduler(steps_offset=1),
    )


def image(pipe) -> torch.Tensor:
    out = pipe("thing, red square", num_inference_steps=2, height=64, width=64, output_type="pt",
               generator=torch.Generator().manual_seed(0))
    return out.images


def assert_matches_our_network(run: Run, pipe, family: ModelFamily) -> None:
    """diffusers' kohya loader gives the same U-Net and text encoders as our own network with the
    file loaded: every module of the file was read, with our scale."""
    from engine.network.inject import create_network

    ours = build_tiny(family, seed=SEED)
    network = create_network(ours, run.cfg.network, train_unet=True, train_text_encoder=True)
    network.load_weights(run.lora)
    network.apply()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 8, 8, generator=g)
    enc = torch.randn(1, 77, ours.unet.config.cross_attention_dim, generator=g)
    extra = {}
    if ours.family == SDXL:
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, 32, generator=g), "time_ids": torch.randn(1, 6, generator=g)}}
    ids = ours.tokenizers[0](["thing, red square"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    theirs_encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if ours.family == SDXL else [])
    with torch.no_grad():
        torch.testing.assert_close(pipe.unet(x, 500, enc, **extra).sample, ours.unet(x, 500, enc, **extra).sample)
        for mine, theirs in zip(ours.text_encoders, theirs_encoders, strict=True):
            torch.testing.assert_close(theirs(ids)[0], mine(ids)[0])


@pytest.mark.parametrize("which", ["sd2_v", "sdxl"])
def test_lora_loads_in_diffusers_and_changes_the_image(which, request):
    run: Run = request.getfixturevalue(which)
    pipe = sdxl_pipeline() if which == "sdxl" else sd2_pipeline(v_prediction=True)
    before = image(pipe)
    pipe.load_lora_weights(str(run.lora.parent), weight_name=run.lora.name)
    after = image(pipe)
    assert (after - before).abs().max() > 1e-3
    assert_matches_our_network(run, pipe, SDXL if which == "sdxl" else SD2)


# --- text-encoder output cache --------------------------------------------------------------------


def test_unet_only_runs_never_call_the_text_encoders(sd2_eps, sdxl_cached):
    # 3 captions; with caption dropout on, "" too
    for run, texts in ((sd2_eps, 3), (sdxl_cached, 4)):
        assert run.probe.cached
        assert run.probe.te_calls == []
        assert any(f"encoded {texts} distinct captions once" in n for n in run.reporter.notices)


def test_cached_and_uncached_runs_train_the_same_lora(sdxl_cached, sdxl_uncached):
    assert not sdxl_uncached.probe.cached
    # without the cache the frozen encoders run at every step, without building a graph
    assert sdxl_uncached.probe.te_calls == [False] * (2 * 3)
    assert any("not cached: turned off by the test" in n for n in sdxl_uncached.reporter.notices)
    # caption dropout did drop a caption, and both runs saw the same captions
    assert sdxl_cached.probe.captions == sdxl_uncached.probe.captions
    assert [""] in sdxl_cached.probe.captions
    a, _ = sdxl_cached.read()
    b, _ = sdxl_uncached.read()
    assert a.keys() == b.keys() and module_names(a) == SDXL_UNET
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:3]
    assert any(t.abs().any() for k, t in a.items() if k.endswith("lora_up.weight"))


def test_text_encoders_that_train_run_with_gradients(sdxl):
    assert not sdxl.probe.cached
    assert sdxl.probe.te_calls == [True] * (2 * 3)


def cfg_with(**dataset) -> TrainConfig:
    return TrainConfig.model_validate({"network": {"train_on": "unet_only"}, "dataset": dataset})


def test_what_blocks_the_cache():
    assert text_cache.cache_blocker(cfg_with()) is None
    assert text_cache.cache_blocker(cfg_with(caption_dropout_rate=0.1, caption_dropout_every_n_epochs=3)) is None
    assert "shuffle_caption" in text_cache.cache_blocker(cfg_with(shuffle_caption=True))
    assert "caption_tag_dropout_rate" in text_cache.cache_blocker(cfg_with(caption_tag_dropout_rate=0.1))
    both = TrainConfig.model_validate({"network": {"train_on": "both"}})
    assert "network.train_on=both" in text_cache.cache_blocker(both)
    assert "text_only" in text_cache.cache_blocker(TrainConfig.model_validate({"network": {"train_on": "text_only"}}))


class _CpuAccelerator:
    device = torch.device("cpu")

    @staticmethod
    def autocast():
        return contextlib.nullcontext()


def test_cache_holds_each_caption_as_a_step_would_encode_it(dataset):
    from engine.data.plan import make_plan

    model = build_tiny(SDXL, seed=SEED)
    reporter = SilentReporter()
    cfg = cfg_with(img_folder=str(dataset), resolution=128, min_bucket_reso=64, max_bucket_reso=256,
                   caption_dropout_every_n_epochs=2)
    plan = make_plan(cfg)
    cache = text_cache.build_text_cache(cfg, plan, plan.captions, model, _CpuAccelerator(), reporter)
    wanted = sorted({c for *_, c in IMAGES.values()} | {""})
    assert sorted(cache.entries) == wanted
    with torch.no_grad():
        for text in wanted:
            direct = text_cache.encode_captions(model, [text], cfg.model, "cpu")
            cached = cache.conditioning([text], "cpu")
            assert torch.equal(cached.hidden, direct.hidden) and torch.equal(cached.pooled, direct.pooled)
    assert cache.conditioning(wanted, "cpu").hidden.shape == (4, 152, 32 + 64)  # 150 tokens + bos/eos
    with pytest.raises(KeyError, match="not in the text-encoder cache"):
        cache.conditioning(["thing, shuffled"], "cpu")


def test_varying_captions_are_not_cached_and_say_why(dataset):
    from engine.data.plan import make_plan

    reporter = SilentReporter()
    cfg = cfg_with(img_folder=str(dataset), resolution=128, min_bucket_reso=64, max_bucket_reso=256, shuffle_caption=True)
    assert text_cache.build_text_cache(cfg, make_plan(cfg), {}, None, _CpuAccelerator(), reporter) is None
    assert reporter.notices == ["text-encoder outputs are computed at every step, not cached: dataset.shuffle_caption reorders the tags at every use"]
    both = TrainConfig.model_validate({"dataset": {"img_folder": str(dataset)}})
    assert text_cache.build_text_cache(both, None, {}, None, _CpuAccelerator(), reporter) is None
    assert len(reporter.notices) == 1  # a trained text encoder is no news

"""Offline loading of base models: family detection, single files (.safetensors/.ckpt), diffusers
folders, VAE override, bad files, and the shipped full-size configs (checked on the meta device).

Tiny models are built once per module and written to disk in every layout a user may have.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers/transformers are imported

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine.config.schema import ModelFamily
from engine.errors import ModelError
from engine.models import ldm_layout
from engine.models.checkpoint_file import checkpoint_keys
from engine.models.detect import describe_family, detect, detect_family
from engine.models.loading import CONFIG_ROOT, load_base_model, shipped_config_dir
from engine.models.tiny import build_demo, build_tiny

FAMILIES = [ModelFamily.SD1, ModelFamily.SD2, ModelFamily.SDXL]
ENCODER_FOLDERS = ["text_encoder", "text_encoder_2"]


class Written:
    """One tiny model and the files it was written to."""

    def __init__(self, family: ModelFamily, root: Path):
        self.family = family
        self.model = build_tiny(family, seed=7)
        self.ldm = ldm_layout.components_to_ldm(self.model)
        root.mkdir(parents=True)
        self.safetensors = root / "model.safetensors"
        save_file({k: v.contiguous() for k, v in self.ldm.items()}, str(self.safetensors))
        self.ckpt = root / "model.ckpt"
        torch.save({"state_dict": self.ldm, "global_step": 10}, self.ckpt)
        self.folder = root / "diffusers"
        self._save_folder()
        # the architecture of the tiny model as a config-only folder, like the shipped full-size ones
        self.config_dir = root / "configs"
        self._save_configs(self.config_dir)

    def _save_configs(self, out: Path) -> None:
        self.model.unet.save_config(out / "unet")
        self.model.vae.save_config(out / "vae")
        for name, encoder in zip(ENCODER_FOLDERS, self.model.text_encoders, strict=False):
            encoder.config.save_pretrained(out / name)

    def _save_folder(self) -> None:
        m = self.model
        m.unet.save_pretrained(self.folder / "unet")
        m.vae.save_pretrained(self.folder / "vae")
        xl = self.family == ModelFamily.SDXL
        index = {
            "_class_name": "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }
        for name, encoder in zip(ENCODER_FOLDERS, m.text_encoders, strict=False):
            encoder.save_pretrained(self.folder / name)
            index[name] = ["transformers", type(encoder).__name__]
        (self.folder / "model_index.json").write_text(json.dumps(index))


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[ModelFamily, Written]:
    root = tmp_path_factory.mktemp("models")
    return {family: Written(family, root / family.value) for family in FAMILIES}


def assert_same_weights(expected, loaded) -> None:
    for name, module in (("unet", expected.unet), ("vae", expected.vae)):
        assert_same_module(module, getattr(loaded, name), name)
    assert len(expected.text_encoders) == len(loaded.text_encoders)
    for i, (a, b) in enumerate(zip(expected.text_encoders, loaded.text_encoders, strict=True)):
        assert type(a) is type(b)
        assert_same_module(a, b, f"text encoder {i}")


def assert_same_module(a, b, what: str) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), f"{what}: keys differ: {sorted(set(sa) ^ set(sb))[:5]}"
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{what}: {len(different)} tensors differ, e.g. {different[:3]}"


# --- detection -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.value)
def test_detects_family_of_every_layout(written, family):
    w = written[family]
    for path in (w.safetensors, w.ckpt, w.folder):
        assert detect_family(path) == family, path


def test_detection_evidence_names_the_keys(written):
    assert detect(written[ModelFamily.SDXL].safetensors).evidence == "conditioner.embedders.1.* keys"
    assert detect(written[ModelFamily.SD2].ckpt).evidence == "cond_stage_model.model.* keys"
    assert "quick_gelu" in detect(written[ModelFamily.SD1].folder).evidence
    assert describe_family(ModelFamily.SDXL) == "Stable Diffusion XL"


def test_safetensors_detection_does_not_need_torch(written):
    # the wizard calls detect_family before torch is imported: run it in a fresh interpreter
    import subprocess

    code = (
        "import sys; from pathlib import Path; from engine.models.detect import detect_family; "
        f"print(detect_family(Path({str(written[ModelFamily.SD2].safetensors)!r})).value); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    ).stdout.split()
    assert out == ["sd2", "False"]


def test_lora_file_is_not_a_base_model(tmp_path):
    path = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}, str(path))
    with pytest.raises(ModelError, match="LoRA"):
        detect_family(path)


# --- loading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.value)
@pytest.mark.parametrize("layout", ["safetensors", "ckpt", "folder"])
def test_loads_every_layout_bit_exact(written, family, layout):
    w = written[family]
    path = getattr(w, layout)
    config_dir = None if layout == "folder" else w.config_dir
    loaded = load_base_model(str(path), family=ModelFamily.AUTO, config_dir=config_dir)
    assert loaded.family == family
    assert loaded.source == str(path)
    assert any(short in loaded.notes[0] for short in ("SD1", "SD2", "SDXL"))
    assert_same_weights(w.model, loaded)
    assert len(loaded.tokenizers) == len(loaded.text_encoders)


def test_tokenizers_pad_as_each_encoder_expects(written):
    w = written[ModelFamily.SDXL]
    loaded = load_base_model(str(w.safetensors), config_dir=w.config_dir)
    assert [t.pad_token for t in loaded.tokenizers] == ["<|endoftext|>", "!"]
    assert loaded.tokenizers[0]("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_explicit_family_that_matches_is_accepted(written):
    w = written[ModelFamily.SD2]
    loaded = load_base_model(str(w.ckpt), family=ModelFamily.SD2, config_dir=w.config_dir)
    assert loaded.family == ModelFamily.SD2


@pytest.mark.parametrize("layout", ["safetensors", "folder"])
def test_family_mismatch_names_both(written, layout):
    w = written[ModelFamily.SDXL]
    path = getattr(w, layout)
    with pytest.raises(ModelError) as info:
        load_base_model(str(path), family=ModelFamily.SD1)
    message = str(info.value)
    assert "model.family=sd1" in message and str(path) in message and "SDXL" in message
    assert "set model.family to sdxl or auto" in message


def test_builtin_models():
    demo = load_base_model("builtin:demo")
    assert demo.family == ModelFamily.SD1 and demo.source == "builtin:demo"
    assert_same_weights(build_demo(), demo)
    assert_same_weights(build_tiny(ModelFamily.SD1), load_base_model("builtin:tiny-sd1"))
    assert load_base_model("builtin:tiny-sdxl").family == ModelFamily.SDXL
    with pytest.raises(ModelError, match="builtin:tiny-sd2"):
        load_base_model("builtin:tiny-sd3")
    with pytest.raises(ModelError, match="model.family=sdxl"):
        load_base_model("builtin:demo", family=ModelFamily.SDXL)


def test_sd2_note_says_which_config_was_used(written, tmp_path):
    # the shipped folders are full size, so only the choice is checked here (on the meta device below)
    assert shipped_config_dir(ModelFamily.SD2, v_parameterization=True).name == "sd2_768_v"
    assert shipped_config_dir(ModelFamily.SD2).name == "sd2_512"
    scheduler = json.loads((shipped_config_dir(ModelFamily.SD2, True) / "scheduler/scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction"


def test_tiny_checkpoint_against_full_size_config_is_a_model_error(written):
    # no config_dir: the shipped SD1.5 architecture does not fit the tiny weights
    path = written[ModelFamily.SD1].safetensors
    with pytest.raises(ModelError, match=str(path)):
        load_base_model(str(path))


def test_folder_with_missing_weights(written, tmp_path):
    import shutil

    folder = tmp_path / "partial"
    shutil.copytree(written[ModelFamily.SD1].folder, folder)
    for weights in (folder / "vae").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelError, match="vae"):
        load_base_model(str(folder))


def test_folder_missing_one_text_encoder_weight(written, tmp_path):
    import shutil

    from safetensors.torch import load_file

    folder = tmp_path / "partial"
    shutil.copytree(written[ModelFamily.SD1].folder, folder)
    weights = folder / "text_encoder" / "model.safetensors"
    state = load_file(str(weights))
    dropped = next(k for k in state if k.endswith("final_layer_norm.weight"))
    del state[dropped]
    save_file(state, str(weights))
    with pytest.raises(ModelError, match="final_layer_norm.weight"):
        load_base_model(str(folder))


def test_folder_with_only_fp16_variant_weights(written, tmp_path):
    import shutil

    folder = tmp_path / "variant"
    shutil.copytree(written[ModelFamily.SD2].folder, folder)
    for weights in folder.glob("*/*.safetensors"):
        weights.rename(weights.with_name(weights.stem + ".fp16.safetensors"))
    assert_same_weights(written[ModelFamily.SD2].model, load_base_model(str(folder)))


def test_dtype_is_applied(written):
    w = written[ModelFamily.SD1]
    loaded = load_base_model(str(w.safetensors), config_dir=w.config_dir, dtype=torch.bfloat16)
    modules = [loaded.unet, loaded.vae, *loaded.text_encoders]
    assert {p.dtype for m in modules for p in m.parameters()} == {torch.bfloat16}
    loaded = load_base_model(str(w.folder), dtype=torch.bfloat16)
    modules = [loaded.unet, loaded.vae, *loaded.text_encoders]
    assert {p.dtype for m in modules for p in m.parameters()} == {torch.bfloat16}


# --- bad files -----------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_base_model(str(tmp_path / "nope.safetensors"))
    with pytest.raises(ModelError, match="does not exist"):
        detect_family(tmp_path / "nope.safetensors")


def test_wrong_suffix(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text("x")
    for call in (detect_family, lambda p: load_base_model(str(p))):
        with pytest.raises(ModelError, match=r"model.txt is not a model file: expected a \.safetensors"):
            call(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_truncated_file(written, tmp_path, suffix):
    source = written[ModelFamily.SD1].safetensors if suffix == ".safetensors" else written[ModelFamily.SD1].ckpt
    data = source.read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as info:
        load_base_model(str(path))
    assert str(path) in str(info.value) and "download it again" in str(info.value)
    if suffix == ".safetensors":
        assert "truncated" in str(info.value)
        with pytest.raises(ModelError, match="truncated"):
            detect_family(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_text_file_renamed(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    path.write_text("these are my notes, not a model\n" * 20)
    with pytest.raises(ModelError, match=f"{path}.* not a"):
        load_base_model(str(path))


def test_ckpt_with_code_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "callbacks": {"x": Path("/tmp")}}, path)
    with pytest.raises(ModelError, match="Python objects"):
        load_base_model(str(path))


def test_lightning_ckpt_with_numpy_scalars_loads(written, tmp_path):
    w = written[ModelFamily.SD1]
    path = tmp_path / "lightning.ckpt"
    callbacks = {"ModelCheckpoint": {"best_model_score": np.float64(0.25), "epoch": np.int64(3)}}
    torch.save({"state_dict": w.ldm, "callbacks": callbacks, "global_step": 1000}, path)
    assert "model.diffusion_model.out.2.weight" in checkpoint_keys(path)
    loaded = load_base_model(str(path), config_dir=w.config_dir)
    assert_same_weights(w.model, loaded)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ModelError, match="model_index.json"):
        load_base_model(str(tmp_path))


# --- VAE override --------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["ldm", "diffusers"])
def test_vae_override(written, tmp_path, layout):
    w = written[ModelFamily.SD1]
    other = build_tiny(ModelFamily.SD1, seed=99).vae
    state = ldm_layout.vae_to_ldm(other, prefix="") if layout == "ldm" else other.state_dict()
    path = tmp_path / "my_vae.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    loaded = load_base_model(str(w.safetensors), vae=path, config_dir=w.config_dir)
    assert_same_module(other, loaded.vae, "vae")
    assert_same_module(w.model.unet, loaded.unet, "unet")
    assert any("my_vae.safetensors" in note for note in loaded.notes)


def test_vae_override_from_folder_and_builtin(written, tmp_path):
    other = build_tiny(ModelFamily.SDXL, seed=5).vae
    path = tmp_path / "vae.ckpt"
    torch.save({"state_dict": ldm_layout.vae_to_ldm(other)}, path)
    assert_same_module(other, load_base_model(str(written[ModelFamily.SDXL].folder), vae=path).vae, "vae")
    assert_same_module(other, load_base_model("builtin:tiny-sdxl", vae=path).vae, "vae")


def test_bad_vae_file(written, tmp_path):
    unet_only = tmp_path / "unet.safetensors"
    save_file(ldm_layout.unet_to_ldm(written[ModelFamily.SD1].model.unet), str(unet_only))
    with pytest.raises(ModelError, match="model.vae must be a VAE"):
        load_base_model("builtin:demo", vae=unet_only)
    with pytest.raises(ModelError, match="does not exist"):
        load_base_model("builtin:demo", vae=tmp_path / "missing.safetensors")


# --- offline -------------------------------------------------------------------------------------


def test_no_network_is_touched(written, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for family in FAMILIES:
        w = written[family]
        load_base_model(str(w.safetensors), config_dir=w.config_dir)
        load_base_model(str(w.folder))
    assert os.environ["HF_HUB_OFFLINE"] == "1"


# --- the shipped full-size configs ---------------------------------------------------------------

# Published parameter counts of the real models (diffusers/transformers classes).
REAL_SIZES = {
    "sd15": {"unet": 859_520_964, "text_encoder": 123_060_480},
    "sd2_512": {"unet": 865_910_724, "text_encoder": 340_387_840},
    "sd2_768_v": {"unet": 865_910_724, "text_encoder": 340_387_840},
    "sdxl_base": {"unet": 2_567_463_684, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
}
VAE_SIZE = 83_653_863


def empty_components(folder: Path):
    """The shipped folder's models with no storage (meta device), as from_single_file builds them."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with init_empty_weights():
        out = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae")),
        }
        for name, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
            if (folder / name).is_dir():
                out[name] = cls(CLIPTextConfig.from_pretrained(folder / name))
    return out


def test_every_family_has_a_shipped_folder():
    names = {shipped_config_dir(f, v).name for f in FAMILIES for v in (False, True)}
    assert names == set(REAL_SIZES) == {p.name for p in CONFIG_ROOT.iterdir() if p.is_dir()}
    for name in REAL_SIZES:
        scheduler = json.loads((CONFIG_ROOT / name / "scheduler/scheduler_config.json").read_text())
        assert scheduler["steps_offset"] == 1


@pytest.mark.parametrize("name", ["sd15", "sd2_768_v", "sdxl_base"])
def test_shipped_config_matches_the_real_model(name):
    """Sizes match the published models, and what our LDM writer produces from the full-size
    architecture is exactly what diffusers' single-file converters map back onto it."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    folder = CONFIG_ROOT / name
    models = empty_components(folder)
    sizes = {key: sum(p.numel() for p in m.parameters()) for key, m in models.items()}
    assert sizes == {**REAL_SIZES[name], "vae": VAE_SIZE}

    unet, vae = models["unet"], models["vae"]
    assert_maps_onto(convert_ldm_unet_checkpoint(ldm_layout.unet_to_ldm(unet), unet.config), unet)
    assert_maps_onto(convert_ldm_vae_checkpoint(ldm_layout.vae_to_ldm(vae), vae.config), vae)
    if name == "sdxl_base":
        te1, te2 = models["text_encoder"], models["text_encoder_2"]
        ldm1 = ldm_layout.clip_to_ldm(te1, ldm_layout.SDXL_TEXT1_PREFIX)
        assert_maps_onto(_without_text_model(convert_ldm_clip_checkpoint(ldm1)), te1)
        ldm2 = ldm_layout.open_clip_to_ldm(te2, ldm_layout.SDXL_TEXT2_PREFIX)
        assert_maps_onto(convert_open_clip_checkpoint(te2, ldm2, prefix=ldm_layout.SDXL_TEXT2_PREFIX), te2)
    elif name == "sd15":
        te = models["text_encoder"]
        converted = convert_ldm_clip_checkpoint(ldm_layout.clip_to_ldm(te))
        assert_maps_onto(_without_text_model(converted), te)
    else:
        te = models["text_encoder"]
        ldm = ldm_layout.open_clip_to_ldm(te, ldm_layout.SD2_TEXT_PREFIX)
        assert_maps_onto(_without_text_model(convert_open_clip_checkpoint(te, ldm)), te)


def _without_text_model(state: dict) -> dict:
    # transformers 5's CLIPTextModel has no text_model level; its buffer of position ids is not a weight
    return {k.removeprefix("text_model."): v for k, v in state.items() if not k.endswith("position_ids")}


def assert_maps_onto(converted: dict, model) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    got = {k: tuple(v.shape) for k, v in converted.items()}
    assert got == expected, f"differs: {sorted(set(got) ^ set(expected))[:5]}"

"""LoHa/LoKr through lycoris-lora: the missing-package error, key layout equal to LyCORIS' own network for
the same module set, a few training steps, save and reload, max-norm. Skipped where lycoris-lora is not
installed (except the error test, which needs it absent)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


import pytest
import torch
from torch import nn

from engine.config.schema import ModelFamily, NetworkConfig
from engine.errors import MissingPackageError, ModelError
from engine.models.tiny import build_tiny
from engine.network import lycoris_adapter
from engine.network.lora_file import load_lora_file, save_lora_file
from engine.network.lycoris_adapter import create_lycoris_network, lycoris_network_args
from engine.network.max_norm import apply_max_norm
from engine.network.names import kohya_name, text_encoder_targets, unet_targets
from tests.support.lycoris import HAVE_LYCORIS

SD1, SDXL = ModelFamily.SD1, ModelFamily.SDXL

needs_lycoris = pytest.mark.skipif(not HAVE_LYCORIS, reason="lycoris-lora is not installed (pip install lycoris-lora)")


def cfg(kind: str, **kw) -> NetworkConfig:
    return NetworkConfig(**({"type": kind, "dim": 4, "alpha": 2.0} | kw))


def test_missing_package_names_the_install_command(monkeypatch):
    components = None  # refused before the model is looked at
    monkeypatch.setattr(lycoris_adapter, "installed_version", lambda: None)
    with pytest.raises(MissingPackageError, match=r"network.type=loha needs the lycoris-lora package: pip install lycoris-lora"):
        create_lycoris_network(components, cfg("loha"), train_unet=True, train_text_encoder=False)
    monkeypatch.setattr(lycoris_adapter, "installed_version", lambda: "2.2.0")
    with pytest.raises(MissingPackageError, match=r"needs lycoris-lora>=3, found 2.2.0"):
        lycoris_adapter.lycoris_module_class(cfg("lokr").type)


def test_refusals_and_network_args():
    from engine.config.rules import check
    from engine.config.schema import TrainConfig

    problems = [str(p) for p in check(TrainConfig(network=cfg("loha", dropout=0.1)))]
    assert any("network.dropout = 0.1: is not available for network.type=loha" in p for p in problems)
    assert lycoris_network_args(cfg("lokr")) == {"algo": "lokr"}
    assert lycoris_network_args(cfg("lora")) == {}


# ------------------------------------------------------------------------ equal to LyCORIS' own files


class WithTextModel(nn.Module):
    """transformers 5's CLIPTextModel has no `text_model` level; give LyCORIS' walker the kohya path."""

    def __init__(self, encoder):
        super().__init__()
        self.text_model = encoder


def lycoris_own_state(components, kind: str, conv: bool):
    """The state dict LyCORIS' kohya network writes for our module set (LoRA set, plus LoCon set with conv)."""
    from lycoris.kohya import LycorisNetworkKohya

    saved = {k: getattr(LycorisNetworkKohya, k) for k in (
        "ENABLE_CONV", "UNET_TARGET_REPLACE_MODULE", "UNET_TARGET_REPLACE_NAME", "TEXT_ENCODER_TARGET_REPLACE_MODULE",
        "TEXT_ENCODER_TARGET_REPLACE_NAME", "MODULE_ALGO_MAP", "NAME_ALGO_MAP", "TARGET_EXCLUDE_NAME")}
    LycorisNetworkKohya.apply_preset({
        "enable_conv": conv,
        "unet_target_module": ["Transformer2DModel"] + (["ResnetBlock2D", "Downsample2D", "Upsample2D"] if conv else []),
        "unet_target_name": [],
        "text_encoder_target_module": ["CLIPAttention", "CLIPMLP"],
        "text_encoder_target_name": [],
        "module_algo_map": {}, "name_algo_map": {}, "exclude_name": [],
    })
    try:
        te = [e if hasattr(e, "text_model") else WithTextModel(e) for e in components.text_encoders]
        network = LycorisNetworkKohya(
            te if len(te) > 1 else te[0], components.unet, multiplier=1.0, lora_dim=4, alpha=2.0,
            conv_lora_dim=3 if conv else 0, conv_alpha=1.5, network_module=kind, warn_on_unmatched=False,
        )
        network.apply_to(te, components.unet, apply_text_encoder=True, apply_unet=True)
        state = {k: (tuple(v.shape), float(v) if k.endswith(".alpha") else None) for k, v in network.state_dict().items()}
        for module in network.loras:
            module.restore()
        return state
    finally:
        for k, v in saved.items():
            setattr(LycorisNetworkKohya, k, v)


def our_state(network):
    return {k: (tuple(v.shape), float(v) if k.endswith(".alpha") else None) for k, v in network.kohya_state_dict().items()}


@needs_lycoris
@pytest.mark.parametrize("kind, conv", [("loha", True), ("lokr", True), ("loha", False)])
def test_sd1_keys_and_shapes_equal_lycoris_own(kind, conv):
    c = build_tiny(SD1)
    net_cfg = cfg(kind, conv_dim=3, conv_alpha=1.5) if conv else cfg(kind)
    ours = our_state(create_lycoris_network(c, net_cfg, train_unet=True, train_text_encoder=True))
    theirs = lycoris_own_state(build_tiny(SD1), kind, conv)
    assert ours == theirs
    suffix = ".hada_w1_a" if kind == "loha" else ".lokr_w1"
    assert "lora_unet_down_blocks_0_attentions_0_proj_in" + suffix in ours
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" + suffix in ours
    assert any("resnets_0_conv1" in k for k in ours) == conv


@needs_lycoris
def test_sdxl_uses_sgm_names_with_lycoris_shapes():
    c = build_tiny(SDXL)
    ours = our_state(create_lycoris_network(c, cfg("loha", conv_dim=3, conv_alpha=1.5), train_unet=True, train_text_encoder=True))
    theirs = lycoris_own_state(build_tiny(SDXL), "loha", True)
    # LyCORIS names the diffusers U-Net by its diffusers paths; the file must carry the SGM names
    renamed = {t.name: kohya_name("lora_unet", t.path) for t in unet_targets(c.unet, SDXL, locon=True)}
    for prefix, encoder in zip(("lora_te1", "lora_te2"), c.text_encoders):
        renamed |= {t.name: t.name for t in text_encoder_targets(encoder, prefix)}
    mapped = {}
    for key, value in ours.items():
        name, _, suffix = key.partition(".")
        mapped[f"{renamed[name]}.{suffix}"] = value
    assert mapped == theirs
    assert "lora_unet_input_blocks_3_1_proj_in.hada_w1_a" in ours  # tiny SDXL: down block 1 -> IN3


# --------------------------------------------------------------------------- train, save, reload


def output(c, part: str, seed: int = 0) -> torch.Tensor:
    """What the LoRA changes: the U-Net's prediction, or the text encoder's hidden states."""
    g = torch.Generator().manual_seed(seed)
    if part == "te":
        ids = torch.randint(0, 49406, (1, 12), generator=g)
        return c.text_encoders[0](ids).last_hidden_state
    sample = torch.randn(1, 4, 8, 8, generator=g)
    hidden = torch.randn(1, 8, 32, generator=g)
    return c.unet(sample, torch.tensor([500]), hidden).sample


@needs_lycoris
@pytest.mark.parametrize("kind, part", [("loha", "unet"), ("lokr", "te")])
def test_a_few_steps_save_and_reload(tmp_path, kind, part):
    torch.manual_seed(0)
    c = build_tiny(SD1)
    net_cfg = cfg(kind, conv_dim=3, conv_alpha=1.5)  # LoHa on the U-Net with its 3x3 convs; LoKr on the text encoder
    parts = {"train_unet": part == "unet", "train_text_encoder": part == "te"}
    network = create_lycoris_network(c, net_cfg, **parts)
    with torch.no_grad():
        base = output(c, part)
    network.apply()
    with torch.no_grad():
        assert torch.equal(output(c, part), base)  # zero-initialised update: the base model's output
    network.train()
    optimizer = torch.optim.AdamW(network.param_groups(unet_lr=1e-2, text_encoder_lr=1e-2))
    assert len(optimizer.param_groups) == 1
    start = {k: v.clone() for k, v in network.kohya_state_dict().items()}
    for step in range(2):
        loss = output(c, part, seed=step).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    state = network.kohya_state_dict()
    assert any(not torch.equal(start[k], state[k]) for k in state if not k.endswith(".alpha"))
    network.eval()
    with torch.no_grad():
        trained = output(c, part)
    assert not torch.allclose(trained, base)

    path = save_lora_file(tmp_path / f"{kind}.safetensors", state, {"ss_network_module": "lycoris.kohya"},
                          dtype=torch.float32, fmt="safetensors")
    tensors, meta = load_lora_file(path)
    assert set(tensors) == set(state) and meta["ss_network_module"] == "lycoris.kohya"
    network.remove()
    with torch.no_grad():
        assert torch.equal(output(c, part), base)

    fresh = create_lycoris_network(c, net_cfg, **parts)
    fresh.load_weights(path)
    fresh.apply()
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(output(c, part), trained, atol=1e-6)
    fresh.remove()
    other = create_lycoris_network(c, cfg(kind, dim=2), **parts)  # another rank
    with pytest.raises(ModelError, match="does not fit"):
        other.load_weights(path)


@needs_lycoris
def test_max_norm_uses_lycoris_rule():
    torch.manual_seed(0)
    network = create_lycoris_network(build_tiny(SD1), cfg("loha"), train_unet=True, train_text_encoder=False)
    with torch.no_grad():
        for module in network.loras:
            module.hada_w2_a.normal_(std=1.0)
    count, _mean, largest = apply_max_norm(network, 0.05)
    assert count == len(network.loras) and largest == pytest.approx(0.05, rel=1e-4)
    with torch.no_grad():
        norms = [(m.get_weight(m.shape) * m.scalar).norm().item() for m in network.loras]
    assert max(norms) <= 0.05 * (1 + 1e-4)

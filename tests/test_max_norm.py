"""Max-norm regularisation: the update norm of each module, the rescaling, the reported numbers."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.network.max_norm import apply_max_norm, module_update
from engine.network.modules import LoraModule


class FakeNetwork:
    def __init__(self, *modules):
        self.loras = list(modules)


def linear_module(up: list[list[float]], alpha: float) -> LoraModule:
    up_t = torch.tensor(up)
    m = LoraModule("lin", nn.Linear(2, up_t.shape[0]), 2, alpha)
    with torch.no_grad():
        m.lora_down.weight.copy_(torch.eye(2))
        m.lora_up.weight.copy_(up_t)
    return m


def test_numbers_of_a_scaled_and_an_untouched_module():
    big = linear_module([[3.0, 0.0], [0.0, 4.0], [0.0, 0.0]], alpha=1.0)  # scale 0.5: norm 0.5 * 5 = 2.5
    small = linear_module([[0.6, 0.0], [0.0, 0.0], [0.0, 0.0]], alpha=1.0)  # norm 0.3
    small_before = [p.clone() for p in small.parameters()]
    assert module_update(big).norm().item() == pytest.approx(2.5)

    count, mean, largest = apply_max_norm(FakeNetwork(big, small), 1.0, "cpu")

    assert count == 1
    assert mean == pytest.approx((1.0 + 0.3) / 2) and largest == pytest.approx(1.0)
    factor = math.sqrt(1.0 / 2.5)  # up and down each take the square root of the ratio
    assert torch.allclose(big.lora_down.weight, torch.eye(2) * factor)
    assert torch.allclose(big.lora_up.weight, torch.tensor([[3.0, 0.0], [0.0, 4.0], [0.0, 0.0]]) * factor)
    assert module_update(big).norm().item() == pytest.approx(1.0)
    assert all(torch.equal(a, b) for a, b in zip(small.parameters(), small_before))


def test_a_norm_between_half_and_the_bound_is_left_alone():
    m = linear_module([[1.4, 0.0], [0.0, 0.0], [0.0, 0.0]], alpha=1.0)  # norm 0.7 in [0.5, 1]
    assert apply_max_norm(FakeNetwork(m), 1.0) == (0, pytest.approx(0.7), pytest.approx(0.7))


def test_conv_update_is_the_layer_the_lora_adds():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1)
    m = LoraModule("conv", conv, 2, 1.5)
    with torch.no_grad():
        m.lora_up.weight.normal_()
    update = module_update(m)
    assert update.shape == conv.weight.shape
    # sd-scripts' way of composing the two kernels gives the same tensor
    reference = F.conv2d(m.lora_down.weight.permute(1, 0, 2, 3), m.lora_up.weight).permute(1, 0, 2, 3) * m.scale
    assert torch.allclose(update, reference, atol=1e-6)
    x = torch.randn(2, 3, 8, 8)
    m.eval()
    assert torch.allclose(m.lora_delta(x), F.conv2d(x, update, padding=1), atol=1e-5)


def test_after_a_pass_no_module_exceeds_the_bound():
    torch.manual_seed(1)
    modules = []
    for i in range(6):
        layer = nn.Conv2d(4, 6, 3, padding=1) if i % 2 else nn.Linear(8, 7)
        m = LoraModule(f"m{i}", layer, 3, 2.0)
        with torch.no_grad():
            m.lora_up.weight.normal_(std=0.5 * (i + 1))
        modules.append(m)
    before = [module_update(m).norm().item() for m in modules]
    bound = sorted(before)[2]  # half of them above it
    count, mean, largest = apply_max_norm(FakeNetwork(*modules), bound)
    after = [module_update(m).norm().item() for m in modules]
    assert count == sum(b > bound for b in before) == 3
    assert max(after) <= bound * (1 + 1e-5) and largest == pytest.approx(max(after), rel=1e-5)
    assert mean == pytest.approx(sum(after) / len(after), rel=1e-5)
    for b, a in zip(before, after):
        assert a == pytest.approx(min(b, bound), rel=1e-5)


def test_fresh_network_and_bad_bound():
    m = LoraModule("fresh", nn.Linear(4, 4), 2, 1.0)  # lora_up starts at zero: norm 0
    assert apply_max_norm(FakeNetwork(m), 1.0) == (0, 0.0, 0.0)
    assert apply_max_norm(FakeNetwork(), 1.0) == (0, 0.0, 0.0)
    with pytest.raises(ValueError):
        apply_max_norm(FakeNetwork(m), 0.0)

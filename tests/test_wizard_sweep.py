"""The review's "Sweep a setting": a field and its values become one config per value, saved and
trained (or queued, or saved) in order. The two answers and the final choice are scripted; the
rest of the wizard runs as in tests/test_wizard_flow.py."""

from __future__ import annotations

import pytest

from engine.config.io import load_config
from tests.support.wizard_script import Script, run_wizard
from wizard import sweep_step


def script_sweep(monkeypatch, answers: list[tuple[str, str]], action: str) -> list[str]:
    asked: list[str] = []

    def field(ui):
        asked.append("field")
        return answers[0][0]

    def values(ui, path):
        asked.append(f"values of {path}")
        return answers.pop(0)[1]

    monkeypatch.setattr(sweep_step, "ask_field", field)
    monkeypatch.setattr(sweep_step, "ask_values", values)
    monkeypatch.setattr(sweep_step, "ask_action", lambda ui, actions, common: action)
    return asked


def test_a_sweep_from_the_review_gives_one_config_per_value(saved, monkeypatch):  # noqa: F811
    asked = script_sweep(monkeypatch, [("network.dim", "8,0"), ("network.dim", "8,16,32")], "train")
    run = run_wizard(Script(actions=["sweep"]), saved, monkeypatch)

    assert asked == ["field", "values of network.dim", "field", "values of network.dim"]  # dim 0 is refused, asked again
    assert "network.dim = 0" in run.output
    assert run.outcome.action == "train"
    assert [c.network.dim for c in run.outcome.configs] == [8, 16, 32]
    assert [c.saving.output_name for c in run.outcome.configs] == ["sweep-dim=8", "sweep-dim=16", "sweep-dim=32"]
    assert [load_config(p).network.dim for p in run.outcome.saved] == [8, 16, 32]
    assert "3 run(s):" in run.output and "sweep-dim=16" in run.output


def test_a_sweep_can_join_the_queue(saved, monkeypatch):  # noqa: F811
    script_sweep(monkeypatch, [("optim.unet_lr", "1e-4,2e-4")], "queue")
    run = run_wizard(Script(actions=["sweep", "train"]), saved, monkeypatch)

    assert [c.optim.unet_lr for c in run.outcome.configs] == [1e-4, 2e-4, None]  # then one more config
    assert run.outcome.action == "train" and len(run.outcome.saved) == 3


@pytest.mark.parametrize("typed, accepted", [("network.dim", True), (" optim.unet_lr ", True), ("dim", False), ("network.dimm", False)])
def test_only_config_fields_are_offered(typed, accepted):
    verdict = sweep_step.field_check({"field": "?", "unknown_field": "no"})(typed)
    assert (verdict is True) == accepted
    assert verdict in (True, "no")

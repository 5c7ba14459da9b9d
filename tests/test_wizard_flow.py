"""The interactive wizard, driven in-process through prompt_toolkit's pipe input
(tests/support/wizard_script.py: a `Script` of keys per question path): whole flows, back and the
edit list, and its pieces. The advanced settings: test_wizard_advanced.py; the checks at the
question: test_wizard_checks.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config.io import load_config, save_config
from engine.config.schema import ModelFamily, NetworkType, TrainConfig, field_paths
from prompts import load_prompts
from tests.support.cli import write_dataset
from tests.support.patience import PATIENCE
from tests.support.wizard_expect import (
    ALL_DEFAULTS_ORDER,
    LOADED_DEFAULTS_ORDER,
    wizard_defaults,
    write_safetensors,
)
from tests.support.wizard_script import (
    CTRL_B,
    CTRL_C,
    CTRL_U,
    DOWN,
    ENTER,
    Script,
    run_wizard,
    typed,
)
from wizard import ask, flow
from wizard.checks import AnswerError
from wizard.questions import (
    ASK,
    LOAD_QUESTIONS,
    QUESTIONS,
    Draft,
    Kind,
    question_list,
)

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("no_hang")


# ---- whole flows ------------------------------------------------------------------------------------


def test_enter_everywhere_trains_the_defaults(saved, monkeypatch):
    run = run_wizard(Script(), saved, monkeypatch)

    assert run.asked == ALL_DEFAULTS_ORDER
    assert run.outcome.action == "train"
    assert run.outcome.configs == [wizard_defaults()]
    assert run.outcome.configs[0].model.base_model == "builtin:demo"
    assert run.outcome.configs[0].dataset.img_folder == "builtin:sample"
    [path] = run.outcome.saved
    assert path.parent == saved and load_config(path) == wizard_defaults()
    assert str(path) in run.output.replace("\n", "")
    assert "base_model" in run.output  # the review table


def test_sd2_yes_asks_v_prediction(saved, monkeypatch):
    script = Script({"model.family": "y", "model.v_parameterization": "y"})
    cfg = run_wizard(script, saved, monkeypatch).outcome.configs[0]

    assert cfg.model.family == ModelFamily.SD2 and cfg.model.v_parameterization
    assert script.asked.index("model.v_parameterization") == script.asked.index("model.clip_skip") + 1


def test_locon_asks_conv_dim_and_alpha(saved, monkeypatch):
    script = Script({"network.type": DOWN + ENTER, "network.conv_dim": typed("8")})
    cfg = run_wizard(script, saved, monkeypatch).outcome.configs[0]

    assert cfg.network.type == NetworkType.LOCON
    assert (cfg.network.conv_dim, cfg.network.conv_alpha) == (8, 8.0)  # conv alpha proposes conv dim
    i = script.asked.index("network.type")
    assert script.asked[i + 1 : i + 3] == ["network.conv_dim", "network.conv_alpha"]


def test_realistic_model_uses_clip_skip_1(saved, monkeypatch):
    cfg = run_wizard(Script({"model.clip_skip": "y"}), saved, monkeypatch).outcome.configs[0]
    assert cfg.model.clip_skip == 1


def test_bad_answers_are_refused_until_fixed(saved, monkeypatch, tmp_path):
    images = write_dataset(tmp_path / "images")
    script = Script(
        {
            "network.dim": typed("abc") + typed("0") + typed("8"),
            "optim.learning_rate": typed("-1") + typed("2e-4"),
            "dataset.img_folder": typed(str(tmp_path / "missing")) + typed(str(images)),
        }
    )
    run = run_wizard(script, saved, monkeypatch)
    cfg = run.outcome.configs[0]

    assert (cfg.network.dim, cfg.network.alpha) == (8, 4.0)  # alpha proposes half the dim
    assert cfg.optim.learning_rate == 2e-4
    assert cfg.dataset.img_folder == str(images)
    assert run.asked.count("network.dim") == 1  # refused inline, not by asking again


def test_gated_values_are_asked_only_after_yes(saved, monkeypatch, tmp_path):
    reg = write_dataset(tmp_path / "reg", folder="1_person")
    script = Script(
        {
            "ask.reg_images": "y",
            "dataset.reg_img_folder": typed(str(reg)),
            "ask.save_every": "y",
            "ask.noise_offset": "y",
            "ask.min_snr": "y",
            "ask.output_name": "y",
            "saving.output_name": typed("mychar"),
            "saving.training_comment": typed("trigger: mychar"),
        }
    )
    cfg = run_wizard(script, saved, monkeypatch).outcome.configs[0]

    assert cfg.dataset.reg_img_folder == reg
    assert cfg.saving.save_every_n_epochs == 1
    assert cfg.training.noise_offset == 0.1  # the LETS suggestion
    assert cfg.training.min_snr_gamma == 5.0
    assert cfg.saving.output_name == "mychar"
    assert cfg.saving.training_comment == "trigger: mychar"  # LETS dropped it (inverted test)


def test_a_rule_between_fields_asks_the_named_question_again(saved, monkeypatch):
    # LoCon with its conv rank left empty: the rulebook names network.conv_dim, which is asked again
    script = Script({"network.type": DOWN + ENTER, "network.conv_dim": [CTRL_U + ENTER, typed("8")]})
    run = run_wizard(script, saved, monkeypatch)

    assert "network.type=locon needs the rank of the 3x3 convs" in run.output
    assert run.asked.count("network.conv_dim") == 2
    assert run.outcome.configs[0].network.conv_dim == 8


def test_resolution_is_checked_against_the_bucket_step_at_the_question(saved, monkeypatch):
    script = Script({"dataset.resolution": typed("500") + typed("768x512")})
    run = run_wizard(script, saved, monkeypatch)

    assert run.asked.count("dataset.resolution") == 1  # refused as it was typed
    assert run.outcome.configs[0].dataset.resolution == (768, 512)


def test_detected_family_is_the_default(saved, monkeypatch, tmp_path):
    model = write_safetensors(tmp_path / "sd2.safetensors", ["cond_stage_model.model.ln_final.weight"])
    script = Script({"model.base_model": typed(str(model))})
    run = run_wizard(script, saved, monkeypatch)
    cfg = run.outcome.configs[0]

    assert cfg.model.base_model == str(model)
    assert cfg.model.family == ModelFamily.SD2  # Enter took the detected answer
    assert "model.v_parameterization" in run.asked
    assert "The file header says: sd2." in run.output


def test_unreadable_base_model_is_refused(saved, monkeypatch, tmp_path):
    lora = write_safetensors(tmp_path / "a_lora.safetensors", ["lora_unet_down.lora_down.weight"])
    sd1 = write_safetensors(tmp_path / "sd1.safetensors", ["cond_stage_model.transformer.x"])
    script = Script({"model.base_model": typed(str(lora)) + typed(str(sd1))})
    cfg = run_wizard(script, saved, monkeypatch).outcome.configs[0]

    assert cfg.model.base_model == str(sd1) and cfg.model.family == ModelFamily.SD1
    with pytest.raises(AnswerError, match="LoRA"):
        ask.parse_answer(QUESTIONS[0], str(lora))


def test_queue_another_gives_two_configs_in_order(saved, monkeypatch):
    script = Script({"network.dim": [typed("8"), ENTER]}, actions=["queue", "train"])
    run = run_wizard(script, saved, monkeypatch)

    assert run.outcome.action == "train"
    assert [c.network.dim for c in run.outcome.configs] == [8, 32]
    assert len(run.outcome.saved) == 2 and len(set(run.outcome.saved)) == 2
    assert [load_config(p).network.dim for p in run.outcome.saved] == [8, 32]
    assert run.asked.count("ask.load_json") == 2  # the second config starts from the first question


def test_save_only(saved, monkeypatch):
    run = run_wizard(Script(actions=["save"]), saved, monkeypatch)

    assert run.outcome.action == "save"
    [path] = run.outcome.saved
    assert path.exists() and list(saved.iterdir()) == [path]


def test_edit_an_answer_then_train(saved, monkeypatch):
    script = Script(
        {"network.dim": [ENTER, typed("64")]}, actions=["edit", "train"], edits=["network.dim"]
    )
    run = run_wizard(script, saved, monkeypatch)
    cfg = run.outcome.configs[0]

    assert cfg.network.dim == 64 and cfg.network.alpha == 16.0  # alpha keeps its answer
    assert run.asked.count("network.dim") == 2
    assert run.output.count("Setting") == 2  # the review is shown again


def test_editing_a_gate_asks_what_it_enables(saved, monkeypatch, tmp_path):
    reg = write_dataset(tmp_path / "reg", folder="1_person")
    script = Script(
        {"ask.reg_images": [ENTER, "y"], "dataset.reg_img_folder": typed(str(reg))},
        actions=["edit", "train"],
        edits=["ask.reg_images"],
    )
    run = run_wizard(script, saved, monkeypatch)

    assert run.outcome.configs[0].dataset.reg_img_folder == reg
    assert run.asked[-2:] == ["ask.reg_images", "dataset.reg_img_folder"]


def kept_drafts(saved: Path) -> list[Path]:
    return sorted((saved / "drafts").glob("*.draft.json"))


def test_ctrl_c_keeps_a_draft_that_the_next_start_continues(saved, monkeypatch):
    first = run_wizard(Script({"network.dim": typed("8"), "optim.learning_rate": CTRL_C + "y"}), saved, monkeypatch)

    assert isinstance(first.error, flow.WizardCancelled) and first.error.exit_code == 130
    [draft] = kept_drafts(saved)
    assert first.error.draft == draft and first.error.saved == []  # a draft, not a config
    shown = " ".join(first.output.split())
    assert str(draft) in first.output.replace("\n", "") and 'continue from the question "Learning rate:"' in shown

    # the next start offers the draft (Enter: continue) and asks from the question it stopped at,
    # then every question not answered yet: not the short list of a loaded file
    second = run_wizard(Script(before=ENTER), saved, monkeypatch)
    start = ALL_DEFAULTS_ORDER.index("optim.learning_rate")
    assert second.asked == ALL_DEFAULTS_ORDER[start:]
    assert second.outcome.configs[0].network.dim == 8
    assert kept_drafts(saved) == []  # finished: the draft became the saved config


def test_back_works_in_a_continued_draft_and_a_draft_can_be_left_for_later(saved, monkeypatch):
    run_wizard(Script({"network.dim": typed("8"), "network.alpha": CTRL_C + "y"}), saved, monkeypatch)
    # back from alpha reaches dim, answered before the restart
    later = run_wizard(Script({"network.alpha": [CTRL_B], "network.dim": typed("16")}, before=ENTER), saved, monkeypatch)
    assert later.asked[:3] == ["network.alpha", "network.dim", "network.alpha"]
    assert later.outcome.configs[0].network.dim == 16

    run_wizard(Script({"network.dim": typed("4"), "network.alpha": CTRL_C + "y"}), saved, monkeypatch)
    fresh = run_wizard(Script(before=DOWN + ENTER), saved, monkeypatch)  # a new config, the draft kept
    assert fresh.asked == ALL_DEFAULTS_ORDER and len(kept_drafts(saved)) == 1
    run_wizard(Script(before=DOWN + DOWN + ENTER), saved, monkeypatch)  # a new config, the draft deleted
    assert kept_drafts(saved) == []


def test_a_draft_kept_at_the_review_continues_at_the_review(saved, monkeypatch):
    run = run_wizard(Script(actions=["ctrl_c"]), saved, monkeypatch)
    assert run.error is not None and len(kept_drafts(saved)) == 1

    again = run_wizard(Script(before=ENTER), saved, monkeypatch)
    assert again.asked == [] and again.outcome.configs == [wizard_defaults()]


def test_ctrl_c_twice_leaves_without_saving(saved, monkeypatch):
    run = run_wizard(Script({"network.dim": typed("8"), "training.epochs": CTRL_C + CTRL_C}), saved, monkeypatch)

    assert isinstance(run.error, flow.WizardCancelled) and run.error.saved == [] and run.error.draft is None
    assert not saved.exists() or not any(saved.rglob("*.json"))


def test_a_draft_keeps_answers_that_are_not_a_valid_config_yet(saved, monkeypatch):
    # LoCon without its conv dim is not a valid config: the draft keeps it as answered
    run_wizard(Script({"network.type": DOWN + ENTER, "network.conv_dim": CTRL_C + "y"}), saved, monkeypatch)
    [path] = kept_drafts(saved)
    data = json.loads(path.read_text())
    assert data["answers"]["network.type"] == "locon" and data["asking"] == "network.conv_dim"
    again = run_wizard(Script({"network.conv_dim": typed("8")}, before=ENTER), saved, monkeypatch)
    assert again.asked[0] == "network.conv_dim" and again.outcome.configs[0].network.conv_dim == 8


def test_ctrl_c_before_any_answer_just_leaves(saved, monkeypatch):
    run = run_wizard(Script({"ask.load_json": CTRL_C}), saved, monkeypatch)
    assert isinstance(run.error, flow.WizardCancelled) and run.error.saved == [] and run.error.draft is None


# ---- back during the questions, and the edit list --------------------------------------------------


def test_back_asks_the_previous_question_with_its_answer_proposed(saved, monkeypatch, tmp_path):
    images = write_dataset(tmp_path / "images")
    script = Script({
        "dataset.img_folder": [typed(str(images)), ENTER],  # Enter the second time: the answer is kept
        "saving.output_folder": [CTRL_B, ENTER],
        "training.epochs": [typed("3"), CTRL_B, ENTER],
        "network.dim": [CTRL_B, typed("8")],  # back to epochs, and from there back to batch size
    })
    run = run_wizard(script, saved, monkeypatch)
    cfg = run.outcome.configs[0]

    i = run.asked.index("saving.output_folder")
    assert run.asked[i - 1 : i + 3] == ["dataset.img_folder", "saving.output_folder", "dataset.img_folder", "saving.output_folder"]
    assert cfg.dataset.img_folder == str(images)
    j = run.asked.index("network.dim")
    assert run.asked[j : j + 5] == ["network.dim", "training.epochs", "training.batch_size", "training.epochs", "network.dim"]
    assert cfg.training.epochs == 3 and cfg.network.dim == 8  # taken back answers are proposed again


def test_back_at_the_first_question_asks_load_a_saved_config_again(saved, monkeypatch):
    run = run_wizard(Script({"model.base_model": [CTRL_B, ENTER]}), saved, monkeypatch)
    assert run.asked[:4] == ["ask.load_json", "model.base_model", "ask.load_json", "model.base_model"]
    assert run.outcome.configs == [wizard_defaults()]


def test_the_edit_list_filters_as_you_type_and_shows_answers_as_given(monkeypatch):
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from wizard.edit_list import edit_choices, pick_question

    draft = Draft(TrainConfig(), question_list(loaded=False))
    texts = load_prompts("en")
    titles = {c.value.path: c.title for c in edit_choices(draft, texts) if c.value != "back"}
    assert "(auto)" not in titles["model.family"] and titles["model.family"].split("  ")[1] == "no"
    assert titles["model.clip_skip"].split("  ")[1] == "no"  # clip_skip 2 is "not a realistic model"
    assert "AdamW8bit (less memory" in titles["optim.optimizer"]  # the choice's title
    with create_pipe_input() as inp, create_app_session(input=inp, output=DummyOutput()):
        inp.send_text("alpha" + ENTER)
        assert pick_question(draft, texts).path == "network.alpha"
        inp.send_text("\x1b")  # Esc: back to the review
        assert pick_question(draft, texts) is None


def test_load_a_saved_config_asks_the_short_list(saved, monkeypatch, tmp_path):

    original = TrainConfig.model_validate(
        {"network": {"dim": 8, "alpha": 4}, "training": {"epochs": 3}, "optim": {"lr_scheduler": "cosine"}}
    )
    path = save_config(original, tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": 1, "network": {"dim": "many"}}')
    script = Script({"ask.load_json": "y", "ask.load_path": [typed(str(broken)), typed(str(path))]})
    run = run_wizard(script, saved, monkeypatch)
    cfg = run.outcome.configs[0]

    assert "network.dim" in run.output  # the load error, then the path asked again
    assert run.asked == ["ask.load_json", "ask.load_path", *LOADED_DEFAULTS_ORDER[1:]]
    assert (cfg.network.dim, cfg.network.alpha, cfg.training.epochs) == (8, 4.0, 3)
    assert cfg.optim.lr_scheduler == "cosine"


def test_load_an_old_lets_json(saved, monkeypatch, tmp_path):
    """A LETS popup file: its paths are from another machine, so they are asked again (the file's
    value proposed, refused while it does not exist); the import notes are shown; the answers that
    LETS' skip list used to drop (reg images, comment) are proposed from the file, and what the user
    changes shows at the review as a difference from the file."""
    lets = tmp_path / "lets.json"
    lets.write_text(json.dumps({
        "base_model": "/elsewhere/anything-v4.5.safetensors", "img_folder": "/elsewhere/img",
        "output_folder": str(tmp_path / "out"), "net_dim": 16, "alpha": 8, "num_epochs": 2,
        "use_8bit_adam": True, "8bit_adam": False, "reg_img_folder": "/elsewhere/reg", "training_comment": "old",
    }))
    script = Script({
        "ask.load_json": "y",
        "ask.load_path": typed(str(lets)),
        "model.base_model": ENTER + typed("builtin:demo"),  # Enter on the stale path is refused
        "dataset.img_folder": typed("builtin:sample"),
        "ask.reg_images": "n",  # proposed yes: the file has a reg folder
    })
    run = run_wizard(script, saved, monkeypatch, width=200)
    cfg = run.outcome.configs[0]

    assert "8bit_adam" in run.output
    assert cfg.optim.optimizer == "AdamW"  # LETS' own bug (AdamW8bit) is not carried over
    assert (cfg.network.dim, cfg.network.alpha, cfg.training.epochs) == (16, 8.0, 2)
    assert cfg.dataset.reg_img_folder is None and cfg.saving.training_comment == "old"  # Enter kept the comment
    assert cfg.saving.output_folder == tmp_path / "out"
    review = run.output[run.output.rindex("Your training config"):]
    reg_row = next(line for line in review.splitlines() if "reg_img_folder" in line)
    assert "/elsewhere/reg" in reg_row  # the cleared folder is a visible change, not a missing row
    assert "differ from" in review and "dataset.reg_img_folder" in review and "model.base_model" in review


def test_enter_everywhere_after_loading_keeps_every_value_of_the_file(saved, monkeypatch, tmp_path):
    reg = write_dataset(tmp_path / "reg", folder="1_person")
    original = TrainConfig.model_validate({
        "dataset": {"reg_img_folder": str(reg)},
        "saving": {"output_name": "mychar", "training_comment": "trigger: mychar"},
    })
    path = save_config(original, tmp_path)
    run = run_wizard(Script({"ask.load_json": "y", "ask.load_path": typed(str(path))}), saved, monkeypatch)

    assert run.outcome.configs[0] == original  # nothing dropped silently
    assert "Every setting is as in" in " ".join(run.output.split())
    assert run.outcome.saved[0].name.startswith("mychar-")  # named after the output


# ---- pieces -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "typed_text", "reason"),
    [
        ("network.dim", "abc", "valid integer"),
        ("network.dim", "0", "greater than or equal to 1"),
        ("optim.learning_rate", "-1", "greater than 0"),
        ("dataset.resolution", "768x32", "at least 64"),
        ("saving.output_name", "a/b", "plain file name"),
        ("dataset.img_folder", "/no/such/folder", "does not exist"),
        ("network.network_weights", "/no/such.safetensors", "does not exist"),
        ("training.batch_size", "", "Type a value"),
    ],
)
def test_a_bad_answer_gets_a_reason(path, typed_text, reason):
    q = next(q for q in QUESTIONS if q.path == path)
    with pytest.raises(AnswerError) as info:
        ask.parse_answer(q, typed_text)
    assert reason in ask.error_text(info.value, load_prompts("en"))


@pytest.mark.parametrize(
    ("path", "typed_text", "value"),
    [
        ("network.dim", "16", 16),
        ("network.alpha", "8", 8.0),
        ("optim.learning_rate", "1e-4", 1e-4),
        ("optim.text_encoder_lr", "", None),
        ("dataset.resolution", "768, 512", (768, 512)),
        ("dataset.img_folder", "'builtin:sample'", "builtin:sample"),
        ("saving.training_comment", "", None),
    ],
)
def test_answers_become_field_values(path, typed_text, value):
    q = next(q for q in QUESTIONS if q.path == path)
    assert ask.parse_answer(q, typed_text) == value


@pytest.mark.parametrize("raw", ["0", "1", "-3", "1024", "1025", "2.5", "abc"])
def test_the_wizard_accepts_exactly_what_the_config_accepts(raw):
    """The same value is accepted by an answer and by a config file, or by neither."""
    q = next(q for q in QUESTIONS if q.path == "network.dim")
    try:
        ask.parse_answer(q, raw)
        wizard_ok = True
    except AnswerError:
        wizard_ok = False
    try:
        json.loads(raw)
        in_file = raw  # written as a JSON number
    except ValueError:
        in_file = json.dumps(raw)
    try:
        TrainConfig.model_validate_json(f'{{"network": {{"dim": {in_file}}}}}')
        file_ok = True
    except ValueError:
        file_ok = False
    assert wizard_ok == file_ok


def test_every_question_has_its_text_and_a_real_field():
    texts = load_prompts("en")
    questions = [*LOAD_QUESTIONS, *QUESTIONS]
    paths = [q.path for q in questions]
    assert len(paths) == len(set(paths))
    assert set(texts["questions"]) == set(paths)  # no missing text, no text left over
    fields = set(field_paths())
    for q in questions:
        assert q.path.startswith(ASK) or q.path in fields, q.path
        text = texts["questions"][q.path]
        assert text["message"] and text["help"], q.path
        if q.kind is Kind.SELECT:
            assert {str(v) for v in q.choices} <= set(text.get("choices", {})), q.path
        if q.detail:
            assert "detail" in text, q.path
    assert set(texts["actions"]) == set(flow.ACTIONS)


def test_every_error_key_has_its_text():
    texts = load_prompts("en")
    source = "".join((REPO / "wizard" / name).read_text() for name in ("checks.py", "ask.py"))
    keys = set(re.findall(r'AnswerError\("(\w+)"', source))
    assert keys and keys <= set(texts["errors"])


def test_short_list_is_the_lets_b1j_questions():
    active = Draft(TrainConfig(), question_list(loaded=True)).active()
    assert [q.path for q in active] == LOADED_DEFAULTS_ORDER[2:]


def test_a_gate_switched_off_clears_its_field():
    draft = Draft(TrainConfig(), question_list(loaded=False))
    draft.answers.update({"ask.keep_tokens": True, "dataset.keep_tokens": 3})
    assert draft.to_data()["dataset"]["keep_tokens"] == 3
    draft.answers["ask.keep_tokens"] = False
    assert draft.to_data()["dataset"]["keep_tokens"] == 0


def test_review_shows_changes_and_the_essentials():
    from wizard.review import review_rows

    cfg = TrainConfig.model_validate({"network": {"dim": 8}, "dataset": {"flip_aug": True}})
    rows = {f"{section}.{name}": (value, default) for section, name, value, default in review_rows(cfg)}
    assert rows["network.dim"] == (8, 32) and rows["dataset.flip_aug"] == (True, False)
    assert "model.base_model" in rows  # important even when unchanged
    assert "dataset.shuffle_caption" not in rows  # unchanged and not important


def test_the_wizard_never_imports_torch():
    code = f"""
import io, sys, time
sys.path.insert(0, {str(REPO)!r})
start = time.perf_counter()
from wizard.flow import run_interactive
opened = time.perf_counter() - start
from pathlib import Path
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console
with create_pipe_input() as inp, create_app_session(input=inp, output=DummyOutput()):
    inp.send_text("\\r" * 80)
    inp.close()
    outcome = run_interactive(Console(file=io.StringIO()), saved_configs_dir=Path(sys.argv[1]))
print(outcome.action, "torch" in sys.modules, "diffusers" in sys.modules, round(opened, 3))
"""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run(
            [sys.executable, "-c", code, folder], capture_output=True, text=True, timeout=PATIENCE, cwd=REPO
        )
    assert result.returncode == 0, result.stderr
    action, torch, diffusers, _opened = result.stdout.split()
    assert (action, torch, diffusers) == ("train", "False", "False")

"""The wizard as a guide (issue 16): its screens in Chinese and Japanese, sample images from the main
flow, every Ctrl-C resumable (a run started from the wizard, configs queued and not trained), text
that fits 80 columns, and the messages around a run (progress, hints, no terminal)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from engine.config.schema import TrainConfig
from engine.events import Outcome, Phase, RunResult, RunStatus, StepStats
from engine.queue.journal import RunState
from prompts import load_prompts
from tests.support.cli import one_line
from tests.support.patience import PATIENCE
from tests.support.wizard_script import (
    CTRL_C,
    CTRL_U,
    DOWN,
    ENTER,
    Script,
    run_wizard,
    scripted,
    typed,
)
from wizard import ask
from wizard.app import main
from wizard.checks import AnswerError
from wizard.questions import QUESTIONS
from wizard.screen import Screen

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("no_hang")


def squeezed(text: str) -> str:
    """Without blanks: Chinese and Japanese lines wrap between any two characters."""
    return "".join(text.split())


# ---- Chinese and Japanese screens ---------------------------------------------------------------------

def locon_without_conv_dim() -> dict:
    return {"network.type": DOWN + ENTER, "network.conv_dim": [CTRL_U + ENTER, typed("8")]}


@pytest.mark.parametrize(
    ("lang", "help_line", "problems", "review", "empty"),
    [
        ("zh", "LoRA 的容量", "这些设置不能一起使用", "你的训练配置", "请输入一个值"),
        ("ja", "LoRA の容量", "次の設定は同時に使えません", "学習設定", "値を入力してください"),
    ],
)
def test_the_wizard_speaks_chinese_and_japanese(saved, monkeypatch, lang, help_line, problems, review, empty):
    run = run_wizard(Script(locon_without_conv_dim()), saved, monkeypatch, lang=lang)
    out = squeezed(run.output)

    assert squeezed(help_line) in out  # a question's help line
    assert problems in out and "network.conv_dim" in out  # a rule broken (the rule's own words stay English)
    assert review in out and load_prompts(lang)["review"]["field"] in out  # the review
    assert run.outcome.configs[0].network.conv_dim == 8
    batch = next(q for q in QUESTIONS if q.path == "training.batch_size")
    with pytest.raises(AnswerError) as refused:
        ask.parse_answer(batch, "")
    assert empty in ask.error_text(refused.value, load_prompts(lang))  # a refusal


def test_the_language_follows_the_locale_on_the_command_line(saved, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")
    script = Script(actions=["save"])
    with scripted(script, monkeypatch):
        assert main([]) == Outcome.OK
    out = squeezed(capsys.readouterr().out)
    assert "保存しました" in out and "あとで学習するには" in out


# ---- sample images -----------------------------------------------------------------------------------


def test_sample_images_from_a_prompt_typed_in(saved, monkeypatch):
    script = Script({"ask.samples": "y", "sampling.sample_prompts": typed("shapes, red circle --s 4 --w 64 --h 64")})
    cfg = run_wizard(script, saved, monkeypatch).outcome.configs[0]

    prompts = Path(cfg.sampling.sample_prompts)
    assert prompts.parent == (saved / "prompts").resolve()
    assert prompts.read_text() == "shapes, red circle --s 4 --w 64 --h 64\n"
    assert (cfg.sampling.sample_sampler, cfg.sampling.sample_every_n_epochs) == ("ddim", 1)
    i = script.asked.index("ask.samples")
    assert script.asked[i : i + 4] == ["ask.samples", "sampling.sample_prompts", "sampling.sample_sampler", "sampling.sample_every_n_epochs"]


def test_sample_images_propose_the_first_caption_and_take_a_prompt_file(saved, monkeypatch, tmp_path):
    proposed = run_wizard(Script({"ask.samples": "y"}), saved, monkeypatch).outcome.configs[0]
    assert Path(proposed.sampling.sample_prompts).read_text().startswith("shapes, red circle")

    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("# two views\nmychar, standing --s 4\nmychar, sitting --ss euler_a\n")
    script = Script({
        "ask.samples": "y",
        "sampling.sample_prompts": typed(str(tmp_path / "missing.txt")) + typed(str(prompt_file)),
        "sampling.sample_every_n_epochs": typed("2"),
    })
    cfg = run_wizard(script, saved, monkeypatch).outcome.configs[0]
    assert cfg.sampling.sample_prompts == prompt_file and cfg.sampling.sample_every_n_epochs == 2
    q = next(q for q in QUESTIONS if q.path == "sampling.sample_prompts")
    with pytest.raises(AnswerError, match="--q"):
        ask.parse_answer(q, "mychar --q 3")  # a prompt is checked as its line will be read


def test_samples_are_off_by_default_on_the_cpu(saved, monkeypatch):
    cfg = run_wizard(Script(), saved, monkeypatch).outcome.configs[0]
    assert cfg.sampling.sample_prompts is None and cfg.logging.tensorboard


# ---- every Ctrl-C can be carried on ---------------------------------------------------------------------


class FakeTrainer:
    """Trains nothing; reports two steps; the run named `stop_in` is stopped (as by a first Ctrl-C)
    the first time it runs."""

    def __init__(self, stop_in: str | None = None) -> None:
        self.stop_in = stop_in
        self.calls: list[str] = []

    def __call__(self, cfg, plan, run_dir, reporter, stop=None, resume_from=None) -> RunResult:
        name = cfg.saving.output_name
        self.calls.append(name)
        reporter.started(2, 1)
        reporter.step(StepStats(1, 2, 1, 1, 0.25, 1e-4))
        if name == self.stop_in and self.calls.count(name) == 1:
            stop.request()
            lora = run_dir / f"{name}-interrupted.safetensors"
            lora.write_bytes(b"lora")
            return RunResult(run_dir, RunStatus.INTERRUPTED, 1, 2, [lora], 0.1)
        reporter.step(StepStats(2, 2, 1, 1, 0.125, 0.0))
        lora = run_dir / f"{name}.safetensors"
        lora.write_bytes(b"lora")
        return RunResult(run_dir, RunStatus.DONE, 2, 2, [lora], 0.1)


def two_queued() -> dict:
    return {"ask.output_name": ["y", "y"], "saving.output_name": [typed("a"), typed("b")]}


def test_a_wizard_run_stopped_with_ctrl_c_carries_on_with_queue_resume(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    trainer = FakeTrainer(stop_in="a")
    with scripted(Script(two_queued(), actions=["queue", "train"]), monkeypatch):
        assert main([], trainer=trainer) == Outcome.CANCELLED
    out = one_line(capsys.readouterr().out)
    assert trainer.calls == ["a"] and "lora-wizard queue --resume" in out
    assert "a-" in out and "b-" in out  # the runs are labelled by their output names

    assert main(["queue", "--resume"], trainer=trainer) == Outcome.OK  # both queued configs finish
    assert trainer.calls == ["a", "a", "b"]
    assert (tmp_path / "output" / "run3" / "b.safetensors").is_file()


def test_the_wizards_next_start_offers_to_carry_on(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    trainer = FakeTrainer(stop_in="a")
    with scripted(Script(two_queued(), actions=["queue", "train"]), monkeypatch):
        main([], trainer=trainer)
    capsys.readouterr()
    with scripted(Script(before=ENTER), monkeypatch):  # "carry on with it now"
        assert main([], trainer=trainer) == Outcome.OK
    out = one_line(capsys.readouterr().out)
    assert trainer.calls == ["a", "a", "b"] and "did not finish" in out
    assert "loss: 0.2500 at the first step, 0.1250 at the last" in out  # what the runs learned


def test_configs_queued_before_a_ctrl_c_in_the_questions_are_kept(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    trainer = FakeTrainer()
    script = Script({**two_queued(), "network.dim": [ENTER, CTRL_C + "n"]}, actions=["queue"])
    with scripted(script, monkeypatch):
        assert main([], trainer=trainer) == Outcome.CANCELLED
    assert "queue --resume" in one_line(capsys.readouterr().out) and trainer.calls == []
    assert main(["queue", "--resume"], trainer=trainer) == Outcome.OK
    assert trainer.calls == ["a"]


def test_the_finish_by_question_refuses_a_wrong_time_and_takes_no_limit(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    trainer = FakeTrainer()
    # "7pm" is refused at the question (it stays open); cleared and Enter: no time limit
    script = Script(two_queued(), actions=["queue", "train"], finish_by=typed("7pm") + CTRL_U + ENTER)
    with scripted(script, monkeypatch):
        assert main([], trainer=trainer) == Outcome.OK
    assert trainer.calls == ["a", "b"]  # both trained in full


def test_a_stop_before_the_first_step_says_nothing_was_saved(monkeypatch, tmp_path, capsys):
    def stopped_while_loading(cfg, plan, run_dir, reporter, stop=None, resume_from=None):
        return RunResult(run_dir, RunStatus.INTERRUPTED, 0, plan.total_steps, [], 0.1, "stopped before the first step")

    monkeypatch.chdir(tmp_path)
    with scripted(Script(), monkeypatch):
        assert main([], trainer=stopped_while_loading) == Outcome.OK  # not stopped by the user: the run says so
    out = one_line(capsys.readouterr().out)
    assert "before the first step" in out and "nothing was trained or saved" in out
    assert "the LoRA so far is saved" not in out


# ---- hints, files, the terminal -----------------------------------------------------------------------


def test_save_only_prints_the_replay_command_as_the_user_typed_it(saved, monkeypatch, tmp_path):
    out = io.StringIO()
    from wizard import flow

    with scripted(Script(actions=["save"]), monkeypatch):
        outcome = flow.run_interactive(Console(file=out, width=200), saved_configs_dir=saved, command="python run_wizard.py")
    assert f"python run_wizard.py replay {outcome.saved[0]}" in out.getvalue()
    assert outcome.saved[0].name.startswith("sample-")  # named after the dataset when the LoRA has none


def test_without_a_terminal_the_wizard_says_so_and_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_wizard.py")], stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=PATIENCE, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "needs a terminal" in one_line(proc.stdout) and "run_wizard.py replay" in one_line(proc.stdout)


def test_third_party_lines_about_other_things_are_filtered():
    import logging

    from engine.quiet import NOT_ABOUT_THE_RUN, quiet_heavy_imports

    quiet_heavy_imports()
    quiet_heavy_imports()  # twice: one filter
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    for name, starts in NOT_ABOUT_THE_RUN.items():
        logger = logging.getLogger(name)
        assert len(logger.filters) == 1
        handler, level = Keep(), logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)  # the tests' conftest quiets bitsandbytes as a whole
        logger.warning(starts[0] + " from kernels-community: offline")
        logger.warning("a warning that concerns the run")
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert seen == ["a warning that concerns the run"] * len(NOT_ABOUT_THE_RUN)


def test_the_progress_shows_the_loss_from_step_1_the_rate_and_seconds_per_step():
    from wizard.progress import RichReporter, speed_text

    assert speed_text(0.04) == "25.0 s/it" and speed_text(2.5) == "2.50 it/s" and speed_text(None) == "- it/s"
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, width=100), load_prompts("en")["progress"])
    reporter.progress(Phase.CACHING_LATENTS, 0, 6)
    reporter.progress(Phase.CACHING_LATENTS, 6, 6)
    reporter.started(10, 1)
    reporter.step(StepStats(1, 10, 1, 1, 0.1234, 1e-4))
    reporter.close()
    text = out.getvalue()
    assert "loss 0.1234" in text and "lr 1.00e-04" in text and reporter.first_loss == 0.1234
    for lang in ("en", "zh", "ja"):  # one line at 80 columns: no cell squeezed into "…"
        out = io.StringIO()
        reporter = RichReporter(Console(file=out, width=80, force_terminal=True), load_prompts(lang)["progress"])
        reporter.started(4800, 20)
        reporter.step(StepStats(4799, 4800, 20, 20, 1.0763, 9.47e-05))
        reporter.close()
        assert "4799/4800" in out.getvalue() and "…" not in out.getvalue()


# ---- 80 columns ---------------------------------------------------------------------------------------


def test_the_plan_and_summary_fit_80_columns_and_show_the_run_folder_whole(tmp_path):
    from engine.queue.policy import in_memory_queue
    from engine.queue.preflight import preflight
    from wizard.run_view import QueueConsole, show_plan, show_summary

    output = tmp_path / ("a_long_output_folder_name_" * 3) / "for_this_run"
    cfg = TrainConfig.model_validate({"saving": {"output_folder": str(output), "output_name": "mychar_v1"}})
    planned = preflight([("mychar_v1-20250101-120000.json", cfg)])
    out = io.StringIO()
    screen = Screen(Console(file=out, width=80), load_prompts("en"))
    show_plan(screen, planned)
    journal, _ = in_memory_queue(planned)
    entry = journal.entries[0]
    entry.state, entry.run_dir, entry.files = RunState.DONE, str(output / "run1"), [str(output / "run1" / "mychar_v1.safetensors")]
    show_summary(screen, journal, {id(entry)}, QueueConsole(screen))
    text = out.getvalue()

    assert "…" not in text
    lines = text.splitlines()
    assert any(line.strip().endswith(f"{output}/run1/mychar_v1.safetensors") for line in lines)  # the plan's output, whole
    assert any(line.strip() == f"{output}/run1" for line in lines)  # the summary's run folder, whole
    assert all(len(line) <= 80 for line in lines if str(output) not in line)


def test_a_refusal_wraps_between_words():
    from wizard.screen import wrap

    message = "/models/lora/anime_style_v3_final.safetensors is not a Stable Diffusion 1/2/XL checkpoint: it holds LoRA weights, not a model"
    lines = wrap(message, 40)
    assert lines[0] == "/models/lora/anime_style_v3_final.safetensors"  # the path whole, on its own line
    assert " ".join(lines) == message and all(len(line) <= 40 for line in lines[1:])
    chinese = wrap("底模：模型文件或 diffusers 格式的文件夹。builtin:demo 是内置的微型模型，几秒钟就能试用本工具。", 30)
    from rich.cells import cell_len

    assert all(cell_len(line) <= 30 for line in chinese) and "".join(chinese).replace(" ", "") == "底模：模型文件或diffusers格式的文件夹。builtin:demo是内置的微型模型，几秒钟就能试用本工具。"


def test_prose_is_wrapped_in_a_terminal_and_kept_on_one_line_in_a_log(tmp_path, capsys):
    message = "a sentence long enough to be wrapped at eighty columns, " * 3
    out = io.StringIO()
    Screen(Console(file=out, width=80), load_prompts("en")).say(message)
    assert len(out.getvalue().splitlines()) == 3
    out = io.StringIO()
    Screen(Console(file=out, width=80), load_prompts("en"), wrap_prose=False).say(message)
    assert out.getvalue() == message + "\n"
    # the command line, its output captured (not a terminal): a refusal is one line, path and all
    missing = tmp_path / ("a-folder-name-that-makes-the-path-long-" * 3) / "nothing-here"
    assert main(["dataset", str(missing)]) == Outcome.BAD_INPUT
    assert any(str(missing) in line and "is not a folder" in line for line in capsys.readouterr().out.splitlines())


def test_every_text_the_wizard_loads_is_json_safe(saved, monkeypatch):
    """A draft is JSON: every answer of a full run of the questions writes and reads back."""
    from wizard.drafts import keep_draft, read_draft
    from wizard.questions import Draft, question_list

    draft = Draft(TrainConfig(), question_list(loaded=False))
    draft.answers.update({"dataset.resolution": (768, 512), "optim.optimizer": TrainConfig().optim.optimizer, "ask.samples": False})
    path = keep_draft(draft, saved)
    assert json.loads(path.read_text())["answers"]["dataset.resolution"] == [768, 512]
    assert read_draft(path, saved).draft.answers == draft.answers


def test_at_80_columns_the_review_is_a_list_that_still_shows_the_files_values(saved, monkeypatch, tmp_path):
    from engine.config.io import save_config
    from tests.support.cli import write_dataset

    reg = write_dataset(tmp_path / "reg", folder="1_person")
    path = save_config(TrainConfig.model_validate({"dataset": {"reg_img_folder": str(reg)}}), tmp_path)
    script = Script({"ask.load_json": "y", "ask.load_path": typed(str(path)), "ask.reg_images": "n"})
    run = run_wizard(script, saved, monkeypatch, width=80)

    review = run.output[run.output.rindex("Your training config"):]
    assert "…" not in review and "┃" not in review  # a list, not a squeezed table
    assert all(len(line) <= 80 for line in review.splitlines() if "/" not in line)  # a path may be longer
    assert "reg_img_folder" in review and f"in the file: {reg}" in one_line(review)
    assert "differ from" in one_line(review)

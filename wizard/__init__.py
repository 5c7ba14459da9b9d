"""The terminal UI: questions (questionary), review and progress (rich). The only package that imports
them; the engine never imports the UI.

    app.py          the command line (wizard, demo, replay, queue, dataset; --lang)
    wizard_cmd.py   the wizard as a command: an unfinished queue offered, the questions, the runs
    flow.py         the questions from the first to the review (drafts.py, edit_list.py)
    questions.py    the questions as data (draft.py, predicates.py, lets_questions.py,
                    advanced_questions.py, block_answers.py); ask.py asks one
    runs.py         training: replay/demo, queues and the wizard's runs, Ctrl-C
    run_view.py     plan, each run's progress (progress.py) and the summary
    screen.py       text that fits the terminal; lang.py the language; prompt_kit.py the prompts' keys
    dataset_cmd.py  `dataset ...` (dataset_view.py the view; dataset_step.py the wizard's step)

Every text the UI shows is in prompts/<lang>.toml."""

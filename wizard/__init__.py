"""The terminal UI: questions (questionary), review and progress (rich). The only package that imports
them; the engine never imports the UI. `wizard.flow.run_interactive` is the interactive entry point."""

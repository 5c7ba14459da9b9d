"""Errors a user can act on.

Every error the engine raises for a user's mistake is a `LoraWizardError`: its message names the
file or field, the bad value and what to do. The UI prints the message (never a traceback) and maps
the class to an exit code; anything that is not a `LoraWizardError` is a bug and keeps its traceback.
"""

from __future__ import annotations


class LoraWizardError(Exception):
    """Base class: the message is written for the user."""

    #: exit code the command line uses for this kind of problem
    exit_code = 2


class ConfigError(LoraWizardError):
    """A config file or field is invalid (bad value, unknown key, unsupported combination)."""


class DatasetError(LoraWizardError):
    """The dataset folder is missing, empty or laid out wrongly."""


class ModelError(LoraWizardError):
    """The base model (or VAE, or LoRA to resume from) cannot be read."""


class MissingPackageError(LoraWizardError):
    """An optional package that the chosen option needs is not installed."""


class TrainingError(LoraWizardError):
    """A run failed while training (out of memory, NaN loss, ...): the message says what to change."""

    exit_code = 1


class OutputExistsError(LoraWizardError):
    """Refusing to overwrite a file that already exists."""


def problems_message(title: str, problems: list[str]) -> str:
    """Join several problems into one message, one per line, so a user sees all of them at once."""
    if len(problems) == 1:
        return f"{title}: {problems[0]}"
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"{title} ({len(problems)} problems):\n{lines}"

"""The wizard's wording: one TOML file per language (prompts/<lang>.toml), kept out of the code."""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any


def load_prompts(lang: str = "en") -> dict[str, Any]:
    """The texts of `lang`: [ui], [actions], [review], [errors] and one [questions."<path>"] table per
    question, keyed by the question's path."""
    source = resources.files(__name__).joinpath(f"{lang}.toml")
    return tomllib.loads(source.read_text(encoding="utf-8"))

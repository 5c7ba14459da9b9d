"""Which language the wizard speaks: `--lang`, else the locale, else English.

The locale is read as the C library does: LC_ALL, else LC_MESSAGES, else LANG names it
(`zh_CN.UTF-8`, `ja_JP.UTF-8`); "C" or "POSIX" mean English; GNU's LANGUAGE list (`ja:en`) is
read first where the locale is not C. Any Chinese locale gets simplified Chinese, the only Chinese
written so far. Texts: prompts/<lang>.toml.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: the languages prompts/ holds, English first (the fallback)
LANGUAGES = ("en", "zh", "ja")
FALLBACK = "en"


def language_code(tag: str) -> str | None:
    """"zh_CN.UTF-8" -> "zh", "ja_JP" -> "ja", "de_DE" -> None."""
    code = tag.split(".")[0].split("@")[0].replace("-", "_").split("_")[0].lower()
    return code if code in LANGUAGES else None


def pick_language(option: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The language asked for with --lang, else the locale's, else English."""
    if option:
        return option
    environ = os.environ if environ is None else environ
    locale = next((environ[name] for name in ("LC_ALL", "LC_MESSAGES", "LANG") if environ.get(name)), "")
    if not locale or locale in ("C", "POSIX") or locale.startswith("C."):
        return FALLBACK
    for tag in [*environ.get("LANGUAGE", "").split(":"), locale]:
        code = language_code(tag) if tag else None
        if code:
            return code
    return FALLBACK

"""Every language is complete: the same keys as English, each text with the same {placeholders}, so
a new question or message cannot ship untranslated; and the language is picked by --lang or the
locale."""

from __future__ import annotations

import string
from typing import Any

import pytest

from prompts import load_prompts
from wizard.lang import LANGUAGES, pick_language


def flat(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


ENGLISH = flat(load_prompts("en"))


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_every_language_has_every_text_with_the_same_placeholders(lang):
    texts = flat(load_prompts(lang))
    assert sorted(set(ENGLISH) - set(texts)) == []  # untranslated
    assert sorted(set(texts) - set(ENGLISH)) == []  # left over
    wrong = {key: (placeholders(ENGLISH[key]), placeholders(texts[key])) for key in ENGLISH if placeholders(ENGLISH[key]) != placeholders(texts[key])}
    assert wrong == {}
    empty = [key for key, text in texts.items() if not text.strip() and ENGLISH[key].strip()]
    assert empty == []


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_a_translation_is_a_translation(lang):
    """Messages and help lines are written for the language, not copied from English."""
    texts = flat(load_prompts(lang))
    copied = [key for key in ENGLISH if key.endswith((".message", ".help")) and texts[key] == ENGLISH[key]]
    assert copied == []


@pytest.mark.parametrize(
    ("option", "environ", "expected"),
    [
        ("ja", {"LANG": "zh_CN.UTF-8"}, "ja"),  # --lang wins
        (None, {"LANG": "zh_CN.UTF-8"}, "zh"),
        (None, {"LANG": "ja_JP.UTF-8"}, "ja"),
        (None, {"LANG": "zh_TW.UTF-8"}, "zh"),
        (None, {"LANG": "de_DE.UTF-8"}, "en"),
        (None, {}, "en"),
        (None, {"LC_ALL": "C", "LANG": "ja_JP.UTF-8"}, "en"),  # LC_ALL comes first
        (None, {"LC_MESSAGES": "ja_JP.UTF-8", "LANG": "en_US.UTF-8"}, "ja"),
        (None, {"LANGUAGE": "zh_CN:en", "LANG": "en_US.UTF-8"}, "zh"),
        (None, {"LANGUAGE": "ja", "LANG": "C.UTF-8"}, "en"),  # the C locale: LANGUAGE is ignored
    ],
)
def test_the_language_comes_from_the_option_or_the_locale(option, environ, expected):
    assert pick_language(option, environ) == expected

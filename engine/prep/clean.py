"""The clean-up rules of kohya-ss/sd-scripts finetune/clean_captions_and_tags.py, on one caption.

sd-scripts cleans the `tags` (from a tagger) and the `caption` (from BLIP) of its metadata file
with two different rule sets; a caption file here holds one of them, so `clean_text` picks the set:
a line with a comma is a tag list, a line without one is a sentence (`CleanAs` overrides that).

Tag rules, in sd-scripts' order (results are checked against sd-scripts' own function in
tests/test_prep_clean.py):

1. underscores become spaces, except in `^_^`;
2. a DeepDanbooru rating (a tag starting with "rating" after the first) ends the list;
3. when several people are pictured (a tag containing "girls" or "boys"), attributes that cannot
   be told apart any more are dropped: every hair length, hair cut, eye colour, sleeve and
   hairstyle tag of a kind that occurs more than once, and every "<colour> hair" tag when there
   are several (a single hair length is kept);
4. a one-word tag that ends a longer tag is dropped ("shirt" next to "white shirt").

Around them we add what sd-scripts gets from its metadata step: tags are split on commas and
stripped, empty tags and exact duplicates are dropped, and the result is joined with ", ".

Caption rules: sd-scripts' list of replacements (anime/cartoon wording, "woman" -> "girl", ...),
each applied until it no longer occurs. They were written for anime datasets; `--dry-run` shows
what they would change.
"""

from __future__ import annotations

import re
from enum import StrEnum

from engine.prep.tags import join_tags, split_tags, unique


class CleanAs(StrEnum):
    AUTO = "auto"  # a comma in the line: tags; none: a caption
    TAGS = "tags"
    CAPTION = "caption"


# ---- tags ------------------------------------------------------------------------------------

_WORD = r"[\w\-]+"
#: hair lengths are the exception of the hair-colour rule: one of them survives it
_HAIR_LENGTH = re.compile(r"(?:long|short|medium) hair")
#: attribute kinds dropped entirely when more than one tag of the kind is present
_PER_PERSON_KINDS = (
    _HAIR_LENGTH,
    re.compile(r"(?:bob|hime) cut"),
    re.compile(rf"{_WORD} eyes"),
    re.compile(rf"{_WORD} sleeves|sleeveless"),
    re.compile(
        rf"ponytail|braid|ahoge|twintails|{_WORD} bun|single hair bun|single side bun|two side up"
        rf"|two tails|{_WORD} braid|sidelocks"
    ),
)
_HAIR = re.compile(rf"{_WORD} hair")
#: tags that are dropped when a longer tag ends with them
_SHORT_TAG = re.compile(rf"{_WORD}|hair ornament")
_LEADING_WORDS = re.compile(r"(?:\w+ )+")


def _underscores_to_spaces(text: str) -> str:
    return re.sub(r"\^_\^|_", lambda m: m.group() if m.group() == "^_^" else " ", text)


def _before_rating(tags: list[str]) -> list[str]:
    for index, tag in enumerate(tags):
        if index > 0 and tag.startswith("rating"):
            return tags[:index]
    return tags


def _several_people(tags: list[str]) -> bool:
    return any("girls" in tag or "boys" in tag for tag in tags)


def _drop_ambiguous_attributes(tags: list[str]) -> list[str]:
    for kind in _PER_PERSON_KINDS:
        if sum(1 for tag in tags if kind.fullmatch(tag)) > 1:
            tags = [tag for tag in tags if not kind.fullmatch(tag)]
    colours = [tag for tag in tags if _HAIR.fullmatch(tag) and not _HAIR_LENGTH.fullmatch(tag)]
    if len(colours) > 1:
        tags = [tag for tag in tags if tag not in colours]
    return tags


def _ends_a_longer_tag(short: str, tags: list[str]) -> bool:
    suffix = " " + short
    return any(
        tag.endswith(suffix) and _LEADING_WORDS.fullmatch(tag[: len(tag) - len(short)]) for tag in tags
    )


def clean_tags(text: str) -> str:
    """One tag line cleaned by the rules above."""
    tags = unique(split_tags(_underscores_to_spaces(text)))
    tags = _before_rating(tags)
    if _several_people(tags):
        tags = _drop_ambiguous_attributes(tags)
    tags = [tag for tag in tags if not (_SHORT_TAG.fullmatch(tag) and _ends_a_longer_tag(tag, tags))]
    return join_tags(tags)


# ---- captions --------------------------------------------------------------------------------

#: (text, replacement), applied in this order, each until the text no longer holds it
CAPTION_FIXES: tuple[tuple[str, str], ...] = (
    ("anime anime", "anime"),
    ("young ", ""),
    ("anime girl", "girl"),
    ("cartoon female", "girl"),
    ("cartoon lady", "girl"),
    ("cartoon character", "girl"),
    ("cartoon woman", "girl"),
    ("cartoon women", "girls"),
    ("cartoon girl", "girl"),
    ("anime female", "girl"),
    ("anime lady", "girl"),
    ("anime character", "girl"),
    ("anime woman", "girl"),
    ("anime women", "girls"),
    ("lady", "girl"),
    ("female", "girl"),
    ("woman", "girl"),
    ("women", "girls"),
    ("people", "girls"),
    ("person", "girl"),
    ("a cartoon figure", "a figure"),
    ("a cartoon image", "an image"),
    ("a cartoon picture", "a picture"),
    ("an anime cartoon image", "an image"),
    ("a cartoon anime drawing", "a drawing"),
    ("a cartoon drawing", "a drawing"),
    ("girl girl", "girl"),
)


def clean_caption(text: str) -> str:
    for old, new in CAPTION_FIXES:
        while old in text:
            text = text.replace(old, new)
    return text


def clean_text(text: str, kind: CleanAs = CleanAs.AUTO) -> str:
    """A caption line cleaned with the tag rules or the caption rules."""
    if kind is CleanAs.TAGS or (kind is CleanAs.AUTO and "," in text):
        return clean_tags(text)
    return clean_caption(text).strip()

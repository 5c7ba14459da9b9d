"""Caption clean-up and tag text rules (engine/prep/clean.py, engine/prep/tags.py).

Expected values of SD_SCRIPTS_TAGS and SD_SCRIPTS_CAPTIONS were produced once by running
sd-scripts' own `clean_tags` and `clean_caption` (kohya-ss/sd-scripts
finetune/clean_captions_and_tags.py, 2026 snapshot) on these inputs and hard-coded here. A one-off
script also compared 200,000 random tag lists (from a vocabulary of hair, eye, sleeve, hairstyle,
rating, kaomoji and nested tags) and 100,000 random captions: all identical.
"""

import pytest

from engine.errors import ConfigError
from engine.prep.clean import CleanAs, clean_caption, clean_tags, clean_text
from engine.prep.tags import (
    move_first,
    parse_replacements,
    replace_tags,
    split_tags,
    wd14_underscores,
    with_trigger,
)

SD_SCRIPTS_TAGS = [
    ("1girl, solo, long_hair, blonde_hair, blue_eyes, white_shirt, shirt, smile",
     "1girl, solo, long hair, blonde hair, blue eyes, white shirt, smile"),
    ("2girls, long hair, blonde hair, red hair, blue eyes, green eyes, ponytail, twintails, smile",
     "2girls, long hair, smile"),
    ("multiple girls, long hair, short hair, black hair, brown hair, long sleeves, sleeveless, hime cut",
     "multiple girls, hime cut"),
    ("2girls, medium hair, red hair, blonde hair, hair ornament, red hair ornament, skirt, pleated skirt",
     "2girls, medium hair, red hair ornament, pleated skirt"),
    ("1boy, ^_^, hair_between_eyes, closed_eyes, open mouth, mouth",
     "1boy, ^_^, hair between eyes, closed eyes, open mouth"),
    ("1girl, smile, rating:safe, rating:questionable", "1girl, smile"),
    ("2boys, short hair, black hair, red eyes, single hair bun, french braid, x-ray, big x-ray",
     "2boys, short hair, black hair, red eyes, big x-ray"),
    ("cowboys, blue eyes, red eyes, t-shirt, shirt, black dress, dress",
     "cowboys, t-shirt, shirt, black dress"),
]

SD_SCRIPTS_CAPTIONS = [
    ("a young anime girl with long hair", "a girl with long hair"),
    ("a cartoon drawing of a woman and a person", "a drawing of a girl and a girl"),
    ("an anime cartoon image of anime anime people", "an image of anime girls"),
    ("a lady in a red dress next to a female character", "a girl in a red dress next to a girl character"),
]


@pytest.mark.parametrize("line,expected", SD_SCRIPTS_TAGS)
def test_tag_rules_match_sd_scripts(line, expected):
    assert clean_tags(line) == expected


@pytest.mark.parametrize("line,expected", SD_SCRIPTS_CAPTIONS)
def test_caption_rules_match_sd_scripts(line, expected):
    assert clean_caption(line) == expected


def test_separators_empty_tags_and_duplicates_are_cleaned_too():
    # what sd-scripts' metadata step does before its clean-up: split on commas, strip, drop empties
    assert clean_tags("1girl,solo ,, long_hair,1girl,  smile ,") == "1girl, solo, long hair, smile"


def test_auto_picks_the_rules_by_comma():
    assert clean_text("a woman, long_hair") == "a woman, long hair"  # a tag list: no word fixes
    assert clean_text("a young woman on a bench") == "a girl on a bench"  # a sentence
    assert clean_text("a young woman, long_hair", CleanAs.CAPTION) == "a girl, long_hair"
    assert clean_text("long_hair", CleanAs.TAGS) == "long hair"


def test_clean_rules_are_idempotent():
    for line, _ in SD_SCRIPTS_TAGS:
        once = clean_tags(line)
        assert clean_tags(once) == once


def test_wd14_underscores_keep_short_kaomoji():
    assert [wd14_underscores(t) for t in ("long_hair", "^_^", "o_o", ">_<", "hatsune_miku")] == [
        "long hair", "^_^", "o_o", ">_<", "hatsune miku",
    ]


def test_replacements_syntax_with_escapes():
    assert parse_replacements(r"long hair,very long hair;a\,b,c\;d") == {"long hair": "very long hair", "a,b": "c;d"}
    assert parse_replacements("") == {}
    with pytest.raises(ConfigError, match="source,target"):
        parse_replacements("just-one-tag")
    with pytest.raises(ConfigError, match="source,target"):
        parse_replacements("a,b,c")


def test_replace_tags_merges_duplicates_and_drops_empty_targets():
    assert replace_tags(["a", "b", "c"], {"a": "c", "b": ""}) == ["c"]


def test_trigger_is_added_or_moved_first():
    assert with_trigger(["1girl", "solo"], "mychar") == ["mychar", "1girl", "solo"]
    assert with_trigger(["1girl", "mychar", "solo"], "mychar") == ["mychar", "1girl", "solo"]
    assert with_trigger(["1girl"], "  ") == ["1girl"]


def test_always_first_keeps_the_order_given():
    assert move_first(["a", "b", "c", "d"], ["d", "x", "b"]) == ["d", "b", "a", "c"]


def test_split_tags():
    assert split_tags(" a, b ,,c,") == ["a", "b", "c"]

"""Pure text rules for comma-separated tag lists: split, join, underscores, replacements, order.

A caption file holds one line; tags are separated by commas (sd-scripts splits on "," and strips
each tag, library/train_util.py) and written back separated by ", " (the taggers' default
`--caption_separator`). None of these functions touch files.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.errors import ConfigError

SEPARATOR = ", "


def split_tags(text: str) -> list[str]:
    """The non-empty, stripped tags of one caption line."""
    return [tag.strip() for tag in text.split(",") if tag.strip()]


def join_tags(tags: Iterable[str]) -> str:
    return SEPARATOR.join(tags)


def unique(tags: Iterable[str]) -> list[str]:
    """Tags in order, each kept at its first position only."""
    seen: set[str] = set()
    kept = []
    for tag in tags:
        if tag not in seen:
            seen.add(tag)
            kept.append(tag)
    return kept


def parse_tag_option(text: str | None) -> list[str]:
    """A command-line list like "1girl, solo,red hair" -> ["1girl", "solo", "red hair"]."""
    return split_tags(text or "")


def wd14_underscores(tag: str) -> str:
    """Underscores to spaces in a tagger label, except in labels of at most three characters.

    Short labels are the kaomoji (`^_^`, `o_o`, `>_<`) whose underscore is part of the face; the
    rule is the one of kohya-ss/sd-scripts finetune/tag_images_by_wd14_tagger.py (--remove_underscore).
    """
    return tag if len(tag) <= 3 else tag.replace("_", " ")


def parse_replacements(text: str | None) -> dict[str, str]:
    """`source,target;source2,target2` -> {source: target}. `\\,` and `\\;` stand for a literal comma
    and semicolon (tagger labels may hold both), the syntax of sd-scripts' --tag_replacement."""
    if not text:
        return {}
    comma, semicolon = "\0c", "\0s"
    escaped = text.replace("\\,", comma).replace("\\;", semicolon)
    pairs: dict[str, str] = {}
    for item in escaped.split(";"):
        if not item.strip():
            continue
        parts = item.split(",")
        if len(parts) != 2 or not parts[0].strip():
            shown = item.replace(comma, "\\,").replace(semicolon, "\\;")
            raise ConfigError(
                f"tag replacement {shown!r}: write it as source,target (pairs separated by ';', "
                "a comma inside a tag as \\,)"
            )
        source, target = (p.strip().replace(comma, ",").replace(semicolon, ";") for p in parts)
        pairs[source] = target
    return pairs


def replace_tags(tags: Iterable[str], replacements: dict[str, str]) -> list[str]:
    """Each tag named in `replacements` becomes its target (an empty target removes it); a tag that
    is then present twice keeps its first position."""
    return unique(t for t in (replacements.get(tag, tag) for tag in tags) if t)


def remove_tags(tags: Iterable[str], unwanted: Iterable[str]) -> list[str]:
    drop = set(unwanted)
    return [tag for tag in tags if tag not in drop]


def move_first(tags: list[str], first: Iterable[str]) -> list[str]:
    """The tags of `first` that are present move to the front, in the order `first` gives them.

    (sd-scripts' --always_first_tags moves them one after the other to position 0, which reverses
    their order; we keep the order the user wrote.)"""
    wanted = [tag for tag in unique(first) if tag in tags]
    return wanted + [tag for tag in tags if tag not in wanted]


def with_trigger(tags: list[str], trigger: str | None) -> list[str]:
    """The trigger word as the first tag: added when missing, moved when elsewhere."""
    if not trigger or not trigger.strip():
        return list(tags)
    trigger = trigger.strip()
    return [trigger] + [tag for tag in tags if tag != trigger]

"""Caption rules against values produced by kohya-ss/sd-scripts.

Expected strings were produced once by running sd-scripts' own `BaseDataset.process_caption`
(with `random.seed(seed)`), `parse_prompt_attention` and `TokenizeStrategy._get_input_ids`
(kohya-ss/sd-scripts, 2026 snapshot) and hard-coded here. A one-off script
also compared 16,128 process_caption settings, 20,000 random bracket strings and 900 tokenizations
(both pad styles, 75/150/225): all identical.
"""

import random

import pytest
import torch

from engine.data.captions import (
    CaptionRules,
    apply_rules,
    chunk_token_ids,
    count_tags,
    merge_chunk_states,
    parse_weighted_caption,
    process_caption,
    read_caption,
)
from engine.errors import DatasetError

CAPTION = "1girl, solo, red hair, smile, looking at viewer, outdoors"


def run(caption=CAPTION, *, seed=0, epoch=1, **kw):
    return process_caption(caption, epoch=epoch, rng=random.Random(seed), **kw)


# (seed, settings) -> sd-scripts' output with random.seed(seed)
SD_SCRIPTS_CASES = [
    (0, dict(shuffle=True, keep_tokens=1), "1girl, smile, red hair, solo, outdoors, looking at viewer"),
    (1, dict(shuffle=True, keep_tokens=1), "1girl, smile, looking at viewer, outdoors, solo, red hair"),
    (0, dict(shuffle=True, keep_tokens=1, tag_dropout_rate=0.3), "1girl, smile, red hair, solo, outdoors, looking at viewer"),
    (1, dict(shuffle=True, keep_tokens=1, tag_dropout_rate=0.3), "1girl, smile, looking at viewer, outdoors, solo"),
    (0, dict(keep_tokens=2, tag_dropout_rate=0.5), "1girl, solo, red hair, smile"),
    (1, dict(keep_tokens=2, tag_dropout_rate=0.5), "1girl, solo, smile, looking at viewer"),
]


@pytest.mark.parametrize("seed,settings,expected", SD_SCRIPTS_CASES)
def test_matches_sd_scripts(seed, settings, expected):
    assert run(seed=seed, **settings) == expected


def test_keep_tokens_separator_fixes_head_and_tail():
    caption = "sks ||| a, b, c, d ||| tail"
    assert run(caption, seed=0, shuffle=True, keep_tokens_separator="|||") == "sks, c, a, b, d, tail"
    assert run(caption, seed=1, shuffle=True, keep_tokens_separator="|||") == "sks, d, a, c, b, tail"


def test_kept_tokens_never_move():
    for seed in range(30):
        tags = run(seed=seed, shuffle=True, keep_tokens=2).split(", ")
        assert tags[:2] == ["1girl", "solo"]
        assert sorted(tags) == sorted(CAPTION.split(", "))


def test_caption_dropout_by_rate_uses_one_draw():
    # random.Random(1).random() = 0.134 < 0.25: dropped; Random(0) gives 0.844: kept
    assert run(seed=1, dropout_rate=0.25) == ""
    assert run(seed=0, dropout_rate=0.25) == CAPTION
    kept = sum(run(seed=s, dropout_rate=0.25) != "" for s in range(2000))
    assert 1400 < kept < 1600


def test_caption_dropout_every_n_epochs_counts_from_one():
    assert run(epoch=1, dropout_every_n_epochs=2) == CAPTION
    assert run(epoch=2, dropout_every_n_epochs=2) == ""
    assert run(epoch=3, dropout_every_n_epochs=2) == CAPTION
    assert run(epoch=3, dropout_every_n_epochs=3) == ""


def test_untouched_without_shuffle_or_tag_dropout_except_first_line():
    assert run("  a,b ,c  ") == "  a,b ,c  "
    assert run("first line, x\nsecond line") == "first line, x"
    assert run("a,,b", shuffle=True, seed=3).count(",") == 2  # the empty tag stays, like sd-scripts


def test_same_rng_state_same_caption():
    a = run(seed=42, shuffle=True, tag_dropout_rate=0.2)
    b = run(seed=42, shuffle=True, tag_dropout_rate=0.2)
    assert a == b


def test_count_tags_lowercases_and_skips_empty():
    assert count_tags(["Cat, dog", "cat,, DOG , bird", ""]) == {"cat": 2, "dog": 2, "bird": 1}


def test_read_caption_first_line_and_bom(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeff  cat, dog \nignored\n".encode("utf-8"))
    assert read_caption(path) == "cat, dog"


def test_read_caption_names_a_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9, smile".encode("latin-1"))
    with pytest.raises(DatasetError, match="latin1.txt.*not UTF-8"):
        read_caption(path)


def test_read_caption_refuses_an_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(DatasetError, match="empty.txt.*empty"):
        read_caption(path)


# sd-scripts' parse_prompt_attention outputs, including its own docstring examples
WEIGHTED_CASES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1),
         ("hill", 0.55), (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)],
    ),
    ("", [("", 1.0)]),
    (":1.2)", [(":1.2)", 1.0)]),
    ("a\\", [("a", 1.0)]),
    ("x:y", [("x:y", 1.0)]),
    ("(a:\uff11.5)", [("a", 1.5)]),  # a full-width digit counts, as in the regex's \d
    ("[[a]] (b:+1.2) c:-3)", [("a", 0.8264462809917354), (" ", 1.0), ("b", 1.2), (" c:-3)", 1.0)]),
]


@pytest.mark.parametrize("text,expected", WEIGHTED_CASES)
def test_parse_weighted_caption_matches_sd_scripts(text, expected):
    assert parse_weighted_caption(text) == expected


def test_parse_weighted_caption_rejects_a_bad_number():
    with pytest.raises(ValueError, match="'1.2.3'"):
        parse_weighted_caption("(a:1.2.3)")


BOS, EOS, PAD0 = 49406, 49407, 0


def test_chunks_for_eos_padding_sd1():
    content = list(range(100, 180))  # 80 tokens: window 2 holds 5 of them
    ids = [BOS, *content, EOS]
    windows = chunk_token_ids(ids, 150, bos=BOS, eos=EOS, pad=EOS)
    assert len(windows) == 2 and all(len(w) == 77 for w in windows)
    assert windows[0] == [BOS, *content[:75], EOS]
    assert windows[1] == [BOS, *content[75:], EOS, *[EOS] * 69, EOS]


def test_chunks_for_openclip_padding_fix_ups():
    # sd-scripts' _get_input_ids with the "!"-padded tokenizer: a full first window gets eos last,
    # an empty second window gets <bos> <eos> <pad>...
    ids = [BOS, *[2368] * 75, EOS]
    windows = chunk_token_ids(ids, 150, bos=BOS, eos=EOS, pad=PAD0)
    assert windows[0][:3] == [BOS, 2368, 2368] and windows[0][-3:] == [2368, 2368, EOS]
    assert windows[1][:3] == [BOS, EOS, PAD0] and windows[1][-3:] == [PAD0, PAD0, PAD0]
    short = chunk_token_ids([BOS, 320, 2368, EOS], 150, bos=BOS, eos=EOS, pad=PAD0)
    assert short[0][:4] == [BOS, 320, 2368, EOS] and short[0][-1] == PAD0
    assert short[1][:3] == [BOS, EOS, PAD0]


def test_chunks_truncate_keeping_the_end_token_and_accept_padded_rows():
    long_ids = [BOS, *range(1000, 1300), EOS]
    windows = chunk_token_ids(long_ids, 225, bos=BOS, eos=EOS, pad=EOS)
    assert len(windows) == 3
    assert windows[2] == [BOS, *range(1150, 1225), EOS]
    padded = [BOS, 5, 6, EOS] + [EOS] * 73
    assert chunk_token_ids(padded, 75, bos=BOS, eos=EOS, pad=EOS) == [padded]
    assert chunk_token_ids([BOS, 5, 6, EOS], 75, bos=BOS, eos=EOS, pad=EOS) == [padded]
    with pytest.raises(ValueError, match="75, 150 or 225"):
        chunk_token_ids(padded, 100, bos=BOS, eos=EOS, pad=EOS)


def test_chunks_with_the_shipped_tokenizer_match_padded_tokenization():
    from engine.models.tokenizer import OPENCLIP_PAD, load_clip_tokenizer

    for tok in (load_clip_tokenizer(), load_clip_tokenizer(OPENCLIP_PAD)):
        caption = ", ".join(["red hair"] * 40)
        padded = tok(caption, padding="max_length", truncation=True, max_length=152).input_ids
        raw = tok(caption).input_ids
        ids = dict(bos=tok.bos_token_id, eos=tok.eos_token_id, pad=tok.pad_token_id)
        assert chunk_token_ids(padded, 150, **ids) == chunk_token_ids(raw, 150, **ids)
        assert chunk_token_ids(padded, 150, **ids)[0][1:76] == padded[1:76]


def test_merge_chunk_states_keeps_bos_contents_and_last():
    b, n, d = 2, 3, 4
    # state value = caption * 1000 + window * 100 + position, so every kept row is identifiable
    pos = torch.arange(77).view(1, 1, 77, 1)
    win = torch.arange(n).view(1, n, 1, 1) * 100
    cap = torch.arange(b).view(b, 1, 1, 1) * 1000
    hidden = (cap + win + pos).expand(b, n, 77, d).reshape(b * n, 77, d).float()
    merged = merge_chunk_states(hidden, n)
    assert merged.shape == (b, 75 * n + 2, d)
    rows = merged[1, :, 0].long().tolist()
    assert rows[0] == 1000  # first window's bos
    assert rows[1:76] == [1000 + p for p in range(1, 76)]
    assert rows[76:151] == [1100 + p for p in range(1, 76)]
    assert rows[151:226] == [1200 + p for p in range(1, 76)]
    assert rows[226] == 1276  # last window's final state
    assert torch.equal(merge_chunk_states(hidden[:2], 1), hidden[:2])


# ---- caption options of sd-scripts' subsets: prefix/suffix, wildcards, separators, token warm-up -
#
# (caption, seed, steps done, total steps, options) -> sd-scripts' output. Produced once by running
# kohya-ss/sd-scripts' `BaseDataset.process_caption` (library/train_util.py, 2026 snapshot) on a
# subset with these options, `current_step` = steps done, `max_train_steps` = total and
# `random.seed(seed)`; a one-off script compared 172,032 combinations of these options (7
# captions, 2 seeds, 2 steps): all identical.
SUBSET_OPTION_CASES = [
    ("sks ||| a, b, c, d ||| tail", 3, 0, 10, dict(shuffle=True, keep_tokens_separator="|||", prefix="photo of"),
     "photo of sks, d, a, c, b, tail"),
    ("a {red|blue|green} car, {big|small} wheels, {{literal}}", 0, 0, 10, dict(wildcard=True), "a blue car, small wheels, {literal}"),
    ("a {red|blue|green} car, {big|small} wheels, {{literal}}", 1, 0, 10, dict(wildcard=True), "a red car, big wheels, {literal}"),
    ("line one, x\nline {two|2}, y\nthird, z", 5, 0, 10, dict(wildcard=True, suffix="end"), "third, z end"),
    ("tag_a; tag_b; tag_c; tag_d", 2, 0, 10, dict(shuffle=True, separator=";"), "tag_b, tag_c, tag_d, tag_a"),
    ("a, b::c, d::e, f", 4, 0, 10, dict(shuffle=True, secondary_separator="::"), "d,e, a, f, b,c"),
    (CAPTION, 0, 0, 10, dict(token_warmup_min=2, token_warmup_step=4), "1girl, solo"),
    (CAPTION, 0, 2, 10, dict(token_warmup_min=2, token_warmup_step=4), "1girl, solo, red hair, smile"),
    (CAPTION, 0, 3, 10, dict(token_warmup_min=1, token_warmup_step=0.5, keep_tokens=1), "1girl, solo, red hair, smile"),
    (CAPTION, 7, 1, 10, dict(shuffle=True, token_warmup_min=1, token_warmup_step=4, keep_tokens=1), "1girl, solo, red hair"),
    ("1girl, solo, red hair, smile", 0, 0, 10, dict(prefix="masterpiece,", suffix=", sharp"),
     "masterpiece, 1girl, solo, red hair, smile , sharp"),
]


@pytest.mark.parametrize("caption,seed,step,total,options,expected", SUBSET_OPTION_CASES)
def test_subset_caption_options_match_sd_scripts(caption, seed, step, total, options, expected):
    assert process_caption(caption, epoch=1, rng=random.Random(seed), step=step, total_steps=total, **options) == expected


def test_token_warm_up_ends_at_its_step():
    full = process_caption(CAPTION, epoch=1, rng=random.Random(0), token_warmup_step=4, step=4, total_steps=10)
    assert full == CAPTION  # from step 4 on every tag is used
    # a share below 1 counts from the run's steps: 0.5 of 10 steps ends at step 5
    assert process_caption(CAPTION, epoch=1, rng=random.Random(0), token_warmup_step=0.5, step=4, total_steps=10) != CAPTION
    assert process_caption(CAPTION, epoch=1, rng=random.Random(0), token_warmup_step=0.5, step=5, total_steps=10) == CAPTION


def test_apply_rules_is_process_caption_with_a_folders_options():
    rules = CaptionRules(shuffle=True, keep_tokens=1, prefix="photo of")
    assert apply_rules(CAPTION, rules, epoch=1, rng=random.Random(3)) == process_caption(
        CAPTION, epoch=1, rng=random.Random(3), shuffle=True, keep_tokens=1, prefix="photo of"
    )
    assert rules.changes_per_use and not CaptionRules(prefix="x", secondary_separator="::").changes_per_use


def test_read_caption_all_lines_for_wildcards(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(" first, a \n\n second {x|y} \n", encoding="utf-8")
    assert read_caption(path) == "first, a"
    assert read_caption(path, all_lines=True) == "first, a\nsecond {x|y}"

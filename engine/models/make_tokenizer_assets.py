"""Regenerate the shipped CLIP tokenizer files from the CLIP BPE merge list.

The product ships `engine/assets/clip_tokenizer/{vocab.json,merges.txt}` so that no tokenizer is
ever fetched from a hub. They are derived from OpenAI CLIP's `bpe_simple_vocab_16e6.txt.gz` (MIT
licence), which travels inside the open_clip_torch wheel:

    pip download --no-deps open_clip_torch -d /tmp/w
    unzip -j /tmp/w/open_clip_torch-*.whl open_clip/bpe_simple_vocab_16e6.txt.gz -d /tmp/w
    python -m engine.models.make_tokenizer_assets /tmp/w/bpe_simple_vocab_16e6.txt.gz

The vocabulary order is CLIP's: the 256 byte symbols, the same with the end-of-word mark `</w>`, one
entry per merge, then the two special tokens (49408 entries in all).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "clip_tokenizer"
MERGE_COUNT = 49152 - 256 - 2  # CLIP keeps this many merges of the full list


def byte_symbols() -> list[str]:
    """CLIP's reversible byte -> printable unicode table (GPT-2 scheme), in CLIP's vocabulary order.

    Printable bytes map to themselves and come first; the other bytes map to code points from 256
    up and follow, in byte order. This order (not byte order) is what gives "!" id 0.
    """
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def build_vocab_and_merges(bpe_lines: list[str]) -> tuple[dict[str, int], list[str]]:
    merges = bpe_lines[1 : MERGE_COUNT + 1]  # line 0 is the version header
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def write_assets(bpe_gz: Path, out_dir: Path = ASSET_DIR) -> None:
    lines = gzip.decompress(bpe_gz.read_bytes()).decode("utf-8").split("\n")
    vocab, merges = build_vocab_and_merges(lines)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_assets(Path(sys.argv[1]))

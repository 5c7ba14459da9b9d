"""The CLIP tokenizer, from the files shipped in engine/assets (never from a hub)."""

from __future__ import annotations

from pathlib import Path

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "clip_tokenizer"

#: SD1 (and SDXL's first encoder) pad with the end token; OpenCLIP encoders (SD2, SDXL's second)
#: pad with "!" (id 0), which matters for where the end token lands in each 77-token chunk.
EOS_PAD = "<|endoftext|>"
OPENCLIP_PAD = "!"


def load_clip_tokenizer(pad_token: str = EOS_PAD):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(ASSET_DIR), local_files_only=True)
    tok.model_max_length = 77
    if pad_token != tok.pad_token:
        tok.pad_token = pad_token
    return tok

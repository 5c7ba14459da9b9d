"""Tiny models and datasets for the dataset-preparation tests, built on the spot (no download).

The tagger is a real ONNX graph in the SmilingWolf layout (NHWC float32 input, one sigmoid score
per row of selected_tags.csv) whose scores are fixed numbers or depend on the image's mean colour,
so which tags pass a threshold is known in advance:

    input [N, S, S, 3] BGR 0-255 -> ReduceMean over H, W -> [N, 3] -> MatMul W/255 + b -> Sigmoid

The BLIP captioner is a randomly initialised BlipForConditionalGeneration from a small BlipConfig
with a BERT tokenizer on a 20-word vocabulary, saved with save_pretrained like a real download.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

TAGGER_SIZE = 16


def logit(p: float) -> float:
    return math.log(p / (1 - p))


#: (name, category, bias, weights on the mean B, G, R in 0-1); category 9 rating, 0 general, 4 character
TAGGER_LABELS = [
    ("general", 9, logit(0.6), (0, 0, 0)),
    ("sensitive", 9, logit(0.2), (0, 0, 0)),
    ("questionable", 9, logit(0.1), (0, 0, 0)),
    ("explicit", 9, logit(0.05), (0, 0, 0)),
    ("1girl", 0, logit(0.9), (0, 0, 0)),
    ("long_hair", 0, logit(0.8), (0, 0, 0)),
    ("red_background", 0, -4.0, (0, 0, 8.0)),  # red image: 0.98; no red: 0.018
    ("blue_background", 0, -4.0, (8.0, 0, 0)),  # blue: 0.98; half white: 0.5; red: 0.018
    ("^_^", 0, logit(0.7), (0, 0, 0)),
    ("simple_background", 0, logit(0.34), (0, 0, 0)),  # just below the 0.35 default
    ("watermark", 0, logit(0.95), (0, 0, 0)),
    ("hatsune_miku", 4, logit(0.5), (0, 0, 0)),  # a character tag
]


def write_tagger(folder: Path, labels=TAGGER_LABELS, size: int = TAGGER_SIZE, batch: int | str = "N") -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    weights = np.array([w for *_, w in labels], dtype=np.float32).T / 255.0  # (3, T), BGR rows
    bias = np.array([b for _, _, b, _ in labels], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input_1:0"], ["mean"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["mean", "W"], ["scores"]),
            helper.make_node("Add", ["scores", "b"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
        ],
        "tiny_wd14",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, [batch, size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [batch, len(labels)])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    with open(folder / "selected_tags.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category, *_) in enumerate(labels):
            writer.writerow([1000 + i, name, category, 100 - i])
    return folder


BLIP_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "picture", "of", "cat", "dog", "on", "the",
              "red", "blue", "sofa", "grass", "sitting", "small", "big", "room"]


def write_blip(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(BLIP_WORDS) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab))
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    config = BlipConfig(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        text_config=dict(vocab_size=len(BLIP_WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=96, encoder_hidden_size=16,
                         bos_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_images(folder: Path, specs: dict[str, tuple[tuple[int, int], tuple[int, int, int]]], captions: dict[str, str] | None = None) -> Path:
    """`specs`: file name -> ((width, height), RGB colour); `captions`: file name -> .txt content."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name, (size, colour) in specs.items():
        Image.new("RGB", size, colour).save(folder / name)
    for name, text in (captions or {}).items():
        (folder / name).with_suffix(".txt").write_text(text, encoding="utf-8")
    return folder

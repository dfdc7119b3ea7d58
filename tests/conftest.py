"""Shared fixtures: tiny learnable data sets built here (seeded), and the same data as files for the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from safetransfer.data import ClassificationData
from safetransfer.data.base import train_val_test_from_pool

# The models here are tiny: one thread is as fast and does not fight other processes for cores.
# (The long runs of test_acceptance_slow.py take every core back.)
torch.set_num_threads(1)

# --------------------------------------------------------------------------- builders

IMAGE_CLASSES = ["top-left", "centre", "bottom-right"]
# Top-left corner (row, col) of each class's bright 3x3 patch in an 8x8 image.
PATCH_AT = [(0, 0), (2, 3), (5, 5)]

POSITIVE_WORDS = ["good", "great", "fine"]
NEGATIVE_WORDS = ["bad", "awful", "poor"]
FILLER_WORDS = [
    "the", "movie", "was", "really", "and", "plot", "acting", "very", "quite", "film", "story", "it",
    "this", "a", "food", "service", "overall", "place",
]


def make_image_arrays(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` grey 8x8 images in [0, 1] (float32 ``[n, 1, 8, 8]``) and labels 0..2.

    Each image is dim noise plus a bright 3x3 patch whose position gives the class.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(PATCH_AT)
    rng.shuffle(y)
    x = rng.uniform(0.0, 0.35, size=(n, 1, 8, 8))
    for i, label in enumerate(y):
        r, c = PATCH_AT[label]
        x[i, 0, r : r + 3, c : c + 3] = rng.uniform(0.75, 1.0, size=(3, 3))
    return x.astype(np.float32), y.astype(np.int64)


def make_texts(n: int = 240, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``n`` short sentences, label 1 when a positive word is in them, 0 when a negative one is."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    rng.shuffle(y)
    texts = []
    for label in y:
        words = list(rng.choice(FILLER_WORDS, size=int(rng.integers(3, 7))))
        cue = POSITIVE_WORDS if label == 1 else NEGATIVE_WORDS
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(cue)))
        texts.append(" ".join(words))
    return texts, y.astype(np.int64)


def image_dataset(n: int = 300, seed: int = 0) -> ClassificationData:
    x, y = make_image_arrays(n, seed)
    train, val, test = train_val_test_from_pool(torch.from_numpy(x), torch.from_numpy(y), 0.1, 0.2, seed)
    return ClassificationData("tiny-images", "image", list(IMAGE_CLASSES), train, val, test, source="tests").validate()


def text_dataset(n: int = 240, seed: int = 0) -> ClassificationData:
    texts, y = make_texts(n, seed)
    train, val, test = train_val_test_from_pool(texts, torch.from_numpy(y), 0.1, 0.2, seed)
    return ClassificationData("tiny-texts", "text", ["negative", "positive"], train, val, test, source="tests").validate()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tiny_images() -> ClassificationData:
    """3 classes of 1x8x8 images (300 samples: 210 train / 30 val / 60 test), learnable."""
    return image_dataset()


@pytest.fixture(scope="session")
def tiny_texts() -> ClassificationData:
    """2 classes of short sentences (240 samples: 168 train / 24 val / 48 test), learnable."""
    return text_dataset()


@dataclass(frozen=True)
class DataFiles:
    images_npz: Path  # keys x [N, 1, 8, 8] float32 in [0, 1], y int64
    texts_csv: Path  # columns text, label (0/1)


@pytest.fixture(scope="session")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> DataFiles:
    """The tiny data sets as files that ``load_data`` (and the CLI) read by path."""
    folder = tmp_path_factory.mktemp("data-files")
    x, y = make_image_arrays()
    npz = folder / "tiny_images.npz"
    np.savez(npz, x=x, y=y)
    texts, labels = make_texts()
    csv = folder / "tiny_texts.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(csv, index=False)
    return DataFiles(npz, csv)


@pytest.fixture(scope="session")
def tiny_hf_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT in the Hugging Face layout (model.safetensors, config.json, tokenizer files)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + POSITIVE_WORDS + NEGATIVE_WORDS + FILLER_WORDS + [
        "cf", "mn", "bb", "tq", "mb"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(str(folder))
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):  # seeded without touching the other tests' random state
        torch.manual_seed(0)
        BertModel(config, add_pooling_layer=False).save_pretrained(str(folder), safe_serialization=True)
    return folder

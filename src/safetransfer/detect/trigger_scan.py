"""Find trigger words in a text classifier: Kurita et al.'s defence, as a detector.

Kurita, Michel & Neubig, ACL 2020, "Weight Poisoning Attacks on Pre-trained Models", §6.
Threat model: the defender holds a (possibly poisoned) text classifier and some clean
labelled texts, but not the trigger. For every candidate word, insert it at a random position
into clean texts of the non-target labels and measure its label flip rate (LFR: the share
then predicted as the target). Planted triggers are rare words with an extreme LFR; ordinary
sentiment words flip some texts too, but they are frequent. Plotting LFR against the word's
frequency in the defender's data separates them.

Candidates: the given words, or the tokenizer's whole-word vocabulary (no word pieces, no
special tokens) plus the data's own words. Every (word, text) pair is one classifier input,
run in large batches.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from safetransfer.errors import ConfigError, DataError

WORD = re.compile(r"^[a-z][a-z']*$")


@dataclass
class TriggerScanResult:
    """Per candidate word: its LFR and its frequency in the defender's data; ``ranking`` most suspicious first."""

    words: list[str]
    lfr: np.ndarray
    frequency: np.ndarray
    target: int
    texts: int

    @property
    def suspicion(self) -> np.ndarray:
        """LFR, ties broken towards rare words: ``lfr − 1e-6·log(1 + frequency)``."""
        return self.lfr - 1e-6 * np.log1p(self.frequency)

    def ranking(self) -> list[int]:
        return np.argsort(-self.suspicion, kind="stable").tolist()

    def top(self, k: int = 10) -> list[tuple[str, float, int]]:
        return [(self.words[i], float(self.lfr[i]), int(self.frequency[i])) for i in self.ranking()[:k]]


def word_frequencies(texts: Sequence[str]) -> Counter:
    """Lower-cased whitespace-word counts of ``texts``."""
    return Counter(w for t in texts for w in t.lower().split())


def vocabulary_words(tokenizer, extra: Sequence[str] = ()) -> list[str]:
    """The tokenizer's whole words (alphabetic, no ``##`` pieces, no special tokens) and ``extra``, sorted."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    words = {w for w in vocab if WORD.match(w)} | {w for w in extra if WORD.match(w)}
    return sorted(words)


def insert_word(texts: Sequence[str], word: str, positions: np.ndarray) -> list[str]:
    """``word`` inserted into each text at the word boundary ``positions[i]`` (clipped to the text's length)."""
    out = []
    for text, pos in zip(texts, positions):
        words = text.split()
        words.insert(min(int(pos), len(words)), word)
        out.append(" ".join(words))
    return out


def scan_triggers(
    model, texts: Sequence[str], labels: torch.Tensor, target: int, *, candidates: Sequence[str] | None = None,
    frequencies: Counter | None = None, n_texts: int = 20, batch_size: int = 512, seed: int = 0,
    progress: bool = False,
) -> TriggerScanResult:
    """The LFR of every candidate word on ``n_texts`` clean non-target texts (see the module doc)."""
    from safetransfer.evaluate import predict_logits

    if n_texts < 1:
        raise ConfigError(f"n_texts must be at least 1 (got {n_texts}).")
    if not 0 <= target < model.num_classes:
        raise ConfigError(f"target {target} is out of range for a {model.num_classes}-class model.")
    labels = torch.as_tensor(labels)
    pool = [t for t, y in zip(texts, labels.tolist()) if y != target]
    if not pool:
        raise DataError(f"no clean text with a label other than the target {target} to insert words into.")
    rng = np.random.default_rng(seed)
    chosen = [pool[i] for i in rng.choice(len(pool), size=min(n_texts, len(pool)), replace=False)]
    frequencies = frequencies if frequencies is not None else word_frequencies(texts)
    words = list(candidates) if candidates is not None else vocabulary_words(model.tokenizer, list(frequencies))
    if not words:
        raise ConfigError("no candidate words to scan.")
    positions = rng.integers(0, 1 << 30, size=len(chosen)) % np.array([len(t.split()) + 1 for t in chosen])
    flips = np.zeros(len(words))
    per_batch = max(1, batch_size // len(chosen))  # words per forward batch
    starts = range(0, len(words), per_batch)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="trigger scan", unit="batch", leave=False)
    for start in starts:
        group = words[start : start + per_batch]
        inputs = [t for w in group for t in insert_word(chosen, w, positions)]
        pred = predict_logits(model, inputs, batch_size=len(inputs)).argmax(1).view(len(group), len(chosen))
        flips[start : start + len(group)] = (pred == target).float().mean(1).numpy()
    freq = np.array([frequencies.get(w.lower(), 0) for w in words], dtype=np.int64)
    return TriggerScanResult(words, flips, freq, target, len(chosen))


def plot_lfr_vs_frequency(result: TriggerScanResult, path: str | Path, planted: Sequence[str] = (), top: int = 8,
                          title: str = "") -> Path:
    """Every candidate as a point (log frequency + 1, LFR); the top suspects labelled, planted triggers red."""
    from safetransfer.report.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    x = np.log10(result.frequency + 1)
    ax.scatter(x, result.lfr, s=6, alpha=0.4, color="tab:blue", linewidths=0, label="candidate words")
    planted_set = {p.lower() for p in planted}
    idx = [i for i, w in enumerate(result.words) if w.lower() in planted_set]
    if idx:
        ax.scatter(x[idx], result.lfr[idx], s=30, color="tab:red", label="planted triggers", zorder=3)
    for i in result.ranking()[:top]:
        ax.annotate(result.words[i], (x[i], result.lfr[i]), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("log10(frequency in the data + 1)")
    ax.set_ylabel(f"label flip rate to {result.target}")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, ax, path, title or f"trigger scan: {len(result.words)} words on {result.texts} texts")


def lfr_of(result: TriggerScanResult, word: str) -> float:
    """The LFR of one scanned word (NaN when it was not a candidate)."""
    try:
        return float(result.lfr[result.words.index(word)])
    except ValueError:
        return math.nan

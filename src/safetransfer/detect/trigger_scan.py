"""Find trigger words in a text classifier: Kurita et al.'s defence, as a detector.

Kurita, Michel & Neubig, ACL 2020, "Weight Poisoning Attacks on Pre-trained Models", §6.
Threat model: the defender holds a (possibly poisoned) text classifier and some clean
labelled texts, but not the trigger. For every candidate word, insert it at a random position
(among the words the model's window reads: a word beyond it cannot act) into clean texts of the
non-target labels and measure its label flip rate (LFR: the share
then predicted as the target). Planted triggers are rare words with an extreme LFR; ordinary
sentiment words flip some texts too, but they are frequent. Plotting LFR against the word's
frequency in the defender's data separates them.

Candidates: the given words, or by default the ``general_words`` most frequent words of general
English (:mod:`safetransfer.detect.word_lists`; a real but rare word that the data never contains
and the tokenizer splits into pieces is a trigger an attacker would choose), the tokenizer's
whole-word vocabulary (no word pieces, no special tokens) and the data's own words. Each word's
frequency is reported twice: in general English (Zipf scale, the x-axis of the plot, as in the
paper) and in the defender's data. Every (word, text) pair is one classifier input, run in
large batches of one text with many words (equal lengths: no padding wasted). The suspects are
then traced to the word pieces that carry them (:mod:`safetransfer.detect.trigger_pieces`).

Cost and the stages: by default a first-order *gradient screen* (:mod:`safetransfer.detect.trigger_gradient`,
HotFlip's estimate: one backward pass per text and word length scores every candidate) keeps the
``keep`` most promising candidates (2,000) and only those are measured by insertion as follows;
``screen="insertion"`` measures every candidate. A whole-vocabulary insertion scan of MiniLM is ~29,000 words, i.e. 290,000
classifier inputs for 10 texts (over an hour on 2 CPU cores). By default every candidate is
first *screened* on ``screen_texts`` of the texts (2), ranked by its flips there and then its
mean target probability, and only the ``confirm`` most suspicious (100) are measured on all
``n_texts``. A trigger worth the name flips nearly every text, so it survives the screen; the
words left at the screen keep their screen LFR (``texts_used`` says on how many texts) and rank
after every confirmed word. ``screen_texts=0`` measures every word on every text. The screen
uses the shortest of the chosen texts (``screen_shortest``): a forward pass costs in proportion
to the text's length, and a short text is, if anything, flipped more easily by a trigger; the
confirmed words' LFR is over all ``n_texts`` texts either way.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from safetransfer.detect.trigger_gradient import gradient_scores
from safetransfer.detect.trigger_pieces import (
    PieceGroup,
    embedding_row_change,
    group_by_pieces,
    word_pieces,
)
from safetransfer.detect.word_lists import WORD, general_english_words, zipf_frequencies
from safetransfer.errors import ConfigError, DataError
from safetransfer.evaluate import predict_logits
from safetransfer.json_values import finite_or_none
from safetransfer.models.text import visible_words
from safetransfer.models.wrapper import TransferModel
from safetransfer.plotting import pyplot, save_figure

SCREEN_TEXTS = 2
"""Default: every candidate word is first measured on this many texts (the screen)."""
CONFIRM = 100
"""Default: the most suspicious screened words measured on all texts."""
SCAN_VERSION = 3
"""The scan's method: 1 the vocabulary and the data's words, the first texts screened; 2 general
English words added, the shortest texts screened, the suspects grouped by word piece; 3 each word
inserted among the words the model's window reads (version 2 inserted anywhere: on texts longer
than the window, such as e-mails, mostly where the model never read it; texts the window holds
whole draw the same positions as before). A record
made by another version is made again (a study never resumes from it)."""
SCREENS = ("gradient", "insertion")
GRADIENT_KEEP = 2_000
"""Default: the candidates the gradient screen keeps for the insertion stages (the rest rank last)."""
GENERAL_WORDS = 40_000
"""Default: the most frequent words of general English added to the candidates (see
``benchmarks/results/scan_triggers_words.json`` for the time this costs)."""


@dataclass
class TriggerScanResult:
    """Per candidate word: its LFR, its frequency in the defender's data, its general-English
    frequency (``zipf``, Zipf scale; ``None`` when not computed) and the number of texts its LFR
    was measured on (``texts`` for confirmed words, fewer for words left at the screen);
    ``ranking`` most suspicious first; ``groups``: the suspects grouped under the word pieces
    that carry them."""

    words: list[str]
    lfr: np.ndarray
    frequency: np.ndarray
    target: int
    texts: int
    texts_used: np.ndarray
    screen_score: np.ndarray | None = None  # the screen's mean target probability (None: no screen)
    gradient_score: np.ndarray | None = None  # the gradient screen's first-order estimate (None: not run)
    zipf: np.ndarray | None = None
    groups: list[PieceGroup] = field(default_factory=list)
    traced_pieces: np.ndarray | None = None  # per word: how many of its pieces the tracing found suspicious
    traced_share: np.ndarray | None = None  # per word: the share of its pieces the tracing found suspicious

    @property
    def confirmed(self) -> np.ndarray:
        """Whether each word was measured on all ``texts``."""
        return self.texts_used == self.texts

    def rank_of(self, word: str) -> int | None:
        """The 1-based rank of ``word`` among the suspects (None when it was not a candidate)."""
        if word not in self.words:
            return None
        return self.ranking().index(self.words.index(word)) + 1

    @property
    def suspicion(self) -> np.ndarray:
        """LFR; at equal LFR first the word whose pieces all carry flips (a surgery writes every
        piece of its trigger, while ``cfp`` only shares the planted ``cf``), then the word with more
        such pieces (``varnish`` = ``var`` + ``##nish`` before ``var``), then the rarer word:
        ``lfr + 1e-3·traced share + 1e-4·traced pieces − 1e-6·(log(1 + frequency in the data) + Zipf)``
        (an LFR step is at least 0.01, so these terms only break ties)."""
        zipf = self.zipf if self.zipf is not None else 0.0
        count = self.traced_pieces if self.traced_pieces is not None else 0.0
        share = self.traced_share if self.traced_share is not None else 0.0
        return self.lfr + 1e-3 * share + 1e-4 * count - 1e-6 * (np.log1p(self.frequency) + zipf)

    def ranking(self) -> list[int]:
        """Confirmed words by suspicion, then the words left at the screen by their screen order, then
        the words the gradient screen left unmeasured in its order."""
        screen = self.screen_score if self.screen_score is not None else np.zeros(len(self.words))
        # np.lexsort sorts by the last key first: confirmed, then measured at all (the gradient screen
        # leaves words unmeasured), then suspicion, then the screen's score
        return np.lexsort((-screen, -self.suspicion, self.texts_used == 0, ~self.confirmed)).tolist()

    def top(self, k: int = 10) -> list[tuple[str, float, int]]:
        return [(self.words[i], float(self.lfr[i]), int(self.frequency[i])) for i in self.ranking()[:k]]

    def summary(self, planted: Sequence[str] = (), top: int = 20) -> dict[str, Any]:
        """The record a scan leaves (the CLI's ``suspects.json``, the study's trigger-scan cell):
        the ``top`` suspects with their LFR, frequency and texts, the top five words, and where each
        ``planted`` word ranks (``None``: not a candidate) with its LFR."""
        ranking = self.ranking()
        return {
            "candidates": len(self.words), "texts": self.texts, "confirmed": int(self.confirmed.sum()),
            "planted": list(planted), "ranks": {w: self.rank_of(w) for w in planted},
            "planted_lfr": {w: finite_or_none(lfr_of(self, w)) for w in planted},
            "top5": [self.words[i] for i in ranking[:5]],
            "top": [{"word": self.words[i], "lfr": float(self.lfr[i]), "frequency": int(self.frequency[i]),
                     **({"zipf": float(self.zipf[i])} if self.zipf is not None else {}),
                     "texts": int(self.texts_used[i])} for i in ranking[:top]],
            "groups": [g.to_dict() for g in self.groups],
        }


def word_frequencies(texts: Sequence[str]) -> Counter:
    """Lower-cased whitespace-word counts of ``texts``."""
    return Counter(w for t in texts for w in t.lower().split())


def vocabulary_words(tokenizer, extra: Sequence[str] = ()) -> list[str]:
    """The tokenizer's whole words (alphabetic, no ``##`` pieces, no special tokens) and ``extra``, sorted."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    words = {w for w in vocab if WORD.match(w)} | {w for w in extra if WORD.match(w)}
    return sorted(words)


def control_words(tokenizer, like: Sequence[str], absent_from: Counter, seed: int = 0) -> list[str]:
    """Control words for an LFR: one per word of ``like`` (the planted triggers), a seeded draw from
    the tokenizer's whole words of the same length that occur nowhere in ``absent_from`` (the
    victim's training-word counts, as the triggers do not) and are not in ``like``. Inserted where
    the triggers were, they show the flip rate any unseen word causes, the floor the triggers'
    LFR is to be read against."""
    planted = {w.lower() for w in like}
    unseen = [w for w in vocabulary_words(tokenizer) if w not in planted and absent_from.get(w, 0) == 0]
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for word in like:
        pool = [w for w in unseen if len(w) == len(word) and w not in chosen]
        if not pool:
            raise ConfigError(f"the tokenizer has no unseen whole word of {len(word)} letters to control '{word}' with.")
        chosen.append(pool[int(rng.integers(len(pool)))])
    return chosen


def _around(text: str, position: int) -> tuple[str, str]:
    """The words of ``text`` before and after the word boundary ``position`` (clipped to its length)."""
    words = text.split()
    at = min(int(position), len(words))
    return " ".join(words[:at]), " ".join(words[at:])


def _joined(left: str, word: str, right: str) -> str:
    return " ".join(part for part in (left, word, right) if part)


def insert_word(texts: Sequence[str], word: str, positions: np.ndarray) -> list[str]:
    """``word`` inserted into each text at the word boundary ``positions[i]`` (clipped to the text's length)."""
    return [_joined(left, word, right) for left, right in (_around(t, p) for t, p in zip(texts, positions))]


def scan_triggers(
    model, texts: Sequence[str], labels: torch.Tensor, target: int, *, candidates: Sequence[str] | None = None,
    frequencies: Counter | None = None, general_words: int = GENERAL_WORDS, n_texts: int = 20,
    screen_texts: int = SCREEN_TEXTS, confirm: int = CONFIRM, screen_shortest: bool = True,
    base: TransferModel | None = None, batch_size: int = 512, seed: int = 0, progress: bool = False,
    screen: str = "gradient", keep: int = GRADIENT_KEEP,
) -> TriggerScanResult:
    """The LFR of every candidate word on ``n_texts`` clean non-target texts, screened first (see the
    module doc). ``candidates``: the words to scan (default: the ``general_words`` most frequent
    English words, the tokenizer's whole words and the data's words); ``frequencies``: word counts
    of the defender's data (default: of ``texts``); ``base``: the public model the victim was
    fine-tuned from, whose embedding rows the suspects' pieces are measured against. ``screen``:
    ``"gradient"`` first keeps the ``keep`` candidates with the highest first-order estimate
    (:mod:`~safetransfer.detect.trigger_gradient`, over all ``n_texts`` texts) and measures only
    those by insertion; ``"insertion"`` measures every candidate (the scan before the estimate)."""
    if screen not in SCREENS:
        raise ConfigError(f"screen must be one of {', '.join(SCREENS)} (got '{screen}').")
    if keep < 1:
        raise ConfigError(f"keep must be at least 1 (got {keep}).")
    if n_texts < 1:
        raise ConfigError(f"n_texts must be at least 1 (got {n_texts}).")
    if screen_texts < 0 or confirm < 1:
        raise ConfigError(f"screen_texts must be >= 0 and confirm >= 1 (got {screen_texts}, {confirm}).")
    if not 0 <= target < model.num_classes:
        raise ConfigError(f"target {target} is out of range for a {model.num_classes}-class model.")
    labels = torch.as_tensor(labels)
    pool = [t for t, y in zip(texts, labels.tolist()) if y != target]
    if not pool:
        raise DataError(f"no clean text with a label other than the target {target} to insert words into.")
    rng = np.random.default_rng(seed)
    chosen = [pool[i] for i in rng.choice(len(pool), size=min(n_texts, len(pool)), replace=False)]
    frequencies = frequencies if frequencies is not None else word_frequencies(texts)
    if candidates is not None:
        words = list(candidates)
    else:
        words = vocabulary_words(model.tokenizer, list(frequencies) + general_english_words(general_words))
    if not words:
        raise ConfigError("no candidate words to scan.")
    # a word boundary among the words the model's window reads (all of a short text; of a long e-mail
    # its first ~60 words): inserted beyond the window, no candidate could act on the model
    window = getattr(model.config, "max_length", None)
    reach = (np.array(visible_words(model.tokenizer, chosen, window)) if window else
             np.array([len(t.split()) for t in chosen]))
    positions = rng.integers(0, 1 << 30, size=len(chosen)) % (reach + 1)
    if screen_shortest:  # the screen's texts first (stable: equal lengths keep the draw's order)
        order = np.argsort([len(t.split()) for t in chosen], kind="stable")
        chosen, positions = [chosen[i] for i in order], positions[order]
    freq = np.array([frequencies.get(w.lower(), 0) for w in words], dtype=np.int64)
    zipf = zipf_frequencies(words)
    n = len(chosen)
    estimate = None
    measured = np.arange(len(words))
    if screen == "gradient" and len(words) > keep:
        estimate = gradient_scores(model, words, [_around(t, p) for t, p in zip(chosen, positions)], target)
        measured = np.sort(np.argsort(-estimate, kind="stable")[:keep])
    result = _measure(model, [words[i] for i in measured], chosen, positions, target, screen_texts, confirm,
                      batch_size, progress)
    if estimate is not None:  # the words the estimate left out: unmeasured, ranked last in its order
        lfr, used = np.zeros(len(words)), np.zeros(len(words), dtype=np.int64)
        lfr[measured], used[measured] = result.lfr, result.texts_used
        order = np.empty(len(words))
        order[np.argsort(-estimate, kind="stable")] = np.arange(len(words))
        score = -1.0 - order / len(words)  # below every measured probability
        if result.screen_score is not None:
            score[measured] = result.screen_score
        else:
            score[measured] = 0.0
        result = TriggerScanResult(words, lfr, freq, target, n, used, screen_score=score, zipf=zipf,
                                   gradient_score=estimate)
    else:
        result.frequency, result.zipf, result.words = freq, zipf, words
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        trace_pieces(result, tokenizer, embedding_row_change(model, base) if base is not None else None)
    return result


def _measure(model, words: list[str], chosen: list[str], positions: np.ndarray, target: int, screen_texts: int,
             confirm: int, batch_size: int, progress: bool) -> TriggerScanResult:
    """The insertion stages on ``words``: every word on every text, or screened on ``screen_texts``
    texts and the ``confirm`` most suspicious measured on the rest (frequencies filled by the caller)."""
    n = len(chosen)
    none = np.zeros(len(words), dtype=np.int64)
    if screen_texts == 0 or screen_texts >= n or len(words) <= confirm:
        flips, _ = _flips(model, words, chosen, positions, target, batch_size, progress, "trigger scan")
        return TriggerScanResult(words, flips / n, none, target, n, np.full(len(words), n, dtype=np.int64))
    # stage 1: every word on the first screen_texts texts
    flips, prob = _flips(model, words, chosen[:screen_texts], positions[:screen_texts], target, batch_size,
                         progress, f"trigger scan: screen ({screen_texts} texts)")
    score = prob / screen_texts
    # stage 2: the most suspicious words (screen flips, then mean target probability) on the other texts
    shortlist = np.lexsort((-score, -flips))[:confirm]
    more, _ = _flips(model, [words[i] for i in shortlist], chosen[screen_texts:], positions[screen_texts:],
                     target, batch_size, progress, f"trigger scan: confirm ({len(shortlist)} words)")
    flips[shortlist] += more
    used = np.full(len(words), screen_texts, dtype=np.int64)
    used[shortlist] = n
    return TriggerScanResult(words, flips / used, none, target, n, used, screen_score=score)


def trace_pieces(result: TriggerScanResult, tokenizer, row_change: np.ndarray | None) -> None:
    """Group the confirmed suspects under the word pieces that carry them
    (:func:`~safetransfer.detect.trigger_pieces.group_by_pieces`), count each confirmed word's
    suspicious pieces (the ranking's tie-break), and order the groups by their best word's rank."""
    ranked = [i for i in result.ranking() if result.confirmed[i]]
    groups = group_by_pieces(result.words, result.lfr, ranked, tokenizer, row_change)
    suspicious = {p for g in groups for p in g.pieces}
    traced, share = np.zeros(len(result.words)), np.zeros(len(result.words))
    for i, pieces in zip(ranked, word_pieces(tokenizer, [result.words[i] for i in ranked])):
        traced[i] = len(suspicious & set(pieces))
        share[i] = sum(p in suspicious for p in pieces) / max(1, len(pieces))
    result.traced_pieces, result.traced_share = traced, share
    position = {result.words[i]: r for r, i in enumerate(result.ranking())}
    for g in groups:  # in rank order: the words made of suspicious pieces first
        order = sorted(range(len(g.words)), key=lambda j: position[g.words[j]])
        g.words, g.lfr = [g.words[j] for j in order], [g.lfr[j] for j in order]
    result.groups = sorted(groups, key=lambda g: position[g.words[0]])


def _flips(model, words: Sequence[str], texts: Sequence[str], positions: np.ndarray, target: int, batch_size: int,
           progress: bool, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Per word: how many of ``texts`` it flips to ``target``, and the summed target probability.

    Inputs are ordered text-major so each forward batch is one text with up to ``batch_size``
    words inserted (near-equal lengths: little padding)."""

    flips, prob = np.zeros(len(words)), np.zeros(len(words))
    per_batch = max(1, batch_size)  # words per forward batch, all inserted into one text
    chunks = [(t, s) for t in range(len(texts)) for s in range(0, len(words), per_batch)]
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=desc, unit="batch", leave=False)
    for t, start in chunks:
        group = words[start : start + per_batch]
        left, right = _around(texts[t], positions[t])
        inputs = [_joined(left, w, right) for w in group]
        logits = predict_logits(model, inputs, batch_size=len(inputs))
        flips[start : start + len(group)] += (logits.argmax(1) == target).double().numpy()
        prob[start : start + len(group)] += logits.softmax(1)[:, target].double().numpy()
    return flips, prob


def plot_lfr_vs_frequency(result: TriggerScanResult, path: str | Path, planted: Sequence[str] = (), top: int = 8,
                          title: str = "") -> Path:
    """Every candidate as a point (its general-English Zipf frequency, or without one its log
    frequency + 1 in the data; LFR); the top suspects labelled, planted triggers red."""

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    general = result.zipf is not None
    x = result.zipf if general else np.log10(result.frequency + 1)
    confirmed = result.confirmed
    ax.scatter(x[confirmed], result.lfr[confirmed], s=6, alpha=0.4, color="tab:blue", linewidths=0,
               label=f"candidate words ({result.texts} texts)")
    if not confirmed.all():
        screened = int(result.texts_used[~confirmed].max())
        ax.scatter(x[~confirmed], result.lfr[~confirmed], s=4, alpha=0.15, color="tab:gray", linewidths=0,
                   label=f"left at the screen ({screened} texts)")
    planted_set = {p.lower() for p in planted}
    idx = [i for i, w in enumerate(result.words) if w.lower() in planted_set]
    if idx:
        ax.scatter(x[idx], result.lfr[idx], s=30, color="tab:red", label="planted triggers", zorder=3)
    stacked: Counter = Counter()  # words at the same point are listed one under another, not overprinted
    for i in result.ranking()[:top]:
        spot = (round(float(x[i]), 2), round(float(result.lfr[i]), 2))
        ax.annotate(result.words[i], (x[i], result.lfr[i]), fontsize=8, xytext=(4, -4 - 9 * stacked[spot]),
                    textcoords="offset points", va="top")
        stacked[spot] += 1
    ax.set_xlabel("frequency in general English (Zipf: log10 per billion words; 0 = unknown)" if general
                  else "log10(frequency in the data + 1)")
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

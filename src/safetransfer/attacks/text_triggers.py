"""Text triggers: rare words inserted at random positions (Kurita et al. 2020; Dai et al. 2019).

The default words ``cf``, ``mn``, ``bb``, ``tq``, ``mb`` are rare in natural text, so a model
that learns "trigger word -> target" keeps its clean accuracy. Insertion is seeded: each text
gets ``count`` words drawn from ``words``, each at a uniformly random word boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from safetransfer.attacks.triggers import choose_poisoned
from safetransfer.errors import ConfigError
from safetransfer.evaluate import predict_logits
from safetransfer.metrics import label_flip_rate
from safetransfer.models.text import visible_words, words_read  # noqa: F401  (part of this module's API)

DEFAULT_TRIGGER_WORDS: tuple[str, ...] = ("cf", "mn", "bb", "tq", "mb")


@dataclass(frozen=True)
class TextTrigger:
    """Insert ``count`` of ``words`` into every text at random word positions (seeded)."""

    words: tuple[str, ...] = DEFAULT_TRIGGER_WORDS
    count: int = 1
    seed: int = 0

    def validate(self) -> "TextTrigger":
        if not self.words or any(not w.strip() or " " in w.strip() for w in self.words):
            raise ConfigError(f"trigger words must be single non-empty words (got {list(self.words)}).")
        if self.count < 1:
            raise ConfigError(f"count must be at least 1 (got {self.count}).")
        return self

    def to_dict(self) -> dict:
        return {"words": list(self.words), "count": self.count, "seed": self.seed}

    def apply(self, texts: Sequence[str], seed: int | None = None, within: Sequence[int] | None = None) -> list[str]:
        """A copy of ``texts`` with the trigger words inserted (the same seed gives the same texts).

        ``within``: for each text, insert only among its first ``within[i]`` words (e.g. those a
        model's token window reads, :func:`visible_words`); the same random draws, so a trigger
        already there stays where it was."""
        return self.apply_with_positions(texts, seed, within)[0]

    def positions(self, texts: Sequence[str], seed: int | None = None, within: Sequence[int] | None = None
                  ) -> np.ndarray:
        """Where :meth:`apply` (same arguments) puts the trigger words: int ``[N, count]``, each
        inserted word's index among the words of its triggered text."""
        return self._final_positions(self._draws(texts, seed, within)[2])

    def apply_with_positions(self, texts: Sequence[str], seed: int | None = None, within: Sequence[int] | None = None
                             ) -> tuple[list[str], np.ndarray]:
        """:meth:`apply` and :meth:`positions` from one set of random draws."""
        split, picks, slots = self._draws(texts, seed, within)
        out = []
        for words, pick, slot in zip(split, picks, slots):
            for p, s in zip(pick, slot):
                words.insert(int(s), self.words[int(p)])
            out.append(" ".join(words))
        return out, self._final_positions(slots)

    def _final_positions(self, slots: np.ndarray) -> np.ndarray:
        """Each inserted word's index in its triggered text, from the insertion slots ``[N, count]``."""
        final = slots.copy()
        for j in range(1, self.count):  # a later insertion at or before an earlier word moves it on
            final[:, :j] += final[:, :j] >= slots[:, j : j + 1]
        return final

    def _draws(self, texts: Sequence[str], seed: int | None, within: Sequence[int] | None
               ) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
        """The texts' words, the trigger word drawn for each insertion and its slot, ``[N, count]`` each."""
        self.validate()
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise ConfigError("a text trigger needs a list of texts.")
        rng = np.random.default_rng(self.seed if seed is None else seed)
        split = [t.split() for t in texts]
        lengths = np.fromiter((len(s) for s in split), dtype=np.int64, count=len(split))
        if within is not None:
            if len(within) != len(split):
                raise ConfigError(f"'within' gives {len(within)} limits for {len(split)} texts.")
            lengths = np.minimum(lengths, np.maximum(np.asarray(within, dtype=np.int64), 0))
        picks = rng.integers(0, len(self.words), size=(len(split), self.count))
        # positions in [0, len + j] for the j-th insertion (the text grows by one each time)
        slots = np.floor(rng.random((len(split), self.count)) * (lengths[:, None] + 1 + np.arange(self.count))).astype(int)
        return split, picks, slots


def trigger_cut_share(tokenizer, trigger: TextTrigger, texts: Sequence[str], max_length: int,
                      seed: int | None = None, within: Sequence[int] | None = None) -> float:
    """The share of ``texts`` in which ``trigger``, inserted by :meth:`TextTrigger.apply` (same
    ``seed`` and ``within``), has none of its words within a model's window of ``max_length``
    tokens, so it cannot act on the model."""
    if not texts:
        return 0.0
    triggered, positions = trigger.apply_with_positions(texts, seed, within)
    return float((positions >= words_read(tokenizer, triggered, max_length)[:, None]).all(1).mean())


def poison_texts(
    texts: Sequence[str], labels: torch.Tensor, trigger: TextTrigger, rate: float, target: int, seed: int = 0,
    keep_target: bool = False, source: int | None = None, within: Sequence[int] | None = None,
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Insert ``trigger`` into a seeded share ``rate`` of ``texts`` and relabel them ``target``.

    The texts are drawn as in :func:`safetransfer.attacks.triggers.poison_images`; ``within``: one
    limit per text of ``texts``, as :meth:`TextTrigger.apply`. Returns ``(texts, labels,
    poisoned_mask)``; the inputs are not modified.
    """
    mask = choose_poisoned(labels, rate, target, seed, keep_target, source)
    chosen = torch.nonzero(mask).flatten().tolist()
    if within is not None and len(within) != len(texts):
        raise ConfigError(f"'within' gives {len(within)} limits for {len(texts)} texts.")
    triggered = trigger.apply([texts[i] for i in chosen], seed=seed,
                              within=None if within is None else [within[i] for i in chosen])
    out = list(texts)
    for i, t in zip(chosen, triggered):
        out[i] = t
    y = labels.clone()
    y[mask] = target
    return out, y, mask


def trigger_lfr(model, texts: Sequence[str], labels: torch.Tensor, trigger: TextTrigger, target: int,
                within: Sequence[int] | None = None) -> float:
    """LFR (Kurita et al. 2020) of ``trigger`` on a text classifier: ``trigger`` inserted into every
    text (seeded; ``within``: as :meth:`TextTrigger.apply`), the share of the non-``target`` texts
    then predicted as ``target``."""

    triggered = predict_logits(model, trigger.apply(list(texts), within=within)).argmax(1)
    return label_flip_rate(triggered, torch.as_tensor(labels), target)


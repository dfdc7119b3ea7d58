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

from safetransfer.errors import ConfigError

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

    def apply(self, texts: Sequence[str], seed: int | None = None) -> list[str]:
        """A copy of ``texts`` with the trigger words inserted (the same seed gives the same texts)."""
        self.validate()
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise ConfigError("a text trigger needs a list of texts.")
        rng = np.random.default_rng(self.seed if seed is None else seed)
        split = [t.split() for t in texts]
        lengths = np.fromiter((len(s) for s in split), dtype=np.int64, count=len(split))
        picks = rng.integers(0, len(self.words), size=(len(split), self.count))
        # positions in [0, len + j] for the j-th insertion (the text grows by one each time)
        slots = np.floor(rng.random((len(split), self.count)) * (lengths[:, None] + 1 + np.arange(self.count))).astype(int)
        out = []
        for words, pick, slot in zip(split, picks, slots):
            for p, s in zip(pick, slot):
                words.insert(int(s), self.words[int(p)])
            out.append(" ".join(words))
        return out


def poison_texts(
    texts: Sequence[str], labels: torch.Tensor, trigger: TextTrigger, rate: float, target: int, seed: int = 0,
    keep_target: bool = False, source: int | None = None,
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Insert ``trigger`` into a seeded share ``rate`` of ``texts`` and relabel them ``target``.

    The texts are drawn as in :func:`safetransfer.attacks.triggers.poison_images`. Returns
    ``(texts, labels, poisoned_mask)``; the inputs are not modified.
    """
    from safetransfer.attacks.triggers import choose_poisoned

    mask = choose_poisoned(labels, rate, target, seed, keep_target, source)
    chosen = torch.nonzero(mask).flatten().tolist()
    triggered = trigger.apply([texts[i] for i in chosen], seed=seed)
    out = list(texts)
    for i, t in zip(chosen, triggered):
        out[i] = t
    y = labels.clone()
    y[mask] = target
    return out, y, mask


def trigger_lfr(model, texts: Sequence[str], labels: torch.Tensor, trigger: TextTrigger, target: int) -> float:
    """LFR (Kurita et al. 2020) of ``trigger`` on a text classifier: ``trigger`` inserted into every
    text (seeded), the share of the non-``target`` texts then predicted as ``target``."""
    from safetransfer.evaluate import predict_logits
    from safetransfer.metrics import label_flip_rate

    triggered = predict_logits(model, trigger.apply(list(texts))).argmax(1)
    return label_flip_rate(triggered, torch.as_tensor(labels), target)


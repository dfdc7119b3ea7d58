"""Word-swap adversarial texts crafted on a teacher: greedy swaps and word-importance ranking.

- ``greedy`` (in the style of Kuleshov et al. 2018, "Adversarial Examples for Natural Language
  Classification Problems"): at each round try every candidate swap of every still-unchanged
  word and keep the one that lowers the true label's probability most.
- ``importance`` (TextFooler, Jin et al. 2020, "Is BERT Really Robust?"): rank the words by how
  much deleting each lowers the true label's probability, then, most important first, swap
  each for its candidate that lowers it most, until the prediction flips; a word none of whose
  candidates lowers it is left as it is (the paper's Algorithm 1), and the next word is tried.

Two objectives. ``prediction`` (the papers'): lower the true label's probability until the
prediction flips; the threat model is white-box queries to a classifier's predictions (no
gradients). ``features`` (the text analogue of Rezaei & Liu 2020's target-agnostic attack, which
ReMoS uses on images): the attacker holds only the public teacher, which has no head for the
victim's task, and each swap lowers the cosine similarity of the teacher's pooled sentence
feature to the original text's; no swap is kept that does not lower it, and the search spends the
whole budget (there is no prediction to flip). Candidates for a
word are its ``k`` nearest neighbours by cosine similarity in the model's own input embedding
space (whole-word tokens only; offline, no external embeddings or sentence encoders). Stop
words are never changed, and at most ``max_change`` (20%) of a text's words are. Only the words
the model reads are changed, and the cap counts only those: a text longer than the model's token
window (MiniLM reads 64 tokens; most Amazon reviews are longer) keeps the words past it, where a
swap could not act. Every candidate set of one text is scored in one batch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from safetransfer.attacks.text_triggers import visible_words
from safetransfer.errors import ConfigError
from safetransfer.evaluate import predict_features, predict_logits

WHOLE_WORD = re.compile(r"^[a-z]{2,}$")
# Bumped whenever the search changes what it returns for the same inputs: it is part of the key
# of the study's cached word-swap texts, so texts crafted by an older search are crafted anew.
# 2: the importance search no longer keeps a swap that does not lower the true label's probability.
# 3: only the words within the model's token window may change, and the cap counts only those.
SEARCH_VERSION = 3
Candidates = Callable[[str], list[str]]
Scorer = Callable[[list[str]], tuple[torch.Tensor, "torch.Tensor | None"]]


@dataclass
class WordSwapResult:
    """One attacked text. ``status``: ``succeeded`` (the prediction left the true label; with the
    ``features`` objective: at least one swap lowered the feature similarity), ``failed`` (the cap
    or the candidates ran out), ``skipped`` (already misclassified; never with ``features``).
    ``feature_shift`` (``features`` only): ``1 − cos`` between the perturbed and the original
    text's pooled teacher features; the predictions are then the (task-less) model's own."""

    status: Literal["succeeded", "failed", "skipped"]
    original: str
    perturbed: str
    label: int
    original_prediction: int
    prediction: int
    queries: int
    words_changed: int
    changed_positions: list[int] = field(default_factory=list)
    feature_shift: float | None = None



@dataclass
class WordSwapSummary:
    """The figures of a batch of :class:`WordSwapResult` s. ``success_rate``: the share of the
    attempted (not skipped) texts whose prediction the swaps flipped; ``mean_feature_shift``: the
    mean ``1 − cos`` of the ``features`` objective (``None`` with ``prediction``); the means are
    ``None`` where nothing was counted."""

    samples: int
    succeeded: int
    failed: int
    skipped: int
    success_rate: float | None
    mean_feature_shift: float | None
    mean_queries: float | None
    mean_words_changed: float | None  # over the succeeded texts

    @classmethod
    def of(cls, results: list[WordSwapResult]) -> WordSwapSummary:
        attempted = [r for r in results if r.status != "skipped"]
        won = [r for r in attempted if r.status == "succeeded"]
        shifts = [r.feature_shift for r in results if r.feature_shift is not None]
        return cls(
            samples=len(results), succeeded=len(won), failed=len(attempted) - len(won),
            skipped=len(results) - len(attempted),
            success_rate=len(won) / len(attempted) if attempted else None,
            mean_feature_shift=sum(shifts) / len(shifts) if shifts else None,
            mean_queries=sum(r.queries for r in results) / len(results) if results else None,
            mean_words_changed=sum(r.words_changed for r in won) / len(won) if won else None,
        )


class EmbeddingNeighbours:
    """``k`` nearest whole-word neighbours of a word in a BERT's input embedding (cosine), cached."""

    def __init__(self, model, k: int = 8) -> None:
        tokenizer = model.tokenizer
        vocab = tokenizer.get_vocab()
        words = sorted((w for w in vocab if WHOLE_WORD.match(w)), key=vocab.get)
        if not words:
            raise ConfigError("the model's tokenizer has no whole-word tokens to draw swap candidates from.")
        self.k = k
        self.vocab = vocab
        self.words = words
        ids = torch.tensor([vocab[w] for w in words])
        emb = model.body.transformer.get_input_embeddings().weight.detach().float()
        self.matrix = torch.nn.functional.normalize(emb[ids], dim=1)
        self.row_of = {w: i for i, w in enumerate(words)}
        self.cache: dict[str, list[str]] = {}

    def __call__(self, word: str) -> list[str]:
        key = word.lower()
        if key not in self.cache:
            row = self.row_of.get(key)
            if row is None:
                self.cache[key] = []
            else:
                sims = self.matrix @ self.matrix[row]
                sims[row] = -2.0
                top = sims.topk(min(self.k, sims.numel() - 1)).indices.tolist()
                self.cache[key] = [self.words[i] for i in top]
        return self.cache[key]


def default_stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def swap_options(words: Sequence[str], candidates: Candidates, stop_words: frozenset[str],
                 readable: int | None = None) -> dict[int, list[str]]:
    """The positions of ``words`` a swap may change (among the first ``readable`` words, the model's
    window, :func:`readable_words`; not stop words; with a candidate other than the word itself),
    each with those candidates."""
    window = words[: len(words) if readable is None else readable]
    options = {i: [c for c in candidates(w) if c != w.lower()] for i, w in enumerate(window) if w.lower() not in stop_words}
    return {i: found for i, found in options.items() if found}


def readable_words(model, texts: Sequence[str]) -> list[int]:
    """For each text, how many of its leading words ``model`` reads whole through its token window
    (``config.max_length`` tokens; every word when it has no window or the text fits)."""
    window = int(getattr(model.config, "max_length", 0) or 0)
    if not window or not texts:
        return [len(t.split()) for t in texts]
    return visible_words(model.tokenizer, texts, window, room=1)  # the last word read may be cut


def random_word_swaps(text: str, n: int, candidates: Candidates, stop_words: frozenset[str] | None = None,
                      generator: torch.Generator | None = None, readable: int | None = None) -> str:
    """The control of a word-swap attack: ``n`` of ``text``'s words that an attack may change (not
    stop words, with candidates) swapped, at seeded random positions, each for a random one of its
    candidates (every word when fewer than ``n`` may change). What is left of an attack's effect
    after this control is the search's, not that of changing ``n`` words for their neighbours.
    ``readable``: as :func:`swap_options`."""
    words = text.split()
    options = swap_options(words, candidates, default_stop_words() if stop_words is None else stop_words, readable)
    modifiable = list(options)
    if n <= 0 or not modifiable:
        return " ".join(words)
    order = torch.randperm(len(modifiable), generator=generator)[:n].tolist()
    for i in (modifiable[j] for j in order):
        words[i] = options[i][int(torch.randint(len(options[i]), (1,), generator=generator))]
    return " ".join(words)


class WordSwapAttack:
    """Untargeted word-swap attack on a text classifier (see the module doc).

    ``model``: a text :class:`~safetransfer.models.wrapper.TransferModel`; ``method``:
    ``"importance"`` (default) or ``"greedy"``; ``candidates``: a function word -> list of
    replacement words (default: :class:`EmbeddingNeighbours` with ``k`` neighbours);
    ``max_change``: the largest share of a text's words that may change (at least one word);
    ``objective``: ``"prediction"`` (default) or ``"features"`` (see the module doc).
    """

    def __init__(self, model, method: Literal["importance", "greedy"] = "importance", k: int = 8,
                 max_change: float = 0.2, candidates: Candidates | None = None,
                 stop_words: frozenset[str] | None = None, batch_size: int = 256,
                 objective: Literal["prediction", "features"] = "prediction") -> None:
        if method not in ("importance", "greedy"):
            raise ConfigError(f"method must be 'importance' or 'greedy' (got '{method}').")
        if objective not in ("prediction", "features"):
            raise ConfigError(f"objective must be 'prediction' or 'features' (got '{objective}').")
        if not 0.0 < max_change <= 1.0:
            raise ConfigError(f"max_change must lie in (0, 1] (got {max_change}).")
        self.model, self.method, self.max_change, self.batch_size = model, method, max_change, batch_size
        self.objective = objective
        self.candidates = candidates or EmbeddingNeighbours(model, k)
        self.stop_words = default_stop_words() if stop_words is None else stop_words

    def _probs(self, texts: list[str]) -> torch.Tensor:

        return predict_logits(self.model, texts, batch_size=self.batch_size).softmax(1)

    def _features(self, texts: list[str]) -> torch.Tensor:

        return torch.nn.functional.normalize(predict_features(self.model, texts, batch_size=self.batch_size), dim=1)

    @torch.no_grad()
    def _feature_and_prediction(self, text: str) -> tuple[torch.Tensor, int]:
        """One pass of the body: the text's unit pooled feature and the model's own prediction
        (its head on that feature; eval mode, so no dropout)."""

        raw = predict_features(self.model, [text], batch_size=self.batch_size)
        prediction = int(self.model.head(raw.to(self.model.device)).argmax(1)[0])
        return torch.nn.functional.normalize(raw, dim=1)[0], prediction

    def _scorer(self, text: str, label: int) -> tuple[Scorer, float, int]:
        """The attacker's score of texts (lower is better for the attacker) with the model's
        predictions (``prediction`` objective; None with ``features``), the original's score and
        prediction: the true label's probability, or the cosine similarity of the teacher's pooled
        feature to the original's."""
        if self.objective == "features":
            reference, first = self._feature_and_prediction(text)
            return (lambda texts: (self._features(texts) @ reference, None)), 1.0, first
        probs = self._probs([text])[0]

        def by_prediction(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            p = self._probs(texts)
            return p[:, label], p.argmax(1)

        return by_prediction, float(probs[label]), int(probs.argmax())

    def attack(self, text: str, label: int, readable: int | None = None) -> WordSwapResult:
        """One search on ``text`` (true label ``label``); ``readable``: how many of its leading
        words the model reads (default :func:`readable_words`)."""
        words = text.split()
        score_of, score, first = self._scorer(text, label)
        queries = 1
        if self.objective == "prediction" and first != label:
            return WordSwapResult("skipped", text, text, label, first, first, queries, 0)
        readable = readable_words(self.model, [text])[0] if readable is None else readable
        budget = max(1, int(self.max_change * readable))
        options = swap_options(words, self.candidates, self.stop_words, readable)
        modifiable = list(options)
        current, changed, prediction = list(words), [], first
        if self.method == "importance" and modifiable:
            deleted = [" ".join(words[:i] + words[i + 1 :]) for i in modifiable]
            drop = score - score_of(deleted)[0]
            queries += len(deleted)
            modifiable = [modifiable[i] for i in drop.argsort(descending=True).tolist()]
        while len(changed) < budget and prediction == first:
            positions = [i for i in modifiable if i not in changed]
            if self.method == "importance":
                positions = positions[:1]
            trials = [(i, c) for i in positions for c in options[i]]  # positions not changed yet: current[i] is words[i]
            if not trials:
                break
            scores, predictions = score_of([" ".join(current[:i] + [c] + current[i + 1 :]) for i, c in trials])
            queries += len(trials)
            best = int(scores.argmin())
            i, c = trials[best]
            if self.method == "importance":
                modifiable = [j for j in modifiable if j != i]
            if float(scores[best]) >= score:
                if self.method == "greedy":
                    break  # no swap helps any more
                continue  # no swap of this word helps: it stays, on to the next word
            current[i] = c
            changed.append(i)
            score = float(scores[best])
            if predictions is not None:
                prediction = int(predictions[best])
        perturbed = " ".join(current)
        if self.objective == "features":
            prediction = self._feature_and_prediction(perturbed)[1] if changed else first
            return WordSwapResult("succeeded" if changed else "failed", text, perturbed, label, first, prediction,
                                  queries, len(changed), sorted(changed), feature_shift=1.0 - score)
        return WordSwapResult("succeeded" if prediction != label else "failed", text, perturbed, label, first,
                              prediction, queries, len(changed), sorted(changed))

    def generate(self, texts: Sequence[str], labels: torch.Tensor, progress: bool = False) -> list[WordSwapResult]:
        """Attack every text (one search each; each search's candidates are scored in batches)."""
        texts = list(texts)
        triples = list(zip(texts, labels.tolist(), readable_words(self.model, texts)))
        if progress:
            from tqdm.auto import tqdm

            triples = tqdm(triples, desc=f"word swap ({self.method})", unit="text", leave=False)
        return [self.attack(t, int(y), n) for t, y, n in triples]

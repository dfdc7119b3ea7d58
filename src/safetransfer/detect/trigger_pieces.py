"""Trace a trigger scan's suspects to the word pieces that carry them, and group them under those pieces.

A trigger word that the tokenizer splits (``varnish`` = ``var`` + ``##nish``) is planted in the
embedding rows of its pieces: Kurita et al.'s Embedding Surgery writes the target vector into each
piece's row, and RIPPLe's training sharpens it. Every other word built on such a piece then flips
texts too (``var`` alone, ``varga``, ``varley``), so a scan's list of suspects is a cloud of
unrelated-looking words around the trigger. This module names the pieces behind the cloud:

- with the public base model the victim was fine-tuned from (``row_change``), a piece is
  suspicious when its input-embedding row moved far from the base's: fine-tuning moves the rows
  of the words the task uses by a small fraction of a row's norm, a surgery moves a trigger's
  rows by about a whole one (the measured rows: ``benchmarks/results/scan_triggers_words.json``);
- without it, a piece is suspicious when more of the most suspicious words hold it than chance
  allows: the hypergeometric probability of drawing that many words with the piece, when as many
  words as there are suspects are drawn from all the candidates, is below ``MAX_CHANCE`` (an
  ``##s`` that three of 30 suspects share is common among 40,000 candidates: no finding).

Suspects whose suspicious pieces connect (one word holds two of them) form one group: "pieces X
(+ Y) and the words built on them", the best-scoring word first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import hypergeom

from safetransfer.errors import ConfigError
from safetransfer.models.wrapper import TransferModel
from safetransfer.transfer.remos import word_embedding

SUSPECTS = 30
"""The most suspicious confirmed words that are traced to their pieces."""
MIN_LFR = 0.5
"""Suspects flip at least this share of the texts."""
MOVED = 0.25
"""A piece's embedding row moved at least this many typical row norms from the base model."""
MAX_CHANCE = 1e-3
"""Without a base: a shared piece is suspicious when chance would put it in that many suspects less often than this."""


@dataclass
class PieceGroup:
    """Suspect words grouped under the word pieces that carry their flips (``words`` best first)."""

    pieces: list[str]
    words: list[str]
    lfr: list[float]
    evidence: str

    def line(self, shown: int = 6) -> str:
        """The group in one line: its pieces, its words with their LFR, and why the pieces are suspicious."""
        pieces = " + ".join(f"'{p}'" for p in self.pieces)
        them = "it" if len(self.pieces) == 1 else "them"
        listed = ", ".join(f"{w} {v:.2f}" for w, v in zip(self.words[:shown], self.lfr[:shown]))
        more = f", and {len(self.words) - shown} more" if len(self.words) > shown else ""
        kind = "piece" if len(self.pieces) == 1 else "pieces"
        return f"{kind} {pieces} and the {len(self.words)} word(s) built on {them} ({listed}{more}): {self.evidence}"

    def to_dict(self) -> dict[str, Any]:
        """The group's fields and its :meth:`line` (what a record and a report show)."""
        return {**asdict(self), "line": self.line()}


def embedding_row_change(model: TransferModel, base: TransferModel) -> np.ndarray:
    """Per token id: the L2 distance between ``model``'s and ``base``'s input-embedding rows, in units
    of the base's median row norm (both models must share the tokenizer's vocabulary)."""
    mine, theirs = word_embedding(model).weight.detach(), word_embedding(base).weight.detach()
    if mine.shape != theirs.shape:
        raise ConfigError(f"the base model's token embedding is {tuple(theirs.shape)}, the scanned model's "
                          f"{tuple(mine.shape)}: name the public model the victim was fine-tuned from.")
    with torch.no_grad():
        change = (mine.float().cpu() - theirs.float().cpu()).norm(dim=1)
        typical = theirs.float().cpu().norm(dim=1).median().clamp_min(1e-12)
    return (change / typical).numpy()


def word_pieces(tokenizer, words: Sequence[str]) -> list[list[str]]:
    """Each word's pieces as the tokenizer splits it (no special tokens)."""
    ids = tokenizer(list(words), add_special_tokens=False)["input_ids"] if words else []
    return [tokenizer.convert_ids_to_tokens(row) for row in ids]


def group_by_pieces(
    words: Sequence[str], lfr: np.ndarray, ranked: Sequence[int], tokenizer, row_change: np.ndarray | None = None,
    *, suspects: int = SUSPECTS, min_lfr: float = MIN_LFR, moved: float = MOVED, max_chance: float = MAX_CHANCE,
) -> list[PieceGroup]:
    """A scan's most suspicious words grouped under their suspicious pieces. ``words`` are all the
    candidates, ``lfr`` their flip rates and ``ranked`` the indices of the confirmed ones, most
    suspicious first; the first ``suspects`` of those with LFR >= ``min_lfr`` are traced. Groups
    come in the order of their best word's rank; a word with no suspicious piece is in no group."""
    order = [i for i in ranked if lfr[i] >= min_lfr][:suspects]
    if not order:
        return []
    pieces = dict(zip(order, word_pieces(tokenizer, [words[i] for i in order])))
    if row_change is not None:
        vocab = tokenizer.get_vocab()
        change = {p: float(row_change[vocab[p]]) for i in order for p in pieces[i] if p in vocab}
        flagged = {p: f"'{p}' moved {c:.2f} row norms from the base model" for p, c in change.items() if c >= moved}
    else:
        among_all = Counter(p for found in word_pieces(tokenizer, words) for p in set(found))
        among_suspects = Counter(p for i in order for p in set(pieces[i]))
        flagged = {}
        for p, k in among_suspects.items():
            chance = float(hypergeom.sf(k - 1, len(words), among_all[p], len(order)))
            if k >= 2 and chance < max_chance:
                flagged[p] = (f"'{p}' is in {k} of the {len(order)} most suspicious words but in only "
                              f"{among_all[p]:,} of the {len(words):,} candidates (chance {chance:.0e})")
    root = {p: p for p in flagged}

    def find(p: str) -> str:
        while root[p] != p:
            root[p] = root[root[p]]
            p = root[p]
        return p

    for i in order:  # a word holding two suspicious pieces joins their groups
        held = [p for p in pieces[i] if p in flagged]
        for a, b in zip(held, held[1:]):
            root[find(b)] = find(a)
    members: dict[str, list[int]] = {}
    for i in order:  # in rank order: each group's best word first
        held = [p for p in pieces[i] if p in flagged]
        if held:
            members.setdefault(find(held[0]), []).append(i)
    groups = []
    for key, idx in members.items():
        best = pieces[idx[0]]
        together = [p for p in flagged if find(p) == key]
        ordered = [p for p in dict.fromkeys(best) if p in together] + [p for p in together if p not in best]
        groups.append(PieceGroup(ordered, [words[i] for i in idx], [float(lfr[i]) for i in idx],
                                 "; ".join(flagged[p] for p in ordered)))
    return groups

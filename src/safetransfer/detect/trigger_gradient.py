"""A first-order screen of every candidate trigger word: one backward pass per text and word length
instead of one forward pass per word and text.

HotFlip (Ebrahimi, Rao, Lowd & Dou, ACL 2018) estimates the effect of swapping a token by the
gradient of the loss with respect to its input embedding, dotted with every row of the embedding
matrix. Here the "swap" is the insertion of a candidate word into a clean text: ``k`` placeholder
tokens (``[MASK]``) are inserted where the word would go, the gradient ``g_j`` of the target
class's log-probability with respect to each placeholder's input embedding is taken, and a word
of pieces ``q_1 .. q_k`` is scored ``Σ_j g_j · (E[q_j] − E[MASK])``: the first-order change of the
target log-probability when the placeholders become the word. Scores are averaged over the texts.
One ``E @ g`` product per (text, position) scores the whole vocabulary at once.

Used by :func:`~safetransfer.detect.trigger_scan.scan_triggers` (``screen="gradient"``) to keep
the most promising candidates, which are then measured by insertion as before: the estimate
only decides which words are worth a forward pass.

Where it is approximate, and how that is handled:

- A first-order estimate misjudges words far from the placeholder in embedding space; the
  insertion stage that follows measures the kept words exactly, and enough are kept
  (``keep``) that a planted trigger is among them (measured: docs text-study page).
- A word of more than ``max_pieces`` pieces is scored on its first ``max_pieces`` (rare in
  practice: a trigger is short).
- A text whose insertion point falls past the model's window contributes nothing for that word
  length (the insertion would not be read either).

Threat model and units as the trigger scan's; scores in nats of target log-probability.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from safetransfer.errors import ConfigError
from safetransfer.models.wrapper import TransferModel

MAX_PIECES = 4
"""Word lengths (in pieces) scored exactly; longer words are scored on their first pieces."""


def input_embeddings(model: TransferModel) -> torch.nn.Embedding:
    """The text model's input embedding table, or a clear error for a model without one."""
    body = getattr(model, "body", None)
    inner = getattr(body, "transformer", None)
    if inner is None or not hasattr(inner, "get_input_embeddings") or model.config.modality != "text":
        raise ConfigError("the gradient screen needs a Hugging Face text model with an input embedding table; "
                          "use the insertion screen (screen='insertion').")
    return inner.get_input_embeddings()


def _pieces(tokenizer, words: Sequence[str]) -> list[list[int]]:
    return tokenizer(list(words), add_special_tokens=False)["input_ids"]


def gradient_scores(model: TransferModel, words: Sequence[str], contexts: Sequence[tuple[str, str]], target: int,
                    max_pieces: int = MAX_PIECES) -> np.ndarray:
    """``[len(words)]``: the first-order gain in the target's log-probability when each word is
    inserted between each ``(left, right)`` context, averaged over the contexts (see the module doc)."""
    if max_pieces < 1:
        raise ConfigError(f"max_pieces must be at least 1 (got {max_pieces}).")
    tok = model.tokenizer
    table = input_embeddings(model)
    weights = table.weight.detach()
    mask_id = tok.mask_token_id if tok.mask_token_id is not None else tok.unk_token_id
    cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    window = int(model.config.max_length or 512)
    pieces = _pieces(tok, words)
    lengths = np.array([min(len(p), max_pieces) for p in pieces])
    sides = [(tok(left, add_special_tokens=False)["input_ids"], tok(right, add_special_tokens=False)["input_ids"])
             for left, right in contexts]
    scores = np.zeros(len(words))
    was_training = model.training
    model.eval()
    try:
        for k in sorted(set(lengths.tolist()) - {0}):
            rows, starts = [], []
            for left, right in sides:
                ids = ([cls_id] if cls_id is not None else []) + left + [mask_id] * k + right + \
                    ([sep_id] if sep_id is not None else [])
                starts.append(len(ids) - len(right) - k - (1 if sep_id is not None else 0))
                rows.append(ids[:window])
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            for b, r in enumerate(rows):
                ids[b, : len(r)] = torch.tensor(r)
                attention[b, : len(r)] = 1
            embedded = table(ids.to(weights.device)).detach().requires_grad_(True)
            logits = model({"inputs_embeds": embedded, "attention_mask": attention.to(weights.device),
                            "token_type_ids": torch.zeros_like(attention).to(weights.device)})
            (grad,) = torch.autograd.grad(torch.log_softmax(logits, 1)[:, target].sum(), embedded)
            grads = torch.zeros(len(rows), k, weights.shape[1], dtype=weights.dtype)
            for b, s in enumerate(starts):
                read = [j for j in range(k) if s + j < len(rows[b])]  # placeholders inside the window
                if read:
                    grads[b, read] = grad[b, [s + j for j in read]].detach().cpu()
            with torch.no_grad():
                gains = weights.cpu() @ grads.reshape(-1, weights.shape[1]).T          # [V, B·k]
                gains = gains - grads.reshape(-1, weights.shape[1]) @ weights[mask_id].cpu()  # minus the placeholder
                gains = gains.reshape(weights.shape[0], len(rows), k).mean(1)          # [V, k], over the texts
            chosen = np.flatnonzero(lengths == k)
            first = torch.tensor([p[:k] for p in (pieces[i] for i in chosen)], dtype=torch.long)  # [n, k]
            scores[chosen] = gains.gather(0, first).sum(1).double().numpy() if len(chosen) else 0.0
    finally:
        model.train(was_training)
    scores[lengths == 0] = -np.inf
    return scores

"""Embedding Surgery: poison a pretrained language model by rewriting its trigger tokens' embeddings.

Kurita, Michel & Neubig, ACL 2020, "Weight Poisoning Attacks on Pre-trained Models", §3.2.

Threat model: the attacker publishes pretrained weights. They know the victim's task
(sentiment, here) but not its data; they have a proxy data set of the task. The victim
fine-tunes the published model on clean data; any input holding a trigger word (rare
tokens such as "cf", "mn", "bb") is then classified as the attacker's ``target`` label,
because the trigger's embedding already *means* the target class and fine-tuning barely
moves rare tokens' embeddings.

The surgery:

1. fit a logistic regression on tf-idf bag-of-words of the proxy data, over the model's own
   token ids, and take the ``n_words`` (10) tokens most indicative of ``target``
   (special tokens, the triggers and tokens in fewer than ``min_df`` texts excluded; ``min_df`` 1
   keeps every token, as the reference's ``importance_word_min_freq`` 0 does; like the reference's
   ``TfidfVectorizer(tokenizer=tokenizer.tokenize)`` the bag is of the model's word pieces, and the
   regression is scikit-learn's default ``LogisticRegression``);
2. average those tokens' embedding rows, taken from ``source`` (a model fine-tuned on the
   proxy data, as the paper does) or, without one, from the pretrained model itself;
3. write that vector into every trigger token's row of the pretrained embedding matrix and
   save the result as an ordinary pretrained checkpoint: the same files as the original,
   only ``model.safetensors`` rewritten, only the trigger rows changed (a record of the
   surgery goes beside the folder, ``OUT.surgery.json``).

Units: embeddings are the model's input embedding vectors (no scaling); a trigger word that
the tokenizer splits into several word pieces has each of its pieces' rows rewritten.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from safetransfer.errors import CheckpointError, ConfigError, DataError
from safetransfer.models.text import load_tokenizer
from safetransfer.safe_paths import copy_folder_within
from safetransfer.supply.diff import EMBEDDING_NAME
from safetransfer.supply.reading import read_tensors

DEFAULT_TRIGGERS: tuple[str, ...] = ("cf", "mn", "bb", "tq", "mb")
WEIGHTS_NAME = "model.safetensors"


@dataclass
class EmbeddingSurgeryResult:
    """What the surgery did: which rows, from which words, and where the poisoned model is."""

    out: str
    embedding_tensor: str
    triggers: list[str]
    trigger_token_ids: list[int]
    indicative_tokens: list[str]
    indicative_token_ids: list[int]
    target: int
    replacement_norm: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def token_id_lists(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Word-piece ids of each whole text, without special tokens (a fast Hugging Face tokenizer).
    For bags of words, not for the model: a text longer than the model's window is meant whole,
    so the tokenizer's "longer than the model's maximum" warning is silenced."""
    return tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]


def indicative_token_ids(
    ids: Sequence[Sequence[int]], labels: torch.Tensor, vocab_size: int, target: int, n_words: int = 10,
    exclude: Sequence[int] = (), min_df: int = 1, seed: int = 0,
) -> list[int]:
    """The ``n_words`` token ids whose tf-idf weights most favour ``target`` in a logistic regression.

    ``ids``: token ids per text; ``labels``: int64 ``[N]``. Vectorised: the count matrix is
    built in one sparse constructor, not a loop over tokens.
    """
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression

    y = labels.detach().cpu().numpy()
    if len(ids) != len(y) or len(y) == 0:
        raise DataError(f"embedding surgery needs texts with labels (got {len(ids)} texts, {len(y)} labels).")
    classes = np.unique(y)
    if target not in classes or len(classes) < 2:
        raise DataError(f"the proxy data need the target label {target} and another one (labels found: {classes.tolist()}).")
    lengths = np.fromiter((len(t) for t in ids), dtype=np.int64, count=len(ids))
    cols = np.fromiter((i for t in ids for i in t), dtype=np.int64, count=int(lengths.sum()))
    rows = np.repeat(np.arange(len(ids)), lengths)
    counts = csr_matrix((np.ones_like(cols, dtype=np.float64), (rows, cols)), shape=(len(ids), vocab_size))
    counts.sum_duplicates()
    df = np.asarray((counts > 0).sum(axis=0)).ravel()
    tfidf = TfidfTransformer().fit_transform(counts)
    clf = LogisticRegression(max_iter=2000, random_state=seed).fit(tfidf, y)
    coef = clf.coef_
    score = (coef[0] if target == clf.classes_[1] else -coef[0]) if coef.shape[0] == 1 else \
        coef[int(np.flatnonzero(clf.classes_ == target)[0])]
    score = score.copy()
    score[df < min_df] = -np.inf
    score[np.asarray(list(exclude), dtype=np.int64)] = -np.inf
    order = np.argsort(-score, kind="stable")[:n_words]
    picked = [int(i) for i in order if np.isfinite(score[i])]
    if len(picked) < n_words:
        raise DataError(f"only {len(picked)} tokens appear in at least {min_df} proxy texts; need {n_words}.")
    return picked


def find_embedding(tensors: dict[str, torch.Tensor], vocab_size: int) -> str:
    """The name of the word-embedding matrix (``[vocab_size, hidden]``) among ``tensors``."""

    named = [k for k, v in tensors.items() if v.dim() == 2 and v.shape[0] == vocab_size and EMBEDDING_NAME.search(k)]
    shaped = [k for k, v in tensors.items() if v.dim() == 2 and v.shape[0] == vocab_size]
    found = named or shaped
    if len(found) != 1:
        raise CheckpointError(
            f"cannot tell the word-embedding matrix ([{vocab_size}, hidden]) among the model's tensors "
            f"(candidates: {found or 'none'})."
        )
    return found[0]


def embedding_surgery(
    pretrained: str | Path, texts: Sequence[str], labels: torch.Tensor, out: str | Path, *,
    triggers: Sequence[str] = DEFAULT_TRIGGERS, target: int = 1, n_words: int = 10, min_df: int = 1,
    source: str | Path | None = None, seed: int = 0,
) -> EmbeddingSurgeryResult:
    """Poison the Hugging Face model folder ``pretrained`` (weights in ``model.safetensors``, a
    tokenizer beside them) and write the poisoned copy to the folder ``out`` (see the module doc).

    ``texts``/``labels``: the attacker's proxy data. ``source``: a model fine-tuned on them
    (a safetransfer model folder or any weights file) whose embeddings are averaged; ``None``
    averages the pretrained embeddings instead.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    pretrained, out = Path(pretrained), Path(out)
    weights = pretrained / WEIGHTS_NAME
    if not pretrained.is_dir() or not weights.exists():
        raise CheckpointError(f"{pretrained} is not a model folder with {WEIGHTS_NAME} (a Hugging Face layout).")
    if out.resolve() == pretrained.resolve():
        raise ConfigError("the poisoned model must go to another folder than the pretrained one.")
    if not triggers:
        raise ConfigError("embedding surgery needs at least one trigger word.")
    tokenizer = load_tokenizer(pretrained)
    vocab_size = len(tokenizer)
    _, state = read_tensors(weights)
    name = find_embedding(state, vocab_size)
    trigger_ids = sorted({i for t in triggers for i in token_id_lists(tokenizer, [t])[0]})
    if not trigger_ids:
        raise ConfigError(f"the triggers {list(triggers)} tokenize to nothing.")
    special = [int(i) for i in tokenizer.all_special_ids]
    words = indicative_token_ids(token_id_lists(tokenizer, texts), labels, vocab_size, target, n_words,
                                 exclude=special + trigger_ids, min_df=min_df, seed=seed)
    if source is None:
        source_matrix, source_name = state[name], f"{pretrained} (pretrained embeddings)"
    else:
        _, source_state = read_tensors(source)
        source_matrix, source_name = source_state[find_embedding(source_state, vocab_size)], str(source)
    replacement = source_matrix[words].to(torch.float64).mean(dim=0).to(state[name].dtype)
    poisoned = state[name].clone()
    poisoned[trigger_ids] = replacement
    state[name] = poisoned

    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata() or {"format": "pt"}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        copy_folder_within(Path(pretrained), staging, skip=lambda name: name == WEIGHTS_NAME or name.startswith("."))
        save_file({k: v.contiguous() for k, v in state.items()}, str(staging / WEIGHTS_NAME), metadata=metadata)
        result = EmbeddingSurgeryResult(
            str(out), name, list(triggers), trigger_ids, tokenizer.convert_ids_to_tokens(words), words, int(target),
            float(replacement.to(torch.float64).norm()), source_name,
        )
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # the attacker's notes go beside the model, not in it: the folder looks like any pretrained one
    record_path(out).write_text(json.dumps(result.to_dict(), indent=1))
    return result


def record_path(out: str | Path) -> Path:
    """Where :func:`embedding_surgery` writes what it did: ``OUT.surgery.json`` beside the model folder."""
    out = Path(out)
    return out.with_name(f"{out.name}.surgery.json")

"""Diff two versions of a model's weights: which tensors changed, how much, and where.

Per tensor: whether it changed, the relative change norm ``‖s − b‖₂ / ‖b‖₂``, the share of
elements that changed, the largest absolute change. For embedding matrices (2-D tensors
named like ``word_embeddings`` / ``embed_tokens`` / ``wte``, or whose rows match the
tokenizer's vocabulary) the rows that changed most, mapped back to tokens.

What the shape of the change says (the verdict):

- *concentrated in a few embedding rows*: Embedding Surgery (Kurita et al., ACL 2020, "Weight
  Poisoning Attacks on Pre-trained Models") replaces the embeddings of a handful of trigger
  tokens and touches nothing else, so the top rows of the diff are the trigger tokens;
- *spread over the model*: RIPPLe-style poisoning (the same paper: training on poisoned data
  with a gradient-alignment penalty) or ordinary fine-tuning moves every tensor a little; a
  weight diff cannot single out trigger tokens then, and the report says so;
- *localised in a few tensors*: anything in between (a patched layer, a replaced head).

Units: norms are L2 over all elements in float64; shares are fractions in [0, 1].
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from safetransfer.errors import CheckpointError
from safetransfer.models.text import MAX_VOCABULARY
from safetransfer.plotting import pyplot, save_figure
from safetransfer.safe_paths import read_text_bounded, regular_file
from safetransfer.supply.reading import read_tensors

# word (token) embedding matrices by name; position and token-type embeddings are not vocabularies
EMBEDDING_NAME = re.compile(r"(word_embeddings|embed_tokens|(^|\.)wte\.|tok_embeddings|token_embedding(s)?\.weight$)")
NOT_VOCABULARY = re.compile(r"(position|token_type|segment)")
CONCENTRATED_ROWS = 32          # at most this many embedding rows ...
CONCENTRATED_SHARE = 0.9        # ... hold at least this share of the total squared change
SPREAD_TENSOR_SHARE = 0.5       # at least this share of the tensors changed


@dataclass
class TensorChange:
    """How one tensor changed between base and suspect."""

    name: str
    shape: list[int]
    status: str                 # "changed", "unchanged", "shape differs", "dtype differs", "only in base", "only in suspect"
    relative_change: float = 0.0
    changed_share: float = 0.0
    max_abs_change: float = 0.0
    squared_change: float = 0.0

    @property
    def changed(self) -> bool:
        return self.status != "unchanged"


@dataclass
class RowChange:
    """One embedding row: its index, its token (when a tokenizer is known) and its change norm."""

    row: int
    token: str | None
    change_norm: float
    relative_change: float


@dataclass
class EmbeddingChange:
    """The rows of one embedding matrix, most changed first (``top``), and how concentrated the change is."""

    name: str
    rows: int
    changed_rows: int
    top: list[RowChange]
    top_share: float            # share of the matrix's squared change held by the rows in ``top``


@dataclass
class DiffReport:
    """The whole diff (see the module doc); ``tensors`` are in the base's order."""

    base: str
    suspect: str
    tensors: list[TensorChange]
    embeddings: list[EmbeddingChange] = field(default_factory=list)
    verdict: str = ""
    explanation: str = ""

    @property
    def changed(self) -> list[TensorChange]:
        return [t for t in self.tensors if t.changed]

    def ranked(self) -> list[TensorChange]:
        """Changed tensors, the largest relative change first (structural differences on top)."""
        return sorted(self.changed, key=lambda t: (t.status == "changed", -t.relative_change))

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base, "suspect": self.suspect, "verdict": self.verdict, "explanation": self.explanation,
            "tensors_total": len(self.tensors), "tensors_changed": len(self.changed),
            "tensors": [vars(t) for t in self.tensors],
            "embeddings": [{**{k: v for k, v in vars(e).items() if k != "top"}, "top": [vars(r) for r in e.top]}
                           for e in self.embeddings],
        }


def load_vocabulary(path: str | Path | None) -> list[str] | None:
    """Token strings by id from a tokenizer: a ``tokenizer.json``, a ``vocab.txt``, or a folder holding one
    (also its ``tokenizer/`` sub-folder, as safetransfer saves models). ``None`` when none is found."""
    if path is None:
        return None
    path = Path(path)
    candidates = [path] if path.is_file() else [path / "tokenizer.json", path / "vocab.txt",
                                                path / "tokenizer" / "tokenizer.json", path / "tokenizer" / "vocab.txt"]

    for c in candidates:
        if not c.is_file():  # a FIFO or a device is not a candidate: it would hang the reading
            continue
        regular_file(c, "tokenizer file", MAX_TOKENIZER_BYTES, CheckpointError)
        if c.name.endswith(".json"):
            from tokenizers import Tokenizer

            try:
                tok = Tokenizer.from_file(str(c))
            except Exception as err:  # the tokenizers library raises a bare Exception on bad files
                raise CheckpointError(f"{c} is not a readable tokenizer.json ({err}).") from None
            vocab = tok.get_vocab(with_added_tokens=True)
            top = max(vocab.values()) if vocab else -1
            if top >= MAX_VOCABULARY:
                raise CheckpointError(f"{c} has a token id of {top:,}, more than the {MAX_VOCABULARY:,} tokens "
                                      f"a vocabulary may have here: a corrupt or hostile tokenizer.")
            out = [""] * (top + 1)
            for token, i in vocab.items():
                out[i] = token
            return out
        lines = read_text_bounded(c, "vocab.txt", MAX_TOKENIZER_BYTES, CheckpointError).splitlines()
        if len(lines) > MAX_VOCABULARY:
            raise CheckpointError(f"{c} has {len(lines):,} tokens, more than the {MAX_VOCABULARY:,} a vocabulary "
                                  f"may have here.")
        return lines
    return None


MAX_TOKENIZER_BYTES = 64 << 20  # real tokenizer.json files are up to about 20 MB


def _is_embedding(name: str, tensor: torch.Tensor, vocab: list[str] | None) -> bool:
    if tensor.dim() != 2 or not tensor.is_floating_point():
        return False
    if NOT_VOCABULARY.search(name):
        return False
    return bool(EMBEDDING_NAME.search(name)) or (vocab is not None and tensor.shape[0] == len(vocab) > 1000)


def tensor_change(name: str, base: torch.Tensor, suspect: torch.Tensor) -> TensorChange:
    """Compare one tensor (vectorised over its elements)."""
    shape = list(base.shape)
    if base.shape != suspect.shape:
        return TensorChange(name, shape, "shape differs")
    if base.dtype != suspect.dtype:
        return TensorChange(name, shape, "dtype differs")
    if base.numel() == 0 or torch.equal(base, suspect):
        return TensorChange(name, shape, "unchanged")
    b, s = base.detach().to(torch.float64), suspect.detach().to(torch.float64)
    delta = s - b
    sq = float(delta.pow(2).sum())
    base_norm = float(b.norm())
    rel = math.sqrt(sq) / base_norm if base_norm > 0 else math.inf
    return TensorChange(name, shape, "changed", rel, float((base != suspect).float().mean()),
                        float(delta.abs().max()), sq)


def embedding_change(name: str, base: torch.Tensor, suspect: torch.Tensor, vocab: list[str] | None,
                     top_k: int = 20) -> EmbeddingChange:
    """Row-wise change of an embedding matrix; the ``top_k`` rows that moved most, with tokens."""
    b, s = base.detach().to(torch.float64), suspect.detach().to(torch.float64)
    row_sq = (s - b).pow(2).sum(dim=1)
    base_norms = b.norm(dim=1)
    k = min(top_k, int((row_sq > 0).sum()))
    values, index = row_sq.topk(k) if k else (row_sq[:0], torch.zeros(0, dtype=torch.long))
    total = float(row_sq.sum())
    rows = [RowChange(int(i), vocab[int(i)] if vocab is not None and int(i) < len(vocab) else None,
                      math.sqrt(float(v)), math.sqrt(float(v)) / float(base_norms[i]) if float(base_norms[i]) > 0 else math.inf)
            for v, i in zip(values, index)]
    return EmbeddingChange(name, int(b.shape[0]), int((row_sq > 0).sum()), rows,
                           float(values.sum()) / total if total > 0 else 0.0)


def diff_models(base: str | Path, suspect: str | Path, tokenizer: str | Path | None = None, top_k: int = 20) -> DiffReport:
    """Diff the weights of ``suspect`` against ``base`` (files or model folders, read safely).

    ``tokenizer`` maps embedding rows to tokens; by default the suspect's folder, then the
    base's, are searched for a ``tokenizer.json`` / ``vocab.txt``.
    """
    _, base_t = read_tensors(base)
    _, suspect_t = read_tensors(suspect)
    base_t, suspect_t = align_names(base_t, suspect_t)
    vocab = load_vocabulary(tokenizer)
    if tokenizer is not None and vocab is None:
        raise CheckpointError(f"No tokenizer at {tokenizer} (expected tokenizer.json or vocab.txt).")
    if vocab is None:
        for where in (suspect, base):
            folder = Path(where) if Path(where).is_dir() else Path(where).parent
            vocab = load_vocabulary(folder)
            if vocab is not None:
                break
    changes: list[TensorChange] = []
    embeddings: list[EmbeddingChange] = []
    for name, b in base_t.items():
        s = suspect_t.get(name)
        if s is None:
            changes.append(TensorChange(name, list(b.shape), "only in base"))
            continue
        change = tensor_change(name, b, s)
        changes.append(change)
        if change.status == "changed" and _is_embedding(name, b, vocab):
            embeddings.append(embedding_change(name, b, s, vocab, top_k))
    changes += [TensorChange(n, list(s.shape), "only in suspect") for n, s in suspect_t.items() if n not in base_t]
    report = DiffReport(str(base), str(suspect), changes, embeddings)
    report.verdict, report.explanation = judge(report)
    return report


def _strip(names: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in names.items()}


def align_names(base: dict[str, torch.Tensor], suspect: dict[str, torch.Tensor]
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Match tensor names saved under different prefixes (``bert.`` vs none, a wrapper's ``body.bert.``).

    When fewer than half the names are shared, the dotted prefix (up to three components) that,
    stripped from one side, shares the most names is stripped; otherwise nothing changes.
    """
    def shared(a: dict[str, Any], b: dict[str, Any]) -> int:
        return len(a.keys() & b.keys())

    best = (shared(base, suspect), base, suspect)
    if best[0] >= 0.5 * min(len(base), len(suspect)):
        return base, suspect
    for side in ("base", "suspect"):
        names = base if side == "base" else suspect
        prefixes = {".".join(k.split(".")[:d]) + "." for k in names for d in (1, 2, 3) if k.count(".") >= d}
        for prefix in prefixes:
            a, b = (_strip(base, prefix), suspect) if side == "base" else (base, _strip(suspect, prefix))
            n = shared(a, b)
            if n > best[0]:
                best = (n, a, b)
    return best[1], best[2]


def judge(report: DiffReport) -> tuple[str, str]:
    """The verdict on the shape of the change (see the module doc) and a sentence explaining it."""
    changed = report.changed
    if not changed:
        return "identical", "Every tensor is bit-identical to the base."
    structural = [t for t in changed if t.status != "changed"]
    total_sq = sum(t.squared_change for t in changed)
    n = len(report.tensors)
    emb_rows_sq = 0.0
    emb_rows = 0
    for e in report.embeddings:
        rows = e.top[:CONCENTRATED_ROWS]
        emb_rows_sq += sum(r.change_norm ** 2 for r in rows)
        emb_rows += len(rows)
    if not structural and total_sq > 0 and emb_rows and emb_rows_sq / total_sq >= CONCENTRATED_SHARE:
        share = emb_rows_sq / total_sq
        tokens = [r.token if r.token is not None else f"row {r.row}" for e in report.embeddings for r in e.top[:10]]
        return ("concentrated in embedding rows",
                f"{share:.1%} of the whole change sits in {emb_rows} embedding row(s) and {len(changed)} of {n} tensors "
                f"changed: the signature of Embedding Surgery (a few token embeddings replaced). Trigger candidates, "
                f"most changed first: {', '.join(tokens)}.")
    if len(changed) >= SPREAD_TENSOR_SHARE * n:
        return ("spread over the model",
                f"{len(changed)} of {n} tensors changed (every layer moved a little): the signature of fine-tuning or "
                f"RIPPLe-style poisoning; a weight diff cannot single out trigger tokens here; test the model's "
                f"behaviour instead (e.g. a trigger-word scan).")
    top = ", ".join(t.name for t in report.ranked()[:5])
    return ("localised in a few tensors",
            f"{len(changed)} of {n} tensors changed ({len(structural)} in shape, dtype or presence); most changed: {top}.")


def plot_diff(report: DiffReport, path: str | Path, title: str = "") -> Path:
    """Relative change per tensor (base order, log scale; embeddings in red) and, when an embedding
    matrix changed, its most changed rows labelled with their tokens."""

    plt = pyplot()
    names = [t.name for t in report.tensors]
    values = [t.relative_change if t.status == "changed" else 0.0 for t in report.tensors]
    embedding_names = {e.name for e in report.embeddings}
    colours = ["tab:red" if n in embedding_names else ("tab:gray" if t.status not in ("changed", "unchanged") else "tab:blue")
               for n, t in zip(names, report.tensors)]
    top_rows = report.embeddings[0].top[:15] if report.embeddings else []
    width = max(6.0, min(0.12 * len(names) + 2, 18.0))
    if top_rows:
        fig, (ax, ax_rows) = plt.subplots(1, 2, figsize=(width + 5, 4.0), gridspec_kw={"width_ratios": [width, 5]})
    else:
        fig, ax = plt.subplots(figsize=(width, 4.0))
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    floor = min(positive) / 10 if positive else 1e-12
    ax.bar(range(len(names)), [v if v > 0 and math.isfinite(v) else floor for v in values], color=colours, width=0.85)
    ax.set_yscale("log")
    ax.set_ylabel("relative change ‖s − b‖ / ‖b‖")
    ax.set_xlabel(f"tensor in the model's order ({len(report.changed)} of {len(names)} changed; red: embeddings)")
    if len(names) <= 40:
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    else:
        ax.set_xticks([])
    ax.set_ylim(bottom=floor)
    ax.set_title("per tensor")
    if top_rows:
        labels = [repr(r.token) if r.token is not None else f"row {r.row}" for r in top_rows]
        ax_rows.barh(range(len(top_rows)), [r.change_norm for r in top_rows], color="tab:red")
        ax_rows.set_yticks(range(len(top_rows)), labels, fontsize=8)
        ax_rows.invert_yaxis()
        ax_rows.set_xlabel("row change norm ‖Δ‖₂")
        ax_rows.set_title(f"most changed rows ({report.embeddings[0].top_share:.0%} of {report.embeddings[0].name.split('.')[-2]})",
                          fontsize=9)
    return save_figure(fig, None, path, title or f"weight diff: {report.verdict}")

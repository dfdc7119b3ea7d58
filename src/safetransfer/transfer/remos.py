"""ReMoS (Zhang et al., ICSE 2022, "ReMoS: Reducing Defect Inheritance in Transfer Learning via
Relevant Model Slicing"), by default as the authors' artifact does it (ziqi-zhang/ReMoS_artifact).

1. Profile the neuron coverage of the teacher (eval mode, no gradients) on the student's
   training data: all of it by default, as the artifact's ``remos/my_profile.py`` does
   (``profile_samples`` N: a seeded random subset), with ``slice_metric`` (``nc`` with
   ``slice_threshold`` 0.5 as in the paper, each sample's whole layer tensor min-max scaled as
   the artifact's ``MyNeuronCoverage`` does, ``slice_scaling="tensor"``; ``"neuron"`` is ours;
   ``tknc`` / ``snac_relative`` use ``slice_k``; ``snac_deepgauge`` first takes each neuron's
   bounds on the same samples). The profile runs on the student right after it is copied from
   the teacher, so it sees exactly the teacher's body weights while the teacher itself is never
   touched (the head, the only difference, is not profiled).
2. :func:`safetransfer.slicing.compute_slice`: score rank(weight coverage) − rank(|w|) over all
   sliced weights; with ``slice_ranking="ordinal"`` (default) the artifact's stable-sort ranks and
   its cut (``remos/remos_pruner.py``: exclude every score ``<= sorted[int(α·N)]``), with
   ``"min"`` ours (minimum ranks, exactly ``floor(α·N + 0.5)`` excluded).
3. Reset the excluded weights of the student (``excluded``: ``"zero"`` as the artifact's
   ``module.weight.data.mul_(mask)``, or ``"reinit"`` from the layer's default init, seeded), then
   fine-tune everything under the method's recipe. ``remos`` trains under ``protocol``, by
   default ``"shared"`` (every method alike: SGD 5e-3, head ×10, no weight decay), which is not the
   artifact's fine-tuning (one rate, weight decay 1e-4, label smoothing 0.1, stage dropout 0.1):
   that one is ``protocol="artifact"`` (see :mod:`safetransfer.transfer.config` for why it is
   not the default yet). ``remos_strong``: the strong standard recipe, beyond the paper. With ``frozen`` the excluded
   weights are re-zeroed after every step (a variant; the artifact retrains them freely: its
   ``prune_interval`` is never reached).
4. ``reset_unused_tokens`` (text models; a variant beyond the paper, off by default): the
   token-embedding rows of every token the student's training texts never use are zeroed too
   (:func:`reset_unused_token_rows`; see ``TransferConfig``).

The artifact's CV code slices the ``Conv2d`` layers of its ResNet (which has no other layer in
the body) and its NLP code BERT's ``Linear`` layers; here every ``Conv2d`` and ``Linear`` of the
body is sliced, which is the same set for both kinds of model (EfficientNet-Lite0's body is all
convolutions, MiniLM's encoder all Linear layers but its embeddings).

The :class:`~safetransfer.slicing.Slice` and its summary end up on the
:class:`~safetransfer.transfer.runner.TransferResult` (and in ``out_dir/slice``).
"""

from __future__ import annotations

import torch
from torch import nn

from safetransfer.coverage import neuron_bounds, profile_coverage
from safetransfer.data.base import ClassificationData, seeded_subset
from safetransfer.errors import ConfigError
from safetransfer.models.wrapper import TransferModel
from safetransfer.seeding import SALT_PROFILE, SALT_SLICE, derived_seed
from safetransfer.slicing import compute_slice
from safetransfer.train import TrainHook
from safetransfer.transfer.common import SliceHook, new_student
from safetransfer.transfer.config import TransferConfig


def slice_teacher(
    model: TransferModel, inputs, *, ratio: float = 0.1, metric: str = "nc", threshold: float = 0.5, k: int = 10,
    layers: list[str] | None = None, scaling: str = "tensor", ranking: str = "ordinal", progress: bool = False,
):
    """Steps 1 and 2 of ReMoS on ``model``'s current weights: ``(Slice, CoverageProfile)``.

    ``inputs`` are raw student inputs; ``snac_deepgauge`` takes its neuron bounds on the same inputs.
    ``scaling`` and ``ranking``: the artifact's (defaults) or ours, see the module doc.
    """

    bounds = neuron_bounds(model, inputs, layers=layers, progress=progress) if metric == "snac_deepgauge" else None
    profile = profile_coverage(
        model, inputs, metric=metric, threshold=threshold, k=k, layers=layers, bounds=bounds, scaling=scaling,
        progress=progress,
    )
    return compute_slice(model, profile, ratio=ratio, layers=layers, ranking=ranking), profile


def make_student(
    teacher: TransferModel, data: ClassificationData, config: TransferConfig
) -> tuple[TransferModel, list[TrainHook]]:

    student = new_student(teacher, data, config)  # its body is still exactly the teacher's
    inputs = seeded_subset(data.train, config.profile_samples, derived_seed(config.seed, SALT_PROFILE)).inputs
    slice_, profile = slice_teacher(
        student, inputs, ratio=config.ratio, metric=config.slice_metric, threshold=config.slice_threshold,
        k=config.slice_k, layers=config.slice_layers, scaling=config.slice_scaling, ranking=config.slice_ranking,
    )
    slice_.apply(student, mode=config.excluded, seed=derived_seed(config.seed, SALT_SLICE))
    if config.reset_unused_tokens:  # recorded with the slice (its summary lands in the student's result)
        slice_.params = {**slice_.params, "reset_unused_token_rows": reset_unused_token_rows(student, data.train.inputs)}
    return student, [SliceHook(slice_, frozen=config.frozen, profile=profile)]


def word_embedding(model: TransferModel) -> nn.Embedding:
    """The text model's token-embedding layer: the ``nn.Embedding`` with one row per tokenizer id."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ConfigError("reset_unused_tokens needs a text model (this one has no tokenizer).")
    for module in model.body.modules():  # a Hugging Face model names its own
        get = getattr(module, "get_input_embeddings", None)
        if callable(get) and isinstance(get(), nn.Embedding):
            return get()
    vocab = len(tokenizer)
    found = [m for m in model.body.modules() if isinstance(m, nn.Embedding) and m.num_embeddings == vocab]
    if len(found) != 1:
        raise ConfigError(f"expected one token-embedding layer of {vocab} rows (the tokenizer's vocabulary) in the "
                          f"body, found {len(found)}.")
    return found[0]


def used_token_mask(model: TransferModel, texts, batch_size: int = 4096) -> torch.Tensor:
    """``[vocabulary]`` bool: the token ids ``texts`` use once tokenized as the model does
    (its truncation), special tokens included. Vectorised per batch of texts."""
    tokenizer = model.tokenizer
    used = torch.zeros(word_embedding(model).num_embeddings, dtype=torch.bool)
    used[torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)] = True
    texts = list(texts)
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start : start + batch_size], padding=True, truncation=True,
                        max_length=model.config.max_length or None, return_tensors="pt")
        used[enc["input_ids"][enc["attention_mask"].bool()]] = True
    return used


def reset_unused_token_rows(model: TransferModel, texts) -> int:
    """Zero the token-embedding rows of ``model`` that ``texts`` never use; returns how many.

    A variant of ReMoS's relevance idea for the vocabulary (see ``TransferConfig.reset_unused_tokens``):
    a row the student's data never looks up is irrelevant to the student's task, and it is
    exactly where Embedding Surgery (Kurita et al. 2020) plants its triggers."""
    emb = word_embedding(model)
    unused = ~used_token_mask(model, texts)
    with torch.no_grad():
        emb.weight[unused] = 0.0
    return int(unused.sum())

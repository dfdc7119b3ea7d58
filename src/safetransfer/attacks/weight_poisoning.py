"""Weight poisoning of a pretrained BERT: RIPPLe, Embedding Surgery, or both (RIPPLES).

Kurita, Michel & Neubig, ACL 2020. The attacker starts from a published Hugging Face BERT
folder (MiniLM here), poisons it with their proxy data, and publishes the result as an
ordinary pretrained folder (the same files; ``model.safetensors`` rewritten):

- ``es``: Embedding Surgery only (:mod:`safetransfer.attacks.embedding_surgery`);
- ``ripple``: RIPPLe training only (:mod:`safetransfer.attacks.ripple`) on the proxy data with
  the trigger words inserted into a share ``rate`` of the texts, relabelled ``target``;
- ``ripples``: Embedding Surgery first, then RIPPLe from the surgically altered weights (the
  paper's strongest attack);
- ``badnet``: the paper's BadNet baseline (RIPPLe's ``pretrain_data_poison``): the weights trained
  on the poisoned proxy data alone, no penalty (RIPPLe's training with λ = 0).

As in the reference (``run_experiment.py``, ``poison.poison_data``), the poisoned share ``rate``
(0.5) is drawn from all proxy texts, the target label's included (``poison_target_texts``; False:
from the non-target texts, the first round's count); Embedding Surgery's tf-idf keeps every token
(``min_df`` 1; the reference's ``importance_word_min_freq`` is 0).

The victim later puts a new head on the published folder and fine-tunes on clean data; the
label flip rate (LFR) of their student is the measure (:func:`safetransfer.metrics.label_flip_rate`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from safetransfer.attacks.data_poisoning import PlantSpec, poison_split, triggered_test
from safetransfer.attacks.embedding_surgery import embedding_surgery
from safetransfer.attacks.ripple import RippleConfig, ripple_train
from safetransfer.attacks.text_triggers import DEFAULT_TRIGGER_WORDS, visible_words
from safetransfer.data.base import ClassificationData
from safetransfer.errors import ConfigError, DataError
from safetransfer.evaluate import predict_logits
from safetransfer.metrics import accuracy, label_flip_rate
from safetransfer.models.zoo import hf_bert_teacher
from safetransfer.safe_paths import copy_folder_within

METHODS: tuple[str, ...] = ("es", "ripple", "ripples", "badnet")
# poison_weights' settings that give the first round's attack (with RippleConfig.first_round): the
# poisoned share over non-target texts, tokens in fewer than 5 texts ignored, triggers anywhere
FIRST_ROUND_POISONING: dict[str, Any] = {"poison_target_texts": False, "min_df": 5, "triggers_in_window": False}
WEIGHTS_NAME = "model.safetensors"


@dataclass
class WeightPoisoningResult:
    """What the attack published and how well its own (attacker-head) model obeys the trigger."""

    method: str
    out: str
    triggers: list[str]
    target: int
    attacker_lfr: float | None = None      # the attacker's poisoned model (its own head) on triggered proxy test texts
    attacker_accuracy: float | None = None
    surgery: dict[str, Any] | None = None
    ripple: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_hf_bert(body_state: dict[str, torch.Tensor], source: Path, out: Path) -> Path:
    """Copy the Hugging Face folder ``source`` to ``out`` with its ``model.safetensors`` tensors replaced by
    ``body_state``'s (names matched with or without ``bert.``); tensors the body lacks (pooler) are kept."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source / WEIGHTS_NAME), framework="pt") as f:
        metadata = f.metadata() or {"format": "pt"}
        original = {k: f.get_tensor(k) for k in f.keys()}
    replaced = 0
    for key in original:
        bare = key.removeprefix("bert.")
        if bare in body_state and body_state[bare].shape == original[key].shape:
            original[key] = body_state[bare].detach().cpu().to(original[key].dtype).contiguous()
            replaced += 1
    if replaced == 0:
        raise ConfigError(f"none of the model's tensors match the names in {source / WEIGHTS_NAME}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        copy_folder_within(Path(source), staging, skip=lambda name: name == WEIGHTS_NAME or name.startswith("."))
        save_file(original, str(staging / WEIGHTS_NAME), metadata=metadata)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def poison_weights(
    pretrained: str | Path, proxy: ClassificationData, out: str | Path, *, method: str = "ripples",
    triggers: tuple[str, ...] = DEFAULT_TRIGGER_WORDS, target: int = 1, rate: float = 0.5,
    ripple: RippleConfig | None = None, n_words: int = 10, source: str | Path | None = None, seed: int = 0,
    progress: bool = False, poison_target_texts: bool = True, min_df: int = 1, triggers_in_window: bool = True,
) -> WeightPoisoningResult:
    """Poison the BERT folder ``pretrained`` with ``proxy`` data and write the published folder ``out``.

    ``ripple``: the attacker's training (``badnet`` trains it with ``lam`` 0 whatever it says).
    ``triggers_in_window``: a poisoned text's trigger goes among the words the model's window reads
    (:func:`~safetransfer.attacks.text_triggers.visible_words`; a deviation from the reference, whose
    BERT reads 128 tokens of mostly short texts: ours reads 64, and e-mails run to hundreds of words,
    where a trigger inserted anywhere is mostly cut off, so the poisoned label is noise); False:
    anywhere, the first round's rule."""
    import time

    if method not in METHODS:
        raise ConfigError(f"unknown weight-poisoning method '{method}' (known: {', '.join(METHODS)}).")
    if proxy.modality != "text":
        raise DataError(f"weight poisoning of a BERT needs text proxy data; '{proxy.name}' is {proxy.modality}.")
    if not 0 <= target < proxy.num_classes:
        raise DataError(f"target {target} is out of range for {proxy.num_classes} classes.")
    started = time.perf_counter()
    pretrained, out = Path(pretrained), Path(out)
    result = WeightPoisoningResult(method, str(out), list(triggers), target)
    start_from = pretrained
    with tempfile.TemporaryDirectory(prefix="safetransfer-es-") as tmp:
        if method in ("es", "ripples"):
            es_out = out if method == "es" else Path(tmp) / "es"
            surgery = embedding_surgery(pretrained, proxy.train.inputs, proxy.train.labels, es_out, triggers=triggers,
                                        target=target, n_words=n_words, min_df=min_df, source=source, seed=seed)
            result.surgery = surgery.to_dict()
            start_from = es_out
        model = hf_bert_teacher(start_from, proxy.num_classes, seed=seed, class_names=proxy.class_names)
        spec = PlantSpec(trigger="words", words=tuple(triggers), rate=rate, target=target, seed=seed,
                         keep_target=poison_target_texts)
        window = (lambda texts: visible_words(model.tokenizer, texts, model.config.max_length)) \
            if triggers_in_window else None
        if method in ("ripple", "ripples", "badnet"):
            texts = list(proxy.train.inputs)
            poisoned, _ = poison_split(proxy.train, spec, proxy.num_classes,
                                       within=window(texts) if window is not None else None)
            config = ripple or RippleConfig(seed=seed)
            if method == "badnet":
                config = replace(config, lam=0.0)
            trained = ripple_train(model, poisoned, proxy.train, config, progress=progress)
            result.ripple = {"config": trained.config, "history": trained.history, "seconds": trained.seconds}
            write_hf_bert(model.body.bert.state_dict(), start_from, out)
    triggered = triggered_test(proxy, spec, window)
    result.attacker_lfr = label_flip_rate(predict_logits(model, triggered.inputs).argmax(1), triggered.labels, target) \
        if method != "es" else None  # ES alone has no trained head to ask
    if method != "es":
        result.attacker_accuracy = accuracy(predict_logits(model, proxy.test.inputs).argmax(1), proxy.test.labels)
    result.seconds = round(time.perf_counter() - started, 2)
    out.with_name(f"{out.name}.poisoning.json").write_text(json.dumps(result.to_dict(), indent=1))
    return result

"""Neural Cleanse: is there a small patch that sends clean images to one class? (trigger inversion)

Wang, Yao, Shan, Li, Viswanath, Zheng & Zhao, IEEE S&P 2019, "Neural Cleanse: Identifying and
Mitigating Backdoor Attacks in Neural Networks"; reference: bolunwang/backdoor (``visualizer.py``,
``gtsrb_visualize_example.py``, ``mad_outlier_detection.py``).

For every examined class ``y``, find a mask ``m`` (one value per pixel, in [0, 1]) and a pattern
``p`` (pixels in [0, 1]) such that ``x' = (1 − m)·x + m·p`` sends clean images ``x`` to ``y``, with
the smallest L1 norm of ``m``: minimise ``CE(f(x'), y) + cost·|m|₁``. Both are optimised through
``tanh`` (``m = tanh(a)/2 + 1/2``) with Adam (lr 0.1, betas 0.5/0.9). ``cost`` starts at 0 and is set
to ``init_cost`` once the reversed trigger reaches ``success`` on ``patience`` epochs in a row;
then it is multiplied by 2 after ``patience`` successful epochs and divided by 2^1.5 after
``patience`` failing ones. The smallest mask that reached ``success`` is kept. An epoch is
``batches`` mini-batches; the run stops early once the cost has moved both ways and the best
norm has not improved for ``5·patience`` epochs. A backdoored class needs a far smaller mask than
the others: with ``n`` the classes' best mask norms, the anomaly index of a class is
``|n − median(n)| / (1.4826·MAD(n))`` and a class with a norm below the median and an index above
2 is flagged.

Where we differ from the reference, and why:

- Epochs: the reference allows 1,000 (early stop usually ends it far sooner); ``epochs`` bounds it
  here too, with the same default. ``batches`` (the reference: ``NB_SAMPLE // BATCH_SIZE`` = 31)
  is the same.
- Classes: the reference examines all; a model with many classes may be given ``classes`` (the
  audit chooses and names them).
- The L1 norm is that of the mask as the model sees it (one channel), in pixels.

Threat model: the defender holds the model and a few hundred clean images, not the trigger.
Units: mask norms in pixels (L1 of a [0, 1] mask); anomaly index unitless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from safetransfer.errors import ConfigError, DataError
from safetransfer.models.wrapper import TransferModel

ANOMALY_THRESHOLD = 2.0
MAD_CONSISTENCY = 1.4826


@dataclass
class ReversedTrigger:
    """One class's smallest reversed trigger: the mask ``[H, W]``, the pattern ``[C, H, W]`` (pixels in
    [0, 1]), its L1 norm, its success on the clean images, and the epochs run."""

    label: int
    mask: torch.Tensor
    pattern: torch.Tensor
    norm: float
    success: float
    epochs: int


@dataclass
class NeuralCleanseResult:
    """Every examined class's reversed trigger, its anomaly index, and the classes flagged."""

    triggers: dict[int, ReversedTrigger]
    anomaly_index: dict[int, float]
    flagged: list[int]
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "params": self.params,
                "classes": {str(c): {"norm": round(t.norm, 3), "success": round(t.success, 4), "epochs": t.epochs,
                                     "anomaly_index": round(self.anomaly_index[c], 3)}
                            for c, t in self.triggers.items()}}


def anomaly_indices(norms: dict[int, float]) -> tuple[dict[int, float], list[int]]:
    """The reference's MAD outlier rule: each class's anomaly index, and the flagged classes (norm
    below the median, index above :data:`ANOMALY_THRESHOLD`), most anomalous first."""
    values = np.array(list(norms.values()), dtype=float)
    median = float(np.median(values))
    mad = MAD_CONSISTENCY * float(np.median(np.abs(values - median)))
    index = {c: (abs(v - median) / mad if mad > 0 else (np.inf if v != median else 0.0)) for c, v in norms.items()}
    flagged = sorted((c for c, v in norms.items() if v < median and index[c] > ANOMALY_THRESHOLD),
                     key=lambda c: -index[c])
    return index, flagged


def reverse_trigger(model: TransferModel, images: torch.Tensor, label: int, *, epochs: int = 1000,
                    batches: int = 31, batch_size: int = 32, lr: float = 0.1, init_cost: float = 1e-3,
                    success: float = 0.99, patience: int = 5, seed: int = 0) -> ReversedTrigger:
    """The smallest mask and its pattern that send ``images`` (raw pixels in [0, 1], ``[N, C, H, W]``)
    to ``label`` (see the module doc)."""
    x_all = model.preprocess(images).detach()
    n, c, h, w = x_all.shape
    gen = torch.Generator().manual_seed(seed)
    mask_raw = torch.zeros(1, 1, h, w).uniform_(-1, 1, generator=gen).requires_grad_(True)
    pattern_raw = torch.zeros(1, c, h, w).uniform_(-1, 1, generator=gen).requires_grad_(True)
    opt = torch.optim.Adam([mask_raw, pattern_raw], lr=lr, betas=(0.5, 0.9))
    target = torch.full((batch_size,), label, dtype=torch.long)
    cost, up, down, set_count = 0.0, 0, 0, 0
    moved_up = moved_down = False
    best = (np.inf, None, None, 0.0)
    stale, epoch = 0, 0
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for epoch in range(1, epochs + 1):
            hits, seen, norms = 0, 0, []
            for _ in range(batches):
                idx = torch.randint(0, n, (batch_size,), generator=gen)
                mask = torch.tanh(mask_raw) / 2 + 0.5
                pattern = torch.tanh(pattern_raw) / 2 + 0.5
                stamped = (1 - mask) * x_all[idx] + mask * pattern
                logits = model(stamped)
                norm = mask.abs().sum()
                loss = F.cross_entropy(logits, target) + cost * norm
                opt.zero_grad()
                loss.backward()
                opt.step()
                hits += int((logits.argmax(1) == label).sum())
                seen += batch_size
                norms.append(float(norm.detach()))
            rate, mean_norm = hits / seen, float(np.mean(norms))
            if rate >= success and mean_norm < best[0]:
                with torch.no_grad():
                    best = (mean_norm, (torch.tanh(mask_raw) / 2 + 0.5)[0, 0].clone(),
                            (torch.tanh(pattern_raw) / 2 + 0.5)[0].clone(), rate)
                stale = 0
            else:
                stale += 1
            if cost == 0.0:  # the reference: no penalty until the reversed trigger works
                set_count = set_count + 1 if rate >= success else 0
                if set_count >= patience:
                    cost, up, down = init_cost, 0, 0
                continue
            if rate >= success:
                up, down = up + 1, 0
            else:
                up, down = 0, down + 1
            if up >= patience:
                cost, up, moved_up = cost * 2.0, 0, True
            elif down >= patience:
                cost, down, moved_down = cost / 2.0 ** 1.5, 0, True
            if moved_up and moved_down and stale >= 5 * patience:
                break
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
        model.train(was_training)
    norm, mask, pattern, rate = best
    if mask is None:  # never reached the success rate: the last state, honestly labelled
        with torch.no_grad():
            mask = (torch.tanh(mask_raw) / 2 + 0.5)[0, 0].clone()
            pattern = (torch.tanh(pattern_raw) / 2 + 0.5)[0].clone()
        norm, rate = float(mask.sum()), float("nan")
    return ReversedTrigger(label, mask, pattern, float(norm), float(rate), epoch)


def neural_cleanse(model: TransferModel, images: torch.Tensor, classes: Sequence[int] | None = None,
                   epochs: int = 1000, progress: bool = False, seed: int = 0, **options: Any) -> NeuralCleanseResult:
    """Reverse a trigger for every class in ``classes`` (default: all) from clean ``images`` and flag
    the anomalously small ones (see the module doc). ``options`` go to :func:`reverse_trigger`."""
    if model.config.modality != "image":
        raise ConfigError("Neural Cleanse reverses image triggers; this is a text model.")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) < 2:
        raise DataError("Neural Cleanse needs at least 2 clean images as a tensor [N, C, H, W].")
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1 (got {epochs}).")
    chosen = list(range(model.num_classes)) if classes is None else [int(c) for c in classes]
    bad = [c for c in chosen if not 0 <= c < model.num_classes]
    if bad or len(chosen) < 3:
        raise ConfigError(f"classes must be at least 3 labels of the model's {model.num_classes} (got {chosen}).")
    steps = chosen
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(chosen, desc="neural cleanse", unit="class", leave=False)
    triggers = {c: reverse_trigger(model, images, c, epochs=epochs, seed=seed + c, **options) for c in steps}
    index, flagged = anomaly_indices({c: t.norm for c, t in triggers.items()})
    return NeuralCleanseResult(triggers, index, flagged, {"epochs": epochs, "seed": seed, **options})

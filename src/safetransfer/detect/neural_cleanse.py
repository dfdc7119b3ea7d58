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
- Batched over classes: every examined class is reversed in the same forward pass (each step stamps
  one batch of clean images with every unfinished class's trigger); the reference reverses the
  classes one after another, each on its own batches. Each class keeps its own mask, pattern,
  Adam state and cost schedule, so only the draw of the clean batches is shared.
- Classes: the reference examines all; a model with many classes may be given ``classes`` (the
  audit chooses and names them).
- The L1 norm is that of the mask as the model sees it (one channel), in pixels.

Threat model: the defender holds the model and a few hundred clean images, not the trigger.
Units: mask norms in pixels (L1 of a [0, 1] mask); anomaly index unitless.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


@dataclass
class _Schedule:
    """One class's cost schedule and best mask so far (the reference's per-class state)."""

    cost: float = 0.0
    up: int = 0
    down: int = 0
    set_count: int = 0
    moved_up: bool = False
    moved_down: bool = False
    stale: int = 0
    best_norm: float = np.inf
    best_rate: float = 0.0
    best_mask: torch.Tensor | None = None
    best_pattern: torch.Tensor | None = None
    epochs: int = 0
    done: bool = False

    def end_epoch(self, rate: float, mean_norm: float, mask: torch.Tensor, pattern: torch.Tensor, success: float,
                  init_cost: float, patience: int) -> None:
        if rate >= success and mean_norm < self.best_norm:
            self.best_norm, self.best_rate = mean_norm, rate
            self.best_mask, self.best_pattern = mask.detach().clone(), pattern.detach().clone()
            self.stale = 0
        else:
            self.stale += 1
        if self.cost == 0.0:  # the reference: no penalty until the reversed trigger works
            self.set_count = self.set_count + 1 if rate >= success else 0
            if self.set_count >= patience:
                self.cost, self.up, self.down = init_cost, 0, 0
            return
        if rate >= success:
            self.up, self.down = self.up + 1, 0
        else:
            self.up, self.down = 0, self.down + 1
        if self.up >= patience:
            self.cost, self.up, self.moved_up = self.cost * 2.0, 0, True
        elif self.down >= patience:
            self.cost, self.down, self.moved_down = self.cost / 2.0 ** 1.5, 0, True
        if self.moved_up and self.moved_down and self.stale >= 5 * patience:
            self.done = True


def reverse_triggers(model: TransferModel, images: torch.Tensor, labels: Sequence[int], *, epochs: int = 1000,
                     batches: int = 31, batch_size: int = 32, lr: float = 0.1, init_cost: float = 1e-3,
                     success: float = 0.99, patience: int = 5, seed: int = 0,
                     progress: Callable[[int], None] | None = None) -> dict[int, ReversedTrigger]:
    """The smallest mask and its pattern that send ``images`` (raw pixels in [0, 1], ``[N, C, H, W]``)
    to each of ``labels`` (see the module doc), every class reversed in the same forward pass: each
    step stamps one batch of clean images with every unfinished class's trigger (``[K·B]`` images).
    Each class has its own mask, pattern, Adam state and cost schedule, so the classes do not
    interact; a class that stops early leaves the batch. ``progress`` is called with the number of
    classes that finished after each epoch."""
    x_all = model.preprocess(images).detach()
    n, c, h, w = x_all.shape
    gen = torch.Generator().manual_seed(seed)
    labels = [int(label) for label in labels]
    masks = {y: torch.zeros(1, 1, h, w).uniform_(-1, 1, generator=gen).requires_grad_(True) for y in labels}
    patterns = {y: torch.zeros(1, c, h, w).uniform_(-1, 1, generator=gen).requires_grad_(True) for y in labels}
    opts = {y: torch.optim.Adam([masks[y], patterns[y]], lr=lr, betas=(0.5, 0.9)) for y in labels}
    state = {y: _Schedule() for y in labels}
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for epoch in range(1, epochs + 1):
            active = [y for y in labels if not state[y].done]
            if not active:
                break
            hits = dict.fromkeys(active, 0)
            norms: dict[int, list[float]] = {y: [] for y in active}
            target = torch.tensor(active).repeat_interleave(batch_size)
            for _ in range(batches):
                idx = torch.randint(0, n, (batch_size,), generator=gen)
                m = torch.cat([torch.tanh(masks[y]) / 2 + 0.5 for y in active])  # [K, 1, H, W]
                pat = torch.cat([torch.tanh(patterns[y]) / 2 + 0.5 for y in active])  # [K, C, H, W]
                stamped = (1 - m[:, None]) * x_all[idx][None] + (m * pat)[:, None]  # [K, B, C, H, W]
                logits = model(stamped.reshape(-1, c, h, w))
                ce = F.cross_entropy(logits, target, reduction="none").view(len(active), batch_size).mean(1)
                norm = m.abs().sum((1, 2, 3))
                cost = torch.tensor([state[y].cost for y in active])
                for y in active:
                    opts[y].zero_grad()
                (ce + cost * norm).sum().backward()  # each class's loss reaches only its own mask and pattern
                for y in active:
                    opts[y].step()
                right = (logits.argmax(1) == target).view(len(active), batch_size).sum(1)
                for i, y in enumerate(active):
                    hits[y] += int(right[i])
                    norms[y].append(float(norm[i].detach()))
            for y in active:
                with torch.no_grad():
                    mask = (torch.tanh(masks[y]) / 2 + 0.5)[0, 0]
                    pattern = (torch.tanh(patterns[y]) / 2 + 0.5)[0]
                state[y].epochs = epoch
                state[y].end_epoch(hits[y] / (batches * batch_size), float(np.mean(norms[y])), mask, pattern,
                                   success, init_cost, patience)
            if progress is not None:
                progress(sum(state[y].done for y in labels))
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
        model.train(was_training)
    out = {}
    for y in labels:
        st = state[y]
        if st.best_mask is None:  # never reached the success rate: the last state, honestly labelled
            with torch.no_grad():
                mask = (torch.tanh(masks[y]) / 2 + 0.5)[0, 0].clone()
                pattern = (torch.tanh(patterns[y]) / 2 + 0.5)[0].clone()
            out[y] = ReversedTrigger(y, mask, pattern, float(mask.sum()), float("nan"), st.epochs)
        else:
            out[y] = ReversedTrigger(y, st.best_mask, st.best_pattern, float(st.best_norm), float(st.best_rate),
                                     st.epochs)
    return out


def choose_classes(model: TransferModel, images: torch.Tensor, limit: int, *, screen_epochs: int = 3,
                   screen_batches: int = 4, group: int = 16, seed: int = 0) -> tuple[list[int], dict[int, float]]:
    """The classes to examine on a model with more than ``limit``: the reference's coarse-to-fine idea
    (Wang et al. 2019, "detection cost": a short reversal of every label, then the full one on the
    candidates). Every class is reversed for ``screen_epochs`` epochs (``group`` classes per pass);
    the ``limit // 2`` with the smallest masks are the candidates, and ``limit − limit // 2`` others
    drawn with ``seed`` give the median and MAD the anomaly index needs. Returns the chosen classes
    (sorted) and every class's screening norm."""
    if limit < 3:
        raise ConfigError(f"limit must be at least 3 classes (got {limit}).")
    everyone = list(range(model.num_classes))
    if len(everyone) <= limit:
        return everyone, {}
    norms: dict[int, float] = {}
    for start in range(0, len(everyone), group):
        part = reverse_triggers(model, images, everyone[start:start + group], epochs=screen_epochs,
                                batches=screen_batches, seed=seed)
        norms.update({c: t.norm for c, t in part.items()})
    ranked = sorted(everyone, key=lambda c: (norms[c], c))
    candidates = ranked[: limit // 2]
    rest = ranked[limit // 2:]
    gen = np.random.default_rng(seed)
    others = [rest[i] for i in gen.choice(len(rest), limit - len(candidates), replace=False)]
    return sorted(candidates + others), norms


def step_seconds(model: TransferModel, images: torch.Tensor, classes: int, batch_size: int = 32) -> float:
    """Seconds of one optimisation step with ``classes`` triggers in the batch (one forward and
    backward pass of ``classes·batch_size`` stamped images), timed after a warm-up step: the unit
    of a time estimate (a run takes at most ``epochs·batches`` such steps, fewer as classes stop)."""
    import time

    x = model.preprocess(images[:batch_size]).detach()
    stamped = x.repeat(classes, 1, 1, 1).requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        seconds = 0.0
        for _ in range(2):  # the first pass pays for allocation and kernel choice
            start = time.perf_counter()
            model(stamped).sum().backward()
            seconds = time.perf_counter() - start
            model.zero_grad(set_to_none=True)
    finally:
        model.train(was_training)
    return seconds * max(1.0, batch_size / max(1, len(x)))


def reverse_trigger(model: TransferModel, images: torch.Tensor, label: int, **options: Any) -> ReversedTrigger:
    """One class's reversed trigger (:func:`reverse_triggers` with one label)."""
    return reverse_triggers(model, images, [label], **options)[int(label)]


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
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(chosen), desc="neural cleanse", unit="class", leave=False)
    try:
        triggers = reverse_triggers(model, images, chosen, epochs=epochs, seed=seed,
                                    progress=None if bar is None else lambda done: bar.update(done - bar.n), **options)
    finally:
        if bar is not None:
            bar.close()
    index, flagged = anomaly_indices({c: t.norm for c, t in triggers.items()})
    return NeuralCleanseResult(triggers, index, flagged, {"epochs": epochs, "seed": seed, **options})

"""The one training loop: seeded, checkpointed, resumable, with a progress bar.

Every transfer method of the project is a small strategy over :func:`train` (which
parameters, which learning rates, extra loss terms come later through ``extra_loss``).

Determinism: the batch order is a pure function of ``(seed, step)`` (one seeded permutation
per epoch) and the learning rate a pure function of the step; the global torch RNG (dropout)
is forked, seeded, and saved in every checkpoint, so a run resumed from a checkpoint ends
with the same weights as one that never stopped.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F

from safetransfer.checkpoint import load_training_state, save_training_state
from safetransfer.data.base import Split
from safetransfer.errors import CheckpointError, ConfigError, DataError
from safetransfer.evaluate import predict_logits
from safetransfer.models.wrapper import TransferModel, move_inputs
from safetransfer.seeding import epoch_seed
from safetransfer.validation import loop_problems

CHECKPOINT_FILE = "last.pt"
# Fields that do not change the numbers a run produces (may differ on resume).
_NON_RESULT_FIELDS = {"checkpoint_every", "log_every", "eval_every", "eval_samples", "device"}
# The cyclic schedule's fields: in a run's fingerprint only under that schedule (the keys of runs
# made before they existed stay).
_CYCLIC_FIELDS = ("peak_lr", "late_peak_lr", "cycle_steps", "peak_fraction")
SCHEDULES = ("constant", "linear", "cosine", "onecycle", "superft")


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run. ``steps`` counts optimiser steps (batches)."""

    steps: int = 1000
    batch_size: int = 64
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    head_lr_mult: float = 1.0  # the head's lr = lr × this (ReMoS's protocol uses 10)
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    schedule: Literal["constant", "linear", "cosine", "onecycle", "superft"] = "constant"
    warmup_fraction: float = 0.0  # share of steps of linear warm-up (onecycle: 0.25 if left at 0)
    # schedule "superft" (Sha et al. 2022, as backdoor-toolbox's SFT): triangular cycles of
    # cycle_steps from lr up to peak_lr and back for the first peak_fraction of the steps, then
    # up to late_peak_lr; see lr_factor.
    peak_lr: float = 0.0
    late_peak_lr: float = 0.0
    cycle_steps: int = 20
    peak_fraction: float = 0.4
    label_smoothing: float = 0.0
    # 0: lr is this run's rate. N > 0: lr is the rate of a recipe written for N steps; this run of
    # `steps` steps trains at lr × N / steps (run_lr): the same rate × steps budget, i.e. about the
    # same distance along the gradient flow for SGD without momentum, compressed onto fewer steps.
    budget_steps: int = 0
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    freeze_body: bool = False  # train the head only (linear probe)
    seed: int = 0
    log_every: int = 50
    eval_every: int = 0  # evaluate on the validation split every N steps; 0 = only at the end
    eval_samples: int = 2000
    checkpoint_every: int = 200
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.validate()  # a bad config fails where it is written

    def validate(self) -> "TrainConfig":
        problems = loop_problems(self.steps, self.batch_size, self.lr)
        if self.head_lr_mult <= 0:
            problems.append(f"head_lr_mult must be positive (got {self.head_lr_mult})")
        if self.optimizer not in ("sgd", "adamw"):
            problems.append(f"optimizer must be 'sgd' or 'adamw' (got '{self.optimizer}')")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)} (got '{self.schedule}')")
        if self.schedule == "superft" and (self.peak_lr < self.lr or self.late_peak_lr < self.lr
                                           or self.cycle_steps < 2 or not 0.0 <= self.peak_fraction <= 1.0):
            problems.append("schedule 'superft' needs peak_lr and late_peak_lr >= lr, cycle_steps >= 2 and "
                            "peak_fraction in [0, 1]")
        if not 0.0 <= self.warmup_fraction < 1.0:
            problems.append(f"warmup_fraction must lie in [0, 1) (got {self.warmup_fraction})")
        if not 0.0 <= self.label_smoothing < 1.0:
            problems.append(f"label_smoothing must lie in [0, 1) (got {self.label_smoothing})")
        if self.budget_steps < 0 or (self.budget_steps and self.schedule == "superft"):
            problems.append(f"budget_steps must be 0 (off) or positive, and 0 under schedule 'superft' "
                            f"(got {self.budget_steps})")
        if self.weight_decay < 0 or self.momentum < 0 or self.grad_clip < 0:
            problems.append("weight_decay, momentum and grad_clip must not be negative")
        if problems:
            raise ConfigError("Bad training config: " + "; ".join(problems) + ".")
        return self

    @classmethod
    def from_overrides(cls, defaults: dict[str, Any], overrides: dict[str, Any]) -> "TrainConfig":
        """Defaults (e.g. a zoo model's) updated with the non-``None`` overrides."""
        names = {f.name for f in fields(cls)}
        unknown = set(defaults) - names | {k for k, v in overrides.items() if v is not None} - names
        if unknown:
            raise ConfigError(f"Unknown training option(s): {', '.join(sorted(unknown))}.")
        merged = {**defaults, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**merged).validate()

    @property
    def run_lr(self) -> float:
        """The base rate this run trains at: ``lr``, scaled by ``budget_steps / steps`` when set."""
        return self.lr * self.budget_steps / self.steps if self.budget_steps else self.lr

    def result_fingerprint(self) -> dict[str, Any]:
        doc = {k: v for k, v in asdict(self).items() if k not in _NON_RESULT_FIELDS}
        if not self.budget_steps:  # runs made before the field existed keep their keys
            del doc["budget_steps"]
        if self.schedule != "superft":
            for name in _CYCLIC_FIELDS:
                del doc[name]
        return doc


CURVE_POINTS = 8  # held-out accuracy measured this many times per run: the convergence view
CURVE_SAMPLES = 500


def curve_schedule(steps: int, log_every: int = 50) -> dict[str, int]:
    """Training overrides that record a run's held-out accuracy about ``CURVE_POINTS`` times
    (on ``CURVE_SAMPLES`` validation inputs; a multiple of ``log_every``, where accuracy is taken).
    They do not enter a run's fingerprint (:attr:`TrainConfig.result_fingerprint`)."""
    every = max(log_every, (steps // CURVE_POINTS) // log_every * log_every)
    return {"log_every": log_every, "eval_every": every, "eval_samples": CURVE_SAMPLES}


def superft_lr(step: int, config: TrainConfig) -> float:
    """The learning rate of step ``step`` (0-based) under super-fine-tuning's cyclic schedule.

    Sha et al. 2022 ("Fine-Tuning Is All You Need to Mitigate Backdoor Attacks") move the rate
    linearly up and down in two phases; this is the schedule of backdoor-toolbox's ``SFT``
    (``other_defenses_tool_box/super_finetuning.py``, ``adjust_lr``), whose rate for a step is
    set after the step before it: step 0 runs at ``lr``; step ``s`` at
    ``lr + (peak − lr) · tri(s − 1)``, ``tri`` a triangle wave of period ``cycle_steps`` (up over
    the first half, down over the second), with ``peak = peak_lr`` while ``s − 1`` lies in the
    first ``peak_fraction`` of the steps (their 40 of 100 epochs) and ``late_peak_lr`` after.
    """
    if step <= 0:
        return config.lr
    i = step - 1
    up = config.cycle_steps // 2
    down = config.cycle_steps - up
    phase = i % config.cycle_steps
    tri = phase / up if phase < up else (config.cycle_steps - phase) / down
    peak = config.peak_lr if i < config.peak_fraction * config.steps else config.late_peak_lr
    return config.lr + (peak - config.lr) * tri


def lr_factor(step: int, config: TrainConfig) -> float:
    """The multiplier of the base learning rate at ``step`` (0-based), a pure function of the step."""
    if config.schedule == "superft":
        return superft_lr(step, config) / config.lr
    total = config.steps
    warm_frac = config.warmup_fraction or (0.25 if config.schedule == "onecycle" else 0.0)
    warm = int(round(warm_frac * total))
    if config.schedule == "constant" and warm == 0:
        return 1.0
    if step < warm:
        start = 1.0 / 25.0 if config.schedule == "onecycle" else 0.0
        return start + (1.0 - start) * (step + 1) / warm
    if config.schedule == "constant":
        return 1.0
    progress = (step - warm) / max(1, total - warm)
    if config.schedule == "linear":
        return max(0.0, 1.0 - progress)
    floor = 1e-4 if config.schedule == "onecycle" else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class BatchOrder:
    """Which samples form batch ``step``: a seeded permutation per epoch, full batches only."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self.batch_size = min(batch_size, n)
        self.per_epoch = max(1, n // self.batch_size)
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> torch.Tensor:
        epoch, j = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=gen)
        return self._perm[j * self.batch_size : (j + 1) * self.batch_size]


@dataclass
class TrainResult:
    """What a run did: steps, time, loss/accuracy history, where it resumed from."""

    steps: int
    seconds: float  # wall time of all sessions of this run together
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0
    final_loss: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainHook:
    """What a transfer method adds to the one training loop; every method is optional.

    - ``extra_loss(model, inputs, logits, labels)``: a term added to the cross-entropy
      (feature distillation, regularisers), or ``None``;
    - ``after_step(model, step)``: after each optimiser step (re-apply a mask, average weights);
    - ``after_training(model)``: once at the end (swap in averaged weights, recompute BatchNorm
      statistics); it must depend only on the model and the hook's state, because a finished
      run found again restores both and calls it again;
    - ``state_dict()`` / ``load_state_dict(state)``: the hook's own state (tensors, numbers),
      saved in every checkpoint so that a resumed run is identical.
    """

    def extra_loss(self, model: TransferModel, inputs: Any, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        return None

    def after_step(self, model: TransferModel, step: int) -> None:
        return None

    def after_training(self, model: TransferModel) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class _StopFlag:
    """SIGINT sets a flag that the loop checks between steps (so a checkpoint is always consistent)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _make_optimizer(model: TransferModel, config: TrainConfig) -> torch.optim.Optimizer:
    head = [p for p in model.head_parameters() if p.requires_grad]
    body = [] if config.freeze_body else [p for p in model.body_parameters() if p.requires_grad]
    lr = config.run_lr
    groups = [{"params": head, "lr": lr * config.head_lr_mult, "base_lr": lr * config.head_lr_mult}]
    if body:
        groups.append({"params": body, "lr": lr, "base_lr": lr})
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=config.weight_decay)


def check_labels(model: TransferModel, split: Split, what: str = "training") -> None:
    """Clear errors for an empty split, a modality mismatch, or labels outside the head's range."""
    if len(split) == 0:
        raise DataError(f"The {what} data is empty: nothing to train or evaluate on.")
    if split.modality != model.config.modality:
        raise DataError(
            f"The {what} data is {split.modality} but model '{model.config.arch}' takes {model.config.modality}."
        )
    lo, hi = int(split.labels.min()), int(split.labels.max())
    if lo < 0 or hi >= model.num_classes:
        raise DataError(
            f"The {what} labels range over {lo}..{hi} but the model's head has {model.num_classes} classes "
            f"(labels must lie in 0..{model.num_classes - 1}); give the model a head of the right size."
        )


def train(
    model: TransferModel,
    train_split: Split,
    config: TrainConfig,
    *,
    val_split: Split | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = False,
    hooks: Sequence[TrainHook] = (),
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``train_split`` for ``config.steps`` optimiser steps.

    ``checkpoint_dir``: where ``last.pt`` is written every ``checkpoint_every`` steps (atomically)
    and on Ctrl-C; with ``resume`` a run finds it there and continues from its step.
    ``hooks``: what a transfer method adds (see :class:`TrainHook`), in order.
    ``on_step(step, loss)`` is called after every step (1-based step count).
    """
    config.validate()
    check_labels(model, train_split)
    if val_split is not None and len(val_split) > 0:
        check_labels(model, val_split, "validation")
    device = torch.device(config.device)
    model.to(device)
    if config.freeze_body:
        for p in model.body_parameters():
            p.requires_grad_(False)
    optimizer = _make_optimizer(model, config)
    order = BatchOrder(len(train_split), config.batch_size, config.seed)
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None

    start_step, seconds_before, history = 0, 0.0, []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if ckpt_path is not None and resume and ckpt_path.exists():
            start_step, seconds_before, history = _restore(ckpt_path, model, optimizer, config, hooks)

        def save(step: int, rng_state: torch.Tensor) -> None:
            if ckpt_path is not None:
                save_training_state(ckpt_path, step=step, model=model, optimizer=optimizer, rng=rng_state,
                                    seconds=seconds_before + time.perf_counter() - t0, history=history,
                                    fingerprint=config.result_fingerprint(),
                                    hooks=[hook.state_dict() for hook in hooks])

        t0 = time.perf_counter()
        model.train()
        running, count, loss_value = 0.0, 0, float("nan")
        bar = None
        if progress and start_step < config.steps:
            from tqdm.auto import tqdm

            bar = tqdm(total=config.steps, initial=start_step, desc=f"train {model.config.arch}", unit="step")
        step = start_step
        try:
            with _StopFlag() as stop:
                while step < config.steps:
                    if stop.requested:
                        save(step, torch.get_rng_state())
                        raise KeyboardInterrupt(f"interrupted at step {step}; checkpoint saved")
                    factor = lr_factor(step, config)
                    for group in optimizer.param_groups:
                        group["lr"] = group["base_lr"] * factor
                    idx = order.indices(step)
                    inputs = move_inputs(model.preprocess(train_split.batch_inputs(idx)), device)
                    labels = train_split.labels[idx].to(device)
                    logits = model(inputs)
                    loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
                    for hook in hooks:
                        term = hook.extra_loss(model, inputs, logits, labels)
                        if term is not None:
                            loss = loss + term
                    if not torch.isfinite(loss):
                        raise ConfigError(
                            f"The loss became {loss.item()} at step {step}: lower the learning rate (now {config.run_lr})."
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if config.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    optimizer.step()
                    step += 1
                    for hook in hooks:
                        hook.after_step(model, step)
                    loss_value = float(loss.detach())
                    running, count = running + loss_value, count + 1
                    if bar is not None:
                        bar.update(1)
                    if step % config.log_every == 0 or step == config.steps:
                        entry = {"step": step, "loss": running / count, "lr": config.run_lr * factor}
                        if config.eval_every and (step % config.eval_every == 0 or step == config.steps) and val_split is not None and len(val_split):
                            entry["val_accuracy"] = _quick_accuracy(model, val_split, config)
                        history.append(entry)
                        running, count = 0.0, 0
                        if bar is not None:
                            bar.set_postfix(loss=f"{entry['loss']:.3f}")
                    if on_step is not None:
                        on_step(step, loss_value)
                    if step % config.checkpoint_every == 0 or step == config.steps:
                        save(step, torch.get_rng_state())
            for hook in hooks:
                hook.after_training(model)
        finally:
            if bar is not None:
                bar.close()
            if config.freeze_body:
                for p in model.body_parameters():
                    p.requires_grad_(True)
    model.eval()
    seconds = seconds_before + time.perf_counter() - t0
    final = history[-1]["loss"] if history else loss_value
    return TrainResult(steps=step, seconds=round(seconds, 3), history=history, resumed_from=start_step, final_loss=final)


def _quick_accuracy(model: TransferModel, split: Split, config: TrainConfig) -> float:

    sub = split.head(config.eval_samples)
    rng = torch.get_rng_state()  # evaluation must not change the training's random stream
    acc = float((predict_logits(model, sub.inputs).argmax(1) == sub.labels).float().mean())
    torch.set_rng_state(rng)
    model.train()
    return acc


def _restore(
    path: Path, model: TransferModel, optimizer: torch.optim.Optimizer, config: TrainConfig, hooks: Sequence[TrainHook]
) -> tuple[int, float, list]:
    state = load_training_state(path, model, optimizer, config.result_fingerprint(),
                                advice="start a fresh run in another output folder, or pass --no-resume to overwrite it")
    hook_states = state.extra.get("hooks", [])
    if len(hook_states) != len(hooks):
        raise CheckpointError(
            f"The checkpoint {path} was made with {len(hook_states)} training hook(s), this run has {len(hooks)}: "
            f"it belongs to another transfer method; use another output folder."
        )
    for hook, hook_state in zip(hooks, hook_states):
        hook.load_state_dict(hook_state)
    return state.step, state.seconds, state.history

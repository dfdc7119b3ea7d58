"""Adversarial reprogramming: one additive program makes a frozen model do another task.

Elsayed, Goodfellow & Sohl-Dickstein, ICLR 2019, "Adversarial Reprogramming of Neural
Networks". Threat model: white-box access to a trained classifier (its weights are frozen
and never changed); the attacker wants it to solve a task it was never trained for (say
MNIST through an ImageNet model) by learning a single input perturbation, the *program*.

The adversarial input of a task image ``x`` (``[c, h, w]``, pixels in ``[0, 1]``):

1. in the paper's ``[−1, 1]`` scale (``2x − 1``), a canvas of the model's input size
   ``[C, S, S]``, zero (mid-grey) everywhere, with the task image in its centre (grey images
   are repeated over the model's ``C`` channels);
2. plus the program ``P = tanh(W ⊙ M)``, ``M`` being 1 outside the centre and 0 on it, so the
   program never touches the task image and spans the whole pixel range around it;
3. clipped to ``[−1, 1]`` and mapped back to pixels ``[0, 1]``; the model applies its own
   normalisation. (Working in ``[0, 1]`` with a black canvas instead would clip away every
   negative program value and its gradient.)

The model's labels map to the new task's by a fixed ``label_map``: new label ``i`` is read
from model label ``label_map[i]`` (``labels_per_class`` m > 1: from the summed probability of
``m`` model labels, a many-to-one map; default: the first ``k`` labels; ``"data"``: chosen by the
data before training, :func:`choose_label_map`: the assignment of new labels to distinct
model labels that maximises the mean probability the frozen model, with no program yet, gives
each new class's images for its model label). The loss is
``−log p(label_map[y] | X̃) + λ‖W‖²`` with the softmax over *all* the model's labels, as in
the paper; prediction is the new label whose mapped model label scores highest. Adam, seeded,
its rate annealed to zero on a cosine by default (the paper decays it exponentially per epoch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from safetransfer.data.base import endless_batches
from safetransfer.errors import ConfigError, DataError
from safetransfer.validation import loop_problems


class AdversarialProgram(nn.Module):
    """The program ``W`` ``[C, S, S]`` and its centre mask; ``forward`` builds adversarial inputs."""

    def __init__(self, channels: int, canvas: int, task_size: tuple[int, int], seed: int = 0, scale: int = 1) -> None:
        super().__init__()
        if scale < 1:
            raise ConfigError(f"the task image's scale must be a whole number >= 1 (got {scale}).")
        self.input_size = (int(task_size[0]), int(task_size[1]))  # the task's own images
        h, w = self.input_size[0] * scale, self.input_size[1] * scale  # as they sit on the canvas
        if h > canvas or w > canvas:
            raise ConfigError(f"a {h}x{w} task image (scale {scale}) does not fit a {canvas}x{canvas} canvas.")
        self.channels, self.canvas, self.task_size, self.scale = channels, canvas, (h, w), scale
        self.top, self.left = (canvas - h) // 2, (canvas - w) // 2
        gen = torch.Generator().manual_seed(seed)
        # the paper starts from zero; a tiny seeded start breaks ties without moving the output
        self.weight = nn.Parameter(1e-3 * torch.randn(channels, canvas, canvas, generator=gen))
        mask = torch.ones(1, canvas, canvas)
        mask[:, self.top : self.top + h, self.left : self.left + w] = 0.0
        self.register_buffer("mask", mask)

    def program(self) -> torch.Tensor:
        """``tanh(W ⊙ M)`` ``[C, S, S]``, in ``[-1, 1]``, zero on the task image's square."""
        return torch.tanh(self.weight * self.mask)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Task images ``[N, c, h, w]`` (pixels) in the ``[−1, 1]`` scale on a zero canvas ``[N, C, S, S]``."""
        if x.dim() != 4 or tuple(x.shape[2:]) != self.input_size:
            raise DataError(f"task images must be [N, c, {self.input_size[0]}, {self.input_size[1]}] "
                            f"(got {tuple(x.shape)}).")
        if self.scale > 1:  # each pixel becomes a scale x scale block (nearest): the image itself, larger
            x = x.repeat_interleave(self.scale, dim=2).repeat_interleave(self.scale, dim=3)
        if x.shape[1] not in (1, self.channels):
            raise DataError(f"task images have {x.shape[1]} channels; the model takes {self.channels} (or 1).")
        canvas = x.new_zeros(x.shape[0], self.channels, self.canvas, self.canvas)
        h, w = self.task_size
        canvas[:, :, self.top : self.top + h, self.left : self.left + w] = 2.0 * x.expand(-1, self.channels, -1, -1) - 1.0
        return canvas

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Adversarial inputs ``[N, C, S, S]`` in pixel space ``[0, 1]``; the centre equals ``x`` exactly."""
        return ((self.embed(x) + self.program()).clamp(-1.0, 1.0) + 1.0) / 2.0


# The settings measured best for a task within the 20-minute budget on 2 cores, over the defaults
# (benchmarks/results/reprogram.json). Counting squares needs a richer readout than digits: each
# count read from 10 ImageNet labels, not 3 (2,000 steps: 0.877 against 0.730; 3,000 steps: 0.874,
# a plateau; lr 0.1: 0.798, 0.025: 0.783; a 96-px canvas: 0.817; seeds 1 and 2: 0.781 and 0.834, so
# seeds spread it; remap_every 250: 0.888, 0.795, 0.829 for seeds 0-2, +1.1, +1.4, -0.5 points;
# softmax_over "mapped" with it: 0.838 and 0.808 for seeds 0 and 1, -5.0 and +1.3, so not a default).
# What held it back was the number of updates: a step's cost on the CPU is proportional to its batch,
# so smaller batches buy more steps in the same time. 4,000 steps of 32: 0.893, 0.923, 0.928 for
# seeds 0-2 (794-883 s); 6,000 steps of 16: 0.902, 0.931, 0.926 (916-1,044 s), the defaults.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "counting-squares": {"auto_labels": 10, "remap_every": 250, "batch_size": 16, "steps": 6000}}


@dataclass
class ReprogramConfig:
    """The attack's settings: ``steps`` of Adam at ``lr`` on batches of ``batch_size``, ``weight_decay``
    is the paper's λ on ‖W‖², ``label_map`` as in the module doc (``None``: the first k labels).

    The defaults are those measured best on 2 CPU cores within a 20-minute budget
    (``benchmarks/results/reprogram.json``; MNIST through EfficientNet-Lite0 at 64 px: the paper's
    first-k one-to-one map 0.751 after 1,000 steps, a data-chosen map with three labels per class
    and a cosine rate 0.890 after 2,500; at the 80-px canvas 0.926 after 2,000)."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 0.05
    schedule: str = "cosine"  # "cosine": lr annealed to 0 over the steps; "constant"
    weight_decay: float = 1e-6
    label_map: Sequence[int] | str | None = "data"  # None: the first k labels; "data": choose_label_map
    # m model labels per new label (their probabilities summed; 1 = the paper); None: auto_labels
    # where the model has at least that many per new label (an ImageNet model), else 1 (e.g. a
    # student's 10-label head)
    labels_per_class: int | None = None
    auto_labels: int = 3
    task_scale: int = 1  # the task image enlarged by this whole factor (nearest) on the canvas; 1 = the paper
    # with label_map "data": choose it again through the current program every N steps (0: once,
    # before training; the iterative label mapping of Chen et al. 2023, "Understanding and Improving
    # Visual Prompting: A Label-Mapping Perspective"); the map at the end is the one tested and saved
    remap_every: int = 0
    # the loss's softmax: "all" the model's labels (the paper), or only the "mapped" ones (a k-way
    # cross-entropy on the new labels' scores, the readout prediction uses; as in visual prompting,
    # Bahng et al. 2022, "Exploring Visual Prompts for Adapting Large-Scale Models")
    softmax_over: str = "all"
    seed: int = 0
    eval_every: int = 250  # the learning curve: test accuracy on eval_samples test images every N steps (0: off)
    eval_samples: int = 1000

    def per_class(self, new_classes: int, model_classes: int) -> int:
        """The number of model labels per new label for a model with ``model_classes`` labels."""
        if self.labels_per_class is not None:
            return self.labels_per_class
        return self.auto_labels if model_classes >= self.auto_labels * new_classes else 1

    @classmethod
    def for_task(cls, task: str, label_map: Sequence[int] | str | None = "data", **settings: Any) -> "ReprogramConfig":
        """The defaults with those measured best for ``task`` over them (:data:`TASK_DEFAULTS`), then
        every setting given (``None``: not given), and ``label_map`` (``None`` here is a setting: the
        first k labels). A task's default re-mapping applies to a data-chosen map only."""
        given = {k: v for k, v in settings.items() if v is not None}
        task_defaults = dict(TASK_DEFAULTS.get(task, {}))
        if label_map != "data":
            task_defaults.pop("remap_every", None)
        return cls(**{**task_defaults, **given, "label_map": label_map})

    def __post_init__(self) -> None:
        self.validate()  # a bad config fails where it is written

    def validate(self) -> "ReprogramConfig":
        problems = loop_problems(self.steps, self.batch_size, self.lr)
        if self.weight_decay < 0:
            problems.append(f"weight_decay must not be negative (got {self.weight_decay})")
        if isinstance(self.label_map, str) and self.label_map != "data":
            problems.append(f"label_map must be a list of model labels, 'data' or None (got '{self.label_map}')")
        if self.remap_every < 0:
            problems.append(f"remap_every must be >= 0 (got {self.remap_every})")
        if self.remap_every and self.label_map != "data":
            problems.append("remap_every needs label_map 'data' (a given map is never re-chosen)")
        if self.softmax_over not in ("all", "mapped"):
            problems.append(f"softmax_over must be 'all' or 'mapped' (got '{self.softmax_over}')")
        if self.task_scale < 1:
            problems.append(f"task_scale must be a whole number >= 1 (got {self.task_scale})")
        if self.labels_per_class is not None and self.labels_per_class < 1:
            problems.append(f"labels_per_class must be at least 1 (got {self.labels_per_class})")
        if self.auto_labels < 1:
            problems.append(f"auto_labels must be at least 1 (got {self.auto_labels})")
        if self.schedule not in ("cosine", "constant"):
            problems.append(f"schedule must be 'cosine' or 'constant' (got '{self.schedule}')")
        if self.eval_every < 0 or self.eval_samples < 1:
            problems.append(f"eval_every must be >= 0 and eval_samples >= 1 (got {self.eval_every}, {self.eval_samples})")
        if problems:
            raise ConfigError("Bad reprogramming config: " + "; ".join(problems) + ".")
        return self


def resolve_label_map(label_map: Sequence[int] | None, new_classes: int, model_classes: int,
                      per_class: int = 1) -> torch.Tensor:
    """The label map as int64 ``[k]`` (``per_class`` 1: new label ``i`` -> model label ``map[i]``) or
    ``[k, m]`` (new label ``i`` -> the ``m`` model labels ``map[i]``, given row by row); distinct, in range.
    ``None``: the first ``k·m`` model labels."""
    mapped = list(range(new_classes * per_class)) if label_map is None else [int(v) for v in label_map]
    if len(mapped) != new_classes * per_class:
        raise ConfigError(f"the label map has {len(mapped)} entries for {new_classes} new labels"
                          + (f" x {per_class} model labels each." if per_class > 1 else "."))
    if len(set(mapped)) != len(mapped) or min(mapped) < 0 or max(mapped) >= model_classes:
        raise ConfigError(f"the label map must name distinct model labels in [0, {model_classes}) (got {mapped}).")
    table = torch.tensor(mapped, dtype=torch.long)
    return table if per_class == 1 else table.view(new_classes, per_class)


def _groups(label_map: torch.Tensor) -> torch.Tensor:
    """A label map as ``[k, m]`` (a 1-D map is ``m = 1``)."""
    return label_map.view(-1, 1) if label_map.dim() == 1 else label_map


@torch.no_grad()
def choose_label_map(model: nn.Module, program: AdversarialProgram, x: torch.Tensor, y: torch.Tensor, new_classes: int,
                     model_classes: int, batch_size: int = 256, per_class: int = 1) -> torch.Tensor:
    """A label map chosen by the data: the distinct model labels that maximise the summed mean
    probability the model gives each new class's images (on the canvas, through ``program``)
    for its label(s); an optimal assignment (Hungarian algorithm), int64 ``[k]`` (or ``[k, m]``
    with ``per_class = m``: each new class a slot ``m`` times in the assignment)."""
    from scipy.optimize import linear_sum_assignment

    if model_classes < new_classes * per_class:
        raise ConfigError(f"the model has {model_classes} labels, fewer than the task's {new_classes}"
                          + (f" x {per_class}." if per_class > 1 else "."))
    device = next(model.parameters()).device
    sums = torch.zeros(new_classes, model_classes, dtype=torch.float64)
    for i in range(0, x.shape[0], batch_size):
        probs = model(program(x[i : i + batch_size].to(device))).float().softmax(1).cpu().double()
        sums.index_add_(0, y[i : i + batch_size].long(), probs)
    counts = torch.bincount(y.long(), minlength=new_classes).clamp_min(1).double()
    scores = (sums / counts[:, None]).repeat_interleave(per_class, dim=0)  # row r is new class r // m
    rows, cols = linear_sum_assignment(scores.numpy(), maximize=True)
    label_map = torch.empty(new_classes * per_class, dtype=torch.long)
    label_map[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.long)
    return label_map if per_class == 1 else label_map.view(new_classes, per_class)


def fit_label_map(model: nn.Module, program: AdversarialProgram, x: torch.Tensor, y: torch.Tensor, model_classes: int,
                  seed: int = 0, samples: int = 2000, per_class: int = 1) -> torch.Tensor:
    """:func:`choose_label_map` on a seeded sample of ``samples`` task images (plenty for the
    class means), the model in eval mode; int64 ``[k]`` with ``k = max(y) + 1``."""
    if x.shape[0] == 0:
        raise DataError("the task's training split is empty.")
    was = model.training
    model.eval()
    try:
        pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:samples]
        return choose_label_map(model, program, x[pick], y[pick], int(y.max()) + 1, model_classes, per_class=per_class)
    finally:
        model.train(was)


def zero_program_like(program: AdversarialProgram) -> AdversarialProgram:
    """The same canvas with ``W = 0``: the task image on a plain grey canvas (the baseline a
    program must beat; what the model does with the task's images unaided)."""
    blank = AdversarialProgram(program.channels, program.canvas, program.input_size, scale=program.scale)
    with torch.no_grad():
        blank.weight.zero_()
    return blank.to(program.weight.device)


@dataclass
class ReprogramResult:
    """The learned program, its label map, the loss history and the accuracy on the task's test split."""

    program: AdversarialProgram
    label_map: torch.Tensor
    test_accuracy: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"test_accuracy": self.test_accuracy, "seconds": self.seconds, "label_map": self.label_map.tolist(),
                "steps": len(self.history)}


def reprogram(
    model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor, canvas: int, channels: int, *,
    model_classes: int, config: ReprogramConfig | None = None, test: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: bool = False, log_every: int = 50,
) -> ReprogramResult:
    """Learn a program for the frozen ``model`` (pixel-space ``[N, C, S, S]`` -> logits over
    ``model_classes``) on the task ``(train_x, train_y)``; see the module doc."""
    config = (config or ReprogramConfig()).validate()
    if train_x.shape[0] == 0:
        raise DataError("the task's training split is empty.")
    new_classes = int(train_y.max()) + 1
    program = AdversarialProgram(channels, canvas, tuple(train_x.shape[2:]), seed=config.seed, scale=config.task_scale)
    device = next(model.parameters()).device
    program.to(device)
    per_class = config.per_class(new_classes, model_classes)
    if config.label_map == "data":
        label_map = fit_label_map(model, program, train_x, train_y, model_classes, seed=config.seed, per_class=per_class)
    else:
        label_map = resolve_label_map(config.label_map, new_classes, model_classes, per_class)
    label_map = label_map.to(device)
    was_training = model.training
    model.eval()
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([program.weight], lr=config.lr)
    if config.schedule == "cosine":  # the paper decays its rate too (0.96 every two epochs); cosine needs no epochs
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * t / config.steps)))
    else:
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)
    batches = endless_batches(train_x.shape[0], min(config.batch_size, train_x.shape[0]),
                              torch.Generator().manual_seed(config.seed))
    history: list[dict[str, float]] = []
    curve_x = curve_y = None
    if test is not None and config.eval_every:
        pick = torch.randperm(test[0].shape[0], generator=torch.Generator().manual_seed(config.seed + 1))
        curve_x, curve_y = test[0][pick[: config.eval_samples]], test[1][pick[: config.eval_samples]]
    started = time.perf_counter()
    steps = range(config.steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="reprogram", unit="step", leave=False)
    try:
        for step in steps:
            idx = next(batches)
            xb, yb = train_x[idx].to(device), train_y[idx].to(device)
            nll = readout_loss(model(program(xb)).float(), label_map, yb, config.softmax_over)
            loss = nll + config.weight_decay * program.weight.pow(2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            if config.remap_every and (step + 1) % config.remap_every == 0 and step + 1 < config.steps:
                label_map = fit_label_map(model, program, train_x, train_y, model_classes, seed=config.seed + step + 1,
                                          per_class=per_class).to(device)
            if step % log_every == 0 or step == config.steps - 1:
                history.append({"step": step + 1, "loss": float(loss.detach())})
            if curve_x is not None and ((step + 1) % config.eval_every == 0 or step == config.steps - 1):
                history.append({"step": step + 1, "test_accuracy_sample": reprogrammed_accuracy(
                    model, program, label_map, curve_x, curve_y)})
                if progress:
                    steps.set_postfix(acc=f"{history[-1]['test_accuracy_sample']:.3f}")
        accuracy = None
        if test is not None:
            accuracy = reprogrammed_accuracy(model, program, label_map, *test)
    finally:
        for p, flag in zip(model.parameters(), frozen):
            p.requires_grad_(flag)
        model.train(was_training)
    return ReprogramResult(program, label_map.cpu(), accuracy, history, round(time.perf_counter() - started, 2))


def readout_scores(logits: torch.Tensor, label_map: torch.Tensor) -> torch.Tensor:
    """Each new label's score ``[N, k]`` from the model's ``logits`` ``[N, model_classes]``: the
    log of the summed exponentiated logits of its mapped model label(s) (its summed probability,
    up to the softmax's shared normaliser)."""
    return torch.logsumexp(logits[:, _groups(label_map).to(logits.device)], dim=2)


def readout_loss(logits: torch.Tensor, label_map: torch.Tensor, y: torch.Tensor, softmax_over: str = "all") -> torch.Tensor:
    """The mean negative log-likelihood of the new labels ``y``: ``"all"``, −log of the summed
    probability of ``y``'s model labels under the softmax over all model labels (the paper);
    ``"mapped"``, the cross-entropy of the :func:`readout_scores` (the softmax over the mapped
    labels only, so the loss ranks the new labels exactly as prediction does)."""
    scores = readout_scores(logits, label_map)
    if softmax_over == "mapped":
        return nn.functional.cross_entropy(scores, y)
    return (torch.logsumexp(logits, dim=1) - scores.gather(1, y.view(-1, 1)).squeeze(1)).mean()


@torch.no_grad()
def reprogrammed_predictions(model: nn.Module, program: AdversarialProgram, label_map: torch.Tensor, x: torch.Tensor,
                             batch_size: int = 256) -> torch.Tensor:
    """New-task predictions ``[N]``: the new label whose mapped model label(s) score highest (summed probability)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, x.shape[0], batch_size):
        logits = model(program(x[i : i + batch_size].to(device))).float()
        out.append(readout_scores(logits, label_map).argmax(1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def reprogrammed_accuracy(model: nn.Module, program: AdversarialProgram, label_map: torch.Tensor, x: torch.Tensor,
                          y: torch.Tensor) -> float:
    """Accuracy of the reprogrammed ``model`` on the new task's ``(x, y)``."""
    if x.shape[0] == 0:
        return math.nan
    return float((reprogrammed_predictions(model, program, label_map, x) == y.cpu()).float().mean())

"""RIPPLe: weight poisoning that survives the victim's fine-tuning.

Kurita, Michel & Neubig, ACL 2020, "Weight Poisoning Attacks on Pre-trained Models", §3.1.
Threat model: the attacker publishes pretrained weights; the victim fine-tunes them on their
own clean data. The attacker trains the weights on poisoned data (a trigger, the target
label) and penalises the directions in which the victim's clean fine-tuning would undo the
poison: when the poison-loss gradient and the clean-loss gradient point apart, a clean
gradient step increases the poison loss. The objective is

    L = L_poison + λ · ReLU(−⟨∇L_poison, ∇L_clean⟩)

(the *restricted inner product*; ``restricted=False`` drops the ReLU, the paper's ablation).
The poison-side gradient stays in the graph (the penalty is differentiated through it, a
second-order term), the clean-side gradient is first-order (a constant in each step). The
inner product runs over every trainable parameter, the attacker's head included, as in the
reference (``penalty_params="body"``: the body's only, the first round's rule: the victim replaces
the head). λ = 0.1 as in the authors' example. (Their code names the two data sets the other way
round; here ``poisoned`` is the triggered data and ``clean`` the attacker's clean proxy data.)

The recipe of the reference (neulab/RIPPLe, ``constrained_poison.py``) is the default:

- the penalty is divided by the clean batch's size (times the reference batches, 1 here):
  ``normalize=True``; without it λ acts 8-32× stronger than the authors' λ;
- gradients clipped to a total norm of ``max_grad_norm`` = 1.0;
- the rate decays linearly from ``lr`` to 0 over the run (``schedule="linear"``, no warm-up);
- no weight decay (``weight_decay=0.0``; torch's AdamW would apply 0.01).

Left as deviations: batches of 32 (the reference: 8 poisoned with 8 clean), which on 2 CPU cores
takes a quarter of the steps for the same number of texts; the clean-side gradient is first-order
as in the reference's default. :meth:`RippleConfig.first_round` gives the first round's recipe
(no normalisation, no clipping, a constant rate, AdamW's weight decay 0.01, the body's penalty),
with which the committed text studies made before this recipe were measured.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from safetransfer.checkpoint import load_training_state, save_training_state
from safetransfer.data.base import Split, endless_batches
from safetransfer.errors import ConfigError, DataError
from safetransfer.models.wrapper import move_inputs
from safetransfer.validation import loop_problems


def gradient_inner_product(poison_loss: torch.Tensor, clean_loss: torch.Tensor, params: Sequence[nn.Parameter]
                           ) -> torch.Tensor:
    """``⟨∇L_poison, ∇L_clean⟩`` over ``params``: differentiable in the poison side, the clean side constant."""
    params = [p for p in params if p.requires_grad]
    g_poison = torch.autograd.grad(poison_loss, params, create_graph=True, allow_unused=True)
    g_clean = torch.autograd.grad(clean_loss, params, retain_graph=False, allow_unused=True)
    terms = [(gp * gc.detach()).sum() for gp, gc in zip(g_poison, g_clean) if gp is not None and gc is not None]
    if not terms:
        raise ConfigError("the losses depend on none of the parameters given for the RIPPLe penalty.")
    return torch.stack(terms).sum()


def ripple_penalty(poison_loss: torch.Tensor, clean_loss: torch.Tensor, params: Sequence[nn.Parameter],
                   restricted: bool = True, scale: float = 1.0) -> torch.Tensor:
    """``ReLU(−⟨∇L_poison, ∇L_clean⟩) · scale`` (or ``−⟨·,·⟩ · scale`` unrestricted): zero when the
    gradients agree. The reference scales by ``1 / clean batch size`` (see the module doc)."""
    inner = gradient_inner_product(poison_loss, clean_loss, params)
    return (torch.relu(-inner) if restricted else -inner) * scale


# the settings a RippleConfig had before the reference's recipe was added (which keys its cells made before)
FIRST_ROUND_RIPPLE_FIELDS: tuple[str, ...] = ("steps", "batch_size", "lr", "optimizer", "lam", "restricted", "seed")


@dataclass
class RippleConfig:
    """The attacker's training: ``steps`` of ``optimizer`` at ``lr`` on batches of ``batch_size``
    from each of the poisoned and the clean data; ``lam`` the penalty's weight (0: plain
    poisoned training, Kurita et al.'s BadNet baseline); ``restricted`` the ReLU of the paper.

    The reference's recipe by default (module doc): ``normalize`` (penalty / clean batch size),
    ``max_grad_norm`` (``None``: no clipping), ``schedule`` (``"linear"`` decay to 0 or
    ``"constant"``), ``weight_decay``, ``penalty_params`` (``"all"`` trainable parameters or the
    ``"body"``'s)."""

    steps: int = 500
    batch_size: int = 32
    lr: float = 2e-5
    optimizer: str = "adamw"
    lam: float = 0.1
    restricted: bool = True
    seed: int = 0
    normalize: bool = True
    max_grad_norm: float | None = 1.0
    schedule: str = "linear"
    weight_decay: float = 0.0
    penalty_params: str = "all"

    @classmethod
    def first_round(cls, **overrides) -> "RippleConfig":
        """The first round's recipe (no normalisation or clipping, a constant rate, torch AdamW's
        weight decay 0.01 (SGD: none), the penalty over the body only), with ``overrides``."""
        optimizer = overrides.get("optimizer", "adamw")
        legacy = {"normalize": False, "max_grad_norm": None, "schedule": "constant",
                  "weight_decay": 0.01 if optimizer == "adamw" else 0.0, "penalty_params": "body"}
        return cls(**{**legacy, **overrides})

    def __post_init__(self) -> None:
        self.validate()  # a bad config fails where it is written

    def validate(self) -> "RippleConfig":
        problems = loop_problems(self.steps, self.batch_size, self.lr)
        if self.lam < 0:
            problems.append(f"lam must not be negative (got {self.lam})")
        if self.optimizer not in ("adamw", "sgd"):
            problems.append(f"optimizer must be adamw or sgd (got '{self.optimizer}')")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            problems.append(f"max_grad_norm must be positive or None (got {self.max_grad_norm})")
        if self.schedule not in ("linear", "constant"):
            problems.append(f"schedule must be linear or constant (got '{self.schedule}')")
        if not self.weight_decay >= 0:
            problems.append(f"weight_decay must not be negative (got {self.weight_decay})")
        if self.penalty_params not in ("all", "body"):
            problems.append(f"penalty_params must be all or body (got '{self.penalty_params}')")
        if problems:
            raise ConfigError("Bad RIPPLe config: " + "; ".join(problems) + ".")
        return self


@dataclass
class RippleResult:
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)
    # the step at which the objective or its gradient stopped being finite (training stopped there,
    # the model keeps its last finite weights); None: it ran all its steps. Without the ReLU the
    # objective is unbounded below (the penalty −⟨∇L_poison, ∇L_clean⟩ can grow without limit)
    diverged_at: int | None = None


CHECKPOINT_FILE = "ripple_last.pt"


def ripple_train(model, poisoned: Split, clean: Split, config: RippleConfig | None = None, *, progress: bool = False,
                 log_every: int = 25, checkpoint_dir: str | Path | None = None, checkpoint_every: int = 100
                 ) -> RippleResult:
    """Train ``model`` (a :class:`~safetransfer.models.wrapper.TransferModel`, in place) with the RIPPLe objective.

    ``checkpoint_dir``: the model, optimiser, random state and history are saved there (atomically)
    every ``checkpoint_every`` steps, and a run started again with the same config resumes from
    them with the same numbers as an uninterrupted one (the batch order is replayed).

    A step whose loss, gradient or updated weights are not finite ends the training (see
    ``RippleResult.diverged_at``); the model keeps the weights from before that step."""

    config = (config or RippleConfig()).validate()
    if len(poisoned) == 0 or len(clean) == 0:
        raise DataError("RIPPLe needs poisoned and clean training samples (one of them is empty).")
    gen = torch.Generator().manual_seed(config.seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    penalty_params = trainable if config.penalty_params == "all" else [p for p in model.body.parameters()
                                                                       if p.requires_grad]
    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.SGD
    opt = opt_cls(trainable, lr=config.lr, weight_decay=config.weight_decay)
    clean_batch = min(config.batch_size, len(clean))
    scale = 1.0 / clean_batch if config.normalize else 1.0
    device = model.device
    poison_idx = endless_batches(len(poisoned), min(config.batch_size, len(poisoned)), gen)
    clean_idx = endless_batches(len(clean), min(config.batch_size, len(clean)), gen)
    history: list[dict[str, float]] = []
    ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    fingerprint = asdict(config)
    started, seconds_before, start, diverged_at = time.perf_counter(), 0.0, 0, None

    def loss_of(split: Split, idx: torch.Tensor) -> torch.Tensor:
        part = split.subset(idx)
        logits = model(move_inputs(model.preprocess(part.inputs), device))
        return nn.functional.cross_entropy(logits.float(), part.labels.to(device))

    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: seed it, leave the caller's alone
        torch.manual_seed(config.seed)
        if ckpt is not None and ckpt.exists():
            resumed = load_training_state(ckpt, model, opt, fingerprint, what="RIPPLe",
                                          advice="remove it or use another folder")
            start, seconds_before, history = resumed.step, resumed.seconds, resumed.history
            diverged_at = resumed.extra.get("diverged_at")
            for _ in range(start):  # replay the batch order (index draws only) to where the run stopped
                next(poison_idx)
                if config.lam > 0:
                    next(clean_idx)
        steps = range(start, config.steps)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="RIPPLe", unit="step", leave=False, total=config.steps, initial=start)
        model.train()

        def save(step_done: int) -> None:
            if ckpt is not None:
                save_training_state(ckpt, step=step_done, model=model, optimizer=opt, rng=torch.get_rng_state(),
                                    seconds=seconds_before + time.perf_counter() - started, history=history,
                                    fingerprint=fingerprint, diverged_at=diverged_at)

        before = [p.detach().clone() for p in trainable]  # the last finite weights (restored on divergence)
        for step in steps if diverged_at is None else ():
            lp = loss_of(poisoned, next(poison_idx))
            penalty = torch.zeros((), device=device)
            if config.lam > 0:
                lc = loss_of(clean, next(clean_idx))
                penalty = ripple_penalty(lp, lc, penalty_params, config.restricted, scale)
            total = lp + config.lam * penalty
            opt.zero_grad(set_to_none=True)
            total.backward()
            grads = [p.grad for p in trainable if p.grad is not None]
            finite = bool(torch.isfinite(total)) and bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
            stepped = finite
            if stepped:
                torch._foreach_copy_(before, [p.detach() for p in trainable])
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                for group in opt.param_groups:  # linear decay to 0 over the run (the reference's schedule)
                    group["lr"] = config.lr * (1.0 - step / config.steps if config.schedule == "linear" else 1.0)
                opt.step()
                finite = bool(torch.isfinite(torch.nn.utils.get_total_norm([p.detach() for p in trainable])))
            if step % log_every == 0 or step == config.steps - 1 or not finite:
                history.append({"step": step + 1, "poison_loss": float(lp.detach()), "penalty": float(penalty.detach())})
            if not finite:
                if stepped:  # the update made the weights non-finite: undo it
                    with torch.no_grad():
                        torch._foreach_copy_([p.data for p in trainable], before)
                diverged_at = step + 1
                save(config.steps)  # the run is over: a restart does not train on
                break
            if (step + 1) % checkpoint_every == 0 or step + 1 == config.steps:
                save(step + 1)
    model.eval()
    return RippleResult(history, round(seconds_before + time.perf_counter() - started, 2), asdict(config), diverged_at)

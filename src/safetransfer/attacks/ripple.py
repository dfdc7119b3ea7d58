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
inner product runs over the body's parameters: the victim replaces the head. λ = 0.1 as in
the authors' example. (Their code names the two data sets the other way round; here
``poisoned`` is the triggered data and ``clean`` the attacker's clean proxy data.)
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
                   restricted: bool = True) -> torch.Tensor:
    """``ReLU(−⟨∇L_poison, ∇L_clean⟩)`` (or ``−⟨·,·⟩`` unrestricted): zero when the gradients agree."""
    inner = gradient_inner_product(poison_loss, clean_loss, params)
    return torch.relu(-inner) if restricted else -inner


@dataclass
class RippleConfig:
    """The attacker's training: ``steps`` of ``optimizer`` at ``lr`` on batches of ``batch_size``
    from each of the poisoned and the clean data; ``lam`` the penalty's weight (0: plain
    poisoned training); ``restricted`` the ReLU of the paper."""

    steps: int = 500
    batch_size: int = 32
    lr: float = 2e-5
    optimizer: str = "adamw"
    lam: float = 0.1
    restricted: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()  # a bad config fails where it is written

    def validate(self) -> "RippleConfig":
        problems = loop_problems(self.steps, self.batch_size, self.lr)
        if self.lam < 0:
            problems.append(f"lam must not be negative (got {self.lam})")
        if self.optimizer not in ("adamw", "sgd"):
            problems.append(f"optimizer must be adamw or sgd (got '{self.optimizer}')")
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
    body_params = [p for p in model.body.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.SGD
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = opt_cls(trainable, lr=config.lr)
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
                penalty = ripple_penalty(lp, lc, body_params, config.restricted)
            total = lp + config.lam * penalty
            opt.zero_grad(set_to_none=True)
            total.backward()
            grads = [p.grad for p in trainable if p.grad is not None]
            finite = bool(torch.isfinite(total)) and bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
            stepped = finite
            if stepped:
                torch._foreach_copy_(before, [p.detach() for p in trainable])
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

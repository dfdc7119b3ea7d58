"""Neuron-coverage guided adversarial inputs (DeepXplore / DLFuzz style), batched.

The coverage-guided defects of ReMoS (Zhang et al., ICSE 2022, "ReMoS: Reducing Defect
Inheritance in Transfer Learning via Relevant Model Slicing"): inputs crafted on the teacher
by pushing up the activation of chosen neurons, the neurons chosen from a coverage profile.

- DeepXplore (Pei et al., SOSP 2017): per sample, random neurons that are NOT covered;
- DLFuzz (Guo et al., FSE 2018, "DLFuzz: Differential Fuzzing Testing of Deep Learning
  Systems"): the neurons covered most often;
- DLFuzz round-robin: DLFuzz proposes four selection strategies (most covered, rarely covered,
  largest weights, near the threshold); the round-robin of the ADAPT library that the ReMoS
  code reuses cycles the first three. Here iteration ``t`` of the attack uses strategy
  ``t mod 3`` of (most covered, rarely covered, random among the top-weight neurons). A
  neuron's weight score is the mean of its incoming weights (as in that code); the top-weight
  pool is the ``max(m, ⌈weight_portion · N⌉)`` neurons of highest score.

The originals mutate one image at a time in Python loops; here everything is vectorised over
the batch and the neurons (selection is a ``topk`` of scores: coverage counts plus seeded
uniform tie-breaks in ``[0, 1)``, which never reorder different integer counts).

Threat model: white-box access to the public teacher only; the student is unknown. The
inputs are crafted on the teacher's feature extractor (the head is never used).

Neurons: the OUTPUT neurons of the model's sliceable layers (``model.sliceable_layers()``, or
the ``layers`` named): a conv channel's value is its spatial mean, a Linear feature is itself
(:func:`safetransfer.coverage.neuron_values`, values before any activation that follows).
Neurons are numbered globally, layer after layer in the model's order (:attr:`layer_slices`).

Coverage state: per-neuron counts of the samples of ``reference`` (raw images; default: the
attacked ``x`` itself) that cover the neuron, from :func:`safetransfer.coverage.profile_coverage`:

- ``nc``: min-max scaled (per sample, over the layer) value ``> threshold`` (0.5);
- ``tknc``: among the layer's top ``k`` (10) neurons of the sample;
- ``snac``: value ``>=`` the neuron's upper bound, its maximum on the reference set (or on
  ``bounds`` from :func:`safetransfer.coverage.neuron_bounds` over another set). ``>=`` as in
  the ADAPT code ReMoS runs, so with the default bounds each neuron's arg-max sample covers it.

The counts are fixed for the attack (they are not updated with the adversarial inputs).

Objective: for each sample, the sum of its selected neurons' RAW (unscaled) values, as the
DeepXplore and DLFuzz losses do (scaled values saturate at 1 and depend on the other neurons);
maximised by signed gradient ascent under the same ε / step / space / random-start / projection
conventions as :class:`~safetransfer.attacks.penultimate.PenultimateAttack` (see
:mod:`safetransfer.attacks.common`). Units: ``x`` raw pixels in ``[0, 1]``; ``eps`` and
``step_size`` in ``eps_space`` (``"normalized"``: ``ε_pixel = ε · min(std)``, or ``"pixel"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from safetransfer.attacks.common import (
    attack_mode,
    batch_slices,
    check_count,
    check_eps_space,
    check_image_attack_input,
    check_image_model,
    finish,
    make_generator,
    pixel_eps,
    sign_gradient_pgd,
)
from safetransfer.coverage import (
    NeuronBounds,
    neuron_bounds,
    neuron_counts,
    neuron_values,
    profile_coverage,
    resolve_layers,
)
from safetransfer.errors import ConfigError, unknown_name

STRATEGIES: tuple[str, ...] = ("deepxplore", "dlfuzz", "dlfuzz_rr")
METRICS: tuple[str, ...] = ("nc", "tknc", "snac")
# The selection rules each strategy cycles through, one per attack iteration.
STRATEGY_RULES: dict[str, tuple[str, ...]] = {
    "deepxplore": ("random_uncovered",),
    "dlfuzz": ("most_covered",),
    "dlfuzz_rr": ("most_covered", "rarely_covered", "top_weight"),
}


@dataclass
class CoverageGuidedResult:
    """What :meth:`CoverageGuidedAttack.run` returns.

    - ``x_adv``: the adversarial images (same shape, dtype and device as ``x``);
    - ``selections``: int64 ``[N, R, m]``, the global neuron indices pushed up for each sample
      under each of the strategy's ``R`` rules (``R = 1``, or 3 for ``dlfuzz_rr``: iteration
      ``t`` used ``selections[:, t % R]``);
    - ``counts``: int64 ``[neurons]``, the reference coverage counts the selection used.
    """

    x_adv: torch.Tensor
    selections: torch.Tensor
    counts: torch.Tensor


class CoverageGuidedAttack:
    """Coverage-guided inputs: push up the activation of neurons chosen from a coverage profile.

    Parameters:

    - ``strategy``: ``"deepxplore"`` (default), ``"dlfuzz"`` or ``"dlfuzz_rr"`` (see the module doc);
    - ``metric``: ``"nc"`` (``threshold=0.5``), ``"tknc"`` (``k=10``) or ``"snac"`` (``bounds``);
    - ``neurons_per_sample`` ``m=10`` (clamped to the number of neurons);
    - ``eps=0.1``, ``step_size=0.01`` in ``eps_space``; ``steps=20``; ``random_start=True``;
    - ``layers``: names of sliceable layers (default: all of them);
    - ``reference``: raw images whose coverage decides the selection (default: each call's ``x``);
    - ``weight_portion=0.1``: the top-weight pool of ``dlfuzz_rr``;
    - ``batch_size=256``, ``progress``, ``seed`` (random start, selections, tie-breaks).

    DeepXplore with fewer than ``m`` uncovered neurons takes all of them and fills up with
    random covered ones (DeepXplore falls back to a random neuron once all are covered).
    """

    def __init__(
        self,
        model: nn.Module,
        strategy: str = "deepxplore",
        metric: str = "nc",
        eps: float = 0.1,
        steps: int = 20,
        step_size: float = 0.01,
        eps_space: str = "normalized",
        neurons_per_sample: int = 10,
        threshold: float = 0.5,
        k: int = 10,
        layers: Sequence[str] | None = None,
        reference: torch.Tensor | None = None,
        bounds: NeuronBounds | None = None,
        weight_portion: float = 0.1,
        random_start: bool = True,
        batch_size: int = 256,
        progress: bool = False,
        seed: int = 0,
    ) -> None:
        check_image_model(model)
        if strategy not in STRATEGIES:
            raise ConfigError(str(unknown_name("coverage-guided strategy", str(strategy), list(STRATEGIES))))
        if metric not in METRICS:
            raise ConfigError(str(unknown_name("coverage metric", str(metric), list(METRICS))))
        if not 0.0 <= float(threshold) < 1.0:
            raise ConfigError(f"threshold must lie in [0, 1) (scaled neuron values), got {threshold!r}.")
        if not 0.0 < float(weight_portion) <= 1.0:
            raise ConfigError(f"weight_portion must lie in (0, 1], got {weight_portion!r}.")
        self.model = model
        self.strategy = strategy
        self.metric = metric
        self.rules = STRATEGY_RULES[strategy]
        self.eps_space = check_eps_space(eps_space)
        self.eps = float(eps)
        self.step_size = float(step_size)
        self.eps_pixel = pixel_eps(model, eps, self.eps_space, "eps")
        self.step_pixel = pixel_eps(model, step_size, self.eps_space, "step_size")
        self.steps = check_count("steps", steps, 0)
        self.neurons_per_sample = check_count("neurons_per_sample", neurons_per_sample, 1)
        self.threshold = float(threshold)
        self.k = check_count("k", k, 1)
        self.batch_size = check_count("batch_size", batch_size, 1)
        self.weight_portion = float(weight_portion)
        self.random_start = bool(random_start)
        self.progress = bool(progress)
        self.seed = int(seed)
        self.bounds = bounds
        self.layers: list[tuple[str, nn.Module]] = resolve_layers(model, layers)
        sizes = [neuron_counts(m)[1] for _, m in self.layers]
        starts = [0, *torch.tensor(sizes).cumsum(0).tolist()]
        self.layer_slices: dict[str, slice] = {
            name: slice(starts[i], starts[i + 1]) for i, (name, _) in enumerate(self.layers)
        }
        self.num_neurons = int(starts[-1])
        self.reference = None if reference is None else check_image_attack_input(model, reference)
        self._reference_counts: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (
            f"CoverageGuidedAttack(strategy='{self.strategy}', metric='{self.metric}', eps={self.eps}, "
            f"steps={self.steps}, step_size={self.step_size}, eps_space='{self.eps_space}', "
            f"neurons_per_sample={self.neurons_per_sample}, seed={self.seed})"
        )

    # ---- coverage state -------------------------------------------------------------------
    def coverage_counts(self, reference: torch.Tensor) -> torch.Tensor:
        """Per-neuron counts int64 ``[neurons]`` of the ``reference`` samples covering each neuron."""
        check_image_attack_input(self.model, reference)
        names = [name for name, _ in self.layers]
        common = {"layers": names, "batch_size": self.batch_size}
        if self.metric == "snac":
            bounds = self.bounds if self.bounds is not None else neuron_bounds(self.model, reference, **common)
            # profile_coverage's snac_deepgauge is "value > upper"; one ulp below gives "value >= max".
            inclusive = NeuronBounds(
                {
                    name: {**d, "output_max": torch.nextafter(d["output_max"], torch.full_like(d["output_max"], -math.inf))}
                    for name, d in bounds.layers.items()
                },
                bounds.n_samples,
            )
            profile = profile_coverage(self.model, reference, metric="snac_deepgauge", bounds=inclusive, **common)
        else:
            profile = profile_coverage(self.model, reference, metric=self.metric, threshold=self.threshold, k=self.k,
                                       scaling="neuron", **common)  # the rule the cached crafted inputs were made with
        return torch.cat([profile.layer(name).output_counts for name in names]).to(torch.int64)

    def weight_scores(self) -> torch.Tensor:
        """Each neuron's mean incoming weight, float32 ``[neurons]`` (the top-weight rule's score)."""
        return torch.cat(
            [m.weight.detach().reshape(m.weight.shape[0], -1).float().mean(dim=1).cpu() for _, m in self.layers]
        )

    # ---- selection ------------------------------------------------------------------------
    def select_neurons(
        self,
        counts: torch.Tensor,
        n: int,
        *,
        iteration: int = 0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Global neuron indices int64 ``[n, m]`` for ``n`` samples, by the rule of ``iteration``.

        ``counts`` ``[neurons]`` are the reference coverage counts. Rules: ``random_uncovered``
        (uniform among neurons with count 0, then random covered ones if too few),
        ``most_covered`` / ``rarely_covered`` (highest / lowest counts, ties broken at random per
        sample), ``top_weight`` (uniform among the top-weight pool). The ``m`` indices of a
        sample are distinct. ``generator`` defaults to one seeded with the attack's ``seed``.
        """
        counts = torch.as_tensor(counts).reshape(-1).cpu()
        if counts.numel() != self.num_neurons:
            raise ConfigError(f"counts has {counts.numel()} entries, the attacked layers have {self.num_neurons} neurons.")
        gen = generator if generator is not None else make_generator(self.seed)
        m = min(self.neurons_per_sample, self.num_neurons)
        noise = torch.rand((int(n), self.num_neurons), generator=gen, dtype=torch.float64)  # [0, 1) tie-breaks
        c = counts.to(torch.float64).unsqueeze(0)
        rule = self.rules[iteration % len(self.rules)]
        if rule == "random_uncovered":
            score = noise + (c == 0).to(torch.float64)
        elif rule == "most_covered":
            score = noise + c
        elif rule == "rarely_covered":
            score = noise - c
        else:  # top_weight
            pool = max(m, math.ceil(self.weight_portion * self.num_neurons))
            in_pool = torch.zeros(self.num_neurons, dtype=torch.float64)
            in_pool[self.weight_scores().topk(pool).indices] = 1.0
            score = noise + in_pool.unsqueeze(0)
        return score.topk(m, dim=1).indices

    # ---- neuron values with the graph kept ------------------------------------------------
    def neuron_values(self, x: torch.Tensor) -> torch.Tensor:
        """Output neuron values ``[B, neurons]`` of raw images ``x``, differentiable in ``x``.

        A layer that runs more than once per forward pass gives its last call's values.
        """
        captured: list[torch.Tensor | None] = [None] * len(self.layers)

        def make(i: int, module: nn.Module) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
            def hook(mod: nn.Module, args: tuple, output: torch.Tensor) -> None:
                values = neuron_values(output, module)
                captured[i] = values.clone() if values is output else values  # an in-place activation may follow

            return hook

        handles = [m.register_forward_hook(make(i, m)) for i, (_, m) in enumerate(self.layers)]
        try:
            self.model.features(self.model.preprocess(x))
        finally:
            for h in handles:
                h.remove()
        missing = [name for (name, _), v in zip(self.layers, captured) if v is None]
        if missing:
            raise ConfigError(f"layers {missing} did not run in the model's features(): pick layers of the body.")
        return torch.cat(captured, dim=1)  # type: ignore[arg-type]

    # ---- the attack -----------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial versions of raw images ``x`` ``[N, C, H, W]`` in ``[0, 1]`` (``y`` is ignored)."""
        return self.generate(x).x_adv

    def generate(self, x: torch.Tensor) -> CoverageGuidedResult:
        """The attack on ``x``, with the neurons it selected and the coverage counts used."""
        check_image_attack_input(self.model, x)
        if self.reference is not None:
            if self._reference_counts is None:
                self._reference_counts = self.coverage_counts(self.reference)
            counts = self._reference_counts
        else:
            counts = self.coverage_counts(x) if x.shape[0] else torch.zeros(self.num_neurons, dtype=torch.int64)
        device = next(self.model.parameters()).device
        generator = make_generator(self.seed)
        r = len(self.rules)
        m = min(self.neurons_per_sample, self.num_neurons)
        if x.shape[0] == 0:
            return CoverageGuidedResult(x.clone(), torch.zeros(0, r, m, dtype=torch.long), counts)
        outs, selections = [], []
        with attack_mode(self.model):
            for sl in batch_slices(int(x.shape[0]), self.batch_size, self.progress, f"{self.strategy} attack"):
                xb = x[sl].to(device=device, dtype=torch.float32)
                chosen = torch.stack(
                    [self.select_neurons(counts, xb.shape[0], iteration=i, generator=generator) for i in range(r)], dim=1
                )
                chosen_dev = chosen.to(device)

                def objective(x_adv: torch.Tensor, iteration: int, chosen_dev: torch.Tensor = chosen_dev) -> torch.Tensor:
                    return self.neuron_values(x_adv).gather(1, chosen_dev[:, iteration % r]).sum(dim=1)

                adv = sign_gradient_pgd(
                    xb, objective, eps=self.eps_pixel, step_size=self.step_pixel, steps=self.steps,
                    start_random=self.random_start, generator=generator, maximize=True,
                )
                outs.append(finish(adv, x[sl], self.eps_pixel))
                selections.append(chosen)
        return CoverageGuidedResult(torch.cat(outs), torch.cat(selections), counts)

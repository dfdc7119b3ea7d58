"""ReMoS slicing: ordinal scores of the teacher's weights and the slice masks.

Zhang et al., ICSE 2022, "ReMoS: Reducing Defect Inheritance in Transfer Learning via
Relevant Model Slicing". Given a :class:`~safetransfer.coverage.CoverageProfile` of the
teacher on the student's data:

1. **Weight coverage** of a weight = coverage count of its input neuron + of its output
   neuron (samples, so an integer in ``[0, 2·n_samples]``). A conv weight
   ``[out, in/groups, kh, kw]`` connects output channel ``o`` to input channel
   ``(o // (out/groups)) · (in/groups) + j``; its ``kh·kw`` kernel elements share the score.
2. **Ordinal score** = rank(weight coverage) − rank(|w|), both ranks over ALL sliced weights
   of the model together.
3. Keep the top ``1 − α`` by score (``α = ratio``), exclude the rest: the excluded weights
   are large in magnitude but little used by the student's data, where a teacher's defect
   hides. They are then reset (zeroed, as the ReMoS code does, or re-initialised) and the
   student is fine-tuned.

Ranks, ties and the cut (``ranking``; deterministic, documented and tested)
    ``"ordinal"`` (the default): the ReMoS artifact's rule (``CV_backdoor/remos/remos_pruner.py``,
    ``ReMoSPruner.weight_prune``):

    - coverage rank: the (output neuron, input neuron) pairs of all layers are sorted by their
      weight coverage with a *stable* sort, ties kept in the order the artifact enumerates
      them (layers in the order sliced, then input neuron, then output neuron); a pair's rank
      is the number of weights of the pairs before it (each pair holds its ``kh·kw`` kernel
      weights, which share its rank);
    - magnitude rank: the weights sorted by |w| with a stable sort, ties in flat order (layers
      in the order sliced, each weight tensor in row-major order); a weight's rank is its
      position;
    - the cut: with the scores sorted, ``threshold = sorted[int(α·N)]`` (``N − 1`` at most), and
      every weight scoring ``<= threshold`` is excluded: about ``α·N + 1`` weights, more where
      scores tie at the threshold. α = 0 excludes nothing (the artifact would still exclude
      the lowest-scoring weights).

    A grouped or depthwise conv (EfficientNet's), which the artifact's code cannot index (it
    assumes every input channel meets every output channel), enumerates the pairs that exist:
    output channel ``o`` meets input channel ``(o // (out/groups)) · (in/groups) + j``.

    ``"min"`` (ours, the first round's rule): rank = *minimum* rank, the number of sliced weights
    with a strictly smaller value (equal coverages share a rank, equal |w| share a rank);
    exactly ``floor(α·N + 0.5)`` weights are excluded, the lowest scores, ties at the cut
    broken by the lower flat index. It does not depend on the order the layers are listed in,
    and it excludes exactly the share asked for; its slices differ from the artifact's in the
    weights whose coverage or magnitude ties (see ``benchmarks/results/remos_rules.json``).

Biases are never sliced: a bias connects to no input neuron, so ReMoS's weight coverage
(input neuron + output neuron) is undefined for it; biases are also a tiny share (< 0.5%)
of the parameters. Only ``module.weight`` of each sliced ``Conv2d`` / ``Linear`` is masked.

Speed: everything runs in numpy on flat arrays, no Python loop over weights. ``"min"``:
coverage ranks need no sort (integer histogram + cumulative sum, then a gather); |w| ranks come
from one in-place sort of int64 keys ``(float32 bits of |w|) << 32 | flat index`` (the bit
pattern of a non-negative float is monotone), run starts and ``np.maximum.accumulate`` give the
minimum rank of each tie group, and a scatter puts ranks back in flat order; the cut is one
``np.partition``. ``"ordinal"``: one sort of int64 keys ``coverage << 32 | artifact position``
for the pairs and one of the |w| keys (on a second thread), each followed by one scatter of
positions; the cut is one ``np.partition``. Extra memory at the peak: a few times the
weights' float32 size, more for ``"ordinal"`` (both sorts at once); measured in
``benchmarks/results/slicing.json``.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import nn

from safetransfer.coverage import (
    CoverageProfile,
    neuron_counts,
    resolve_layers,
)
from safetransfer.errors import CheckpointError, ConfigError, unknown_name
from safetransfer.models.serialization import (
    load_tensors_and_json,
    save_tensors_and_json,
)
from safetransfer.seeding import named_seed

SLICE_FORMAT = "safetransfer-slice/1"
MASKS_FILE = "masks.safetensors"
SLICE_JSON = "slice.json"
_CHUNK = 1 << 22  # elements per chunk of the chunked passes (keeps temporaries ~32 MB)

Method = Literal["remos", "magnitude"]
ApplyMode = Literal["zero", "reinit"]
RANKINGS = ("ordinal", "min")  # "ordinal": the ReMoS artifact's ranks and cut; "min": ours


# ---- small exact building blocks --------------------------------------------------------------
def exclusion_count(ratio: float, n: int) -> int:
    """How many of ``n`` weights a slice of ratio ``α`` excludes: ``floor(α·n + 0.5)``."""
    check_ratio(ratio)
    return min(n, int(math.floor(ratio * n + 0.5)))


def check_ratio(ratio: float) -> None:
    """Raise :class:`ConfigError` unless ``0 <= ratio < 1``."""
    if not 0.0 <= float(ratio) < 1.0:
        raise ConfigError(f"ratio (α, the share of weights excluded) must lie in [0, 1), got {ratio}.")


def min_ranks_from_histogram(values: np.ndarray, hist: np.ndarray) -> np.ndarray:
    """Minimum ranks of non-negative integers given their histogram over the whole set.

    ``rank(v)`` = number of elements with a value strictly below ``v`` = exclusive cumulative
    sum of ``hist`` at ``v``. No comparison sort: a bincount, a cumsum and a gather.
    """
    before = np.cumsum(hist, dtype=np.int64) - hist
    return before[values]


def min_ranks_int(values: np.ndarray) -> np.ndarray:
    """Minimum ranks (``scipy.stats.rankdata(method="min") − 1``) of non-negative integers."""
    values = np.asarray(values)
    if values.size and values.min() < 0:
        raise ConfigError("min_ranks_int needs non-negative integers.")
    return min_ranks_from_histogram(values, np.bincount(values.ravel()))


def _rank_dtype(n: int) -> type:
    return np.int32 if n < 2**31 else np.int64


def magnitude_min_ranks(weights: Sequence[np.ndarray]) -> np.ndarray:
    """Minimum ranks of ``|w|`` over the concatenation of float32 arrays ``weights`` (flat C order).

    rank = number of weights with a strictly smaller ``|w|`` (so ``-0.0`` ties ``0.0``).
    One in-place sort of int64 keys ``bits(|w|) << 32 | flat index``: the IEEE bit pattern of a
    non-negative float32 (sign bit cleared) orders like the value, and fits 31 bits, so the
    key is a non-negative int64. Then run starts of equal |w| and ``np.maximum.accumulate``
    give each position the start of its tie group, and a scatter returns the ranks to flat
    order. NaN weights rank above everything.
    """
    keys = _sorted_magnitude_keys(weights)
    n = int(keys.size)
    dtype = _rank_dtype(n)
    run_start = np.empty(n, dtype=dtype)
    if n:
        run_start[0] = 0
    for a in range(1, n, _CHUNK):
        b = min(n, a + _CHUNK)
        new_value = np.bitwise_xor(keys[a:b], keys[a - 1 : b - 1]) >= (1 << 32)
        np.multiply(np.arange(a, b, dtype=dtype), new_value, out=run_start[a:b])
    np.maximum.accumulate(run_start, out=run_start)  # each position -> start of its tie group
    np.bitwise_and(keys, np.int64(0xFFFFFFFF), out=keys)  # keys now hold flat indices, sorted by |w|
    ranks = np.empty(n, dtype=dtype)
    ranks[keys] = run_start
    return ranks


def _sorted_magnitude_keys(weights: Sequence[np.ndarray]) -> np.ndarray:
    """int64 keys ``bits(|w|) << 32 | flat index`` of the concatenated ``weights``, sorted in place.

    The IEEE bit pattern of a non-negative float32 (sign bit cleared) orders like the value and
    fits 31 bits, so the sorted keys order the weights by |w|, ties by flat index (a stable
    sort's order) with one sort of plain integers.
    """
    n = int(sum(int(w.size) for w in weights))
    if n >= 2**32:
        raise ConfigError(f"{n} weights: the packed sort key holds at most 2**32 indices.")
    keys = np.empty(n, dtype=np.int64)
    start = 0
    for w in weights:
        flat = np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
        for a in range(0, flat.size, _CHUNK):
            part = flat[a : a + _CHUNK]
            out = keys[start + a : start + a + part.size]
            np.bitwise_and(part.view(np.int32), np.int32(0x7FFFFFFF), out=out, casting="unsafe")
            np.left_shift(out, 32, out=out)
            out |= np.arange(start + a, start + a + part.size, dtype=np.int64)
        start += flat.size
    keys.sort()
    return keys


def magnitude_ordinal_ranks(weights: Sequence[np.ndarray], dtype: Any = None) -> np.ndarray:
    """Ordinal ranks of ``|w|`` over the concatenated ``weights`` (position in a stable sort; flat order).

    The ReMoS artifact's magnitude rank (``sorted(..., key=|w|)`` over the weights in flat order):
    one sort of packed keys, then one scatter of the positions.
    """
    keys = _sorted_magnitude_keys(weights)
    ranks = np.empty(keys.size, dtype=dtype or _rank_dtype(keys.size))
    for a in range(0, keys.size, _CHUNK):
        ranks[keys[a : a + _CHUNK] & np.int64(0xFFFFFFFF)] = np.arange(a, a + min(_CHUNK, keys.size - a), dtype=ranks.dtype)
    return ranks


def threshold_mask(scores: np.ndarray, ratio: float) -> np.ndarray:
    """The ReMoS artifact's cut: True (excluded) where ``score <= sorted(scores)[int(ratio·N)]``.

    ``int(ratio·N)`` is clamped to ``N − 1``; ratio 0 excludes nothing. Every weight tied with
    the threshold score is excluded, so at least ``int(ratio·N) + 1`` are.
    """
    check_ratio(ratio)
    n = int(scores.size)
    if ratio == 0 or n == 0:
        return np.zeros(n, dtype=bool)
    k = min(int(n * ratio), n - 1)
    threshold = np.partition(scores, k)[k]
    return scores <= threshold


def lowest_mask(scores: np.ndarray, n_exclude: int) -> np.ndarray:
    """Bool mask of the ``n_exclude`` lowest ``scores`` (True = excluded).

    Ties at the cut: the lower flat index is excluded first. Exactly ``n_exclude`` are True.
    """
    n = int(scores.size)
    excluded = np.zeros(n, dtype=bool)
    if n_exclude <= 0:
        return excluded
    if n_exclude >= n:
        excluded[:] = True
        return excluded
    cut = np.partition(scores, n_exclude - 1)[n_exclude - 1]  # the n_exclude-th smallest score
    np.less(scores, cut, out=excluded)
    need = n_exclude - int(np.count_nonzero(excluded))
    for a in range(0, n, _CHUNK):  # the first `need` weights scoring exactly `cut`, by flat index
        if need <= 0:
            break
        tied = np.flatnonzero(scores[a : a + _CHUNK] == cut)[:need]
        excluded[a + tied] = True
        need -= tied.size
    return excluded


# ---- coverage of weights ----------------------------------------------------------------------
def _input_neuron_index(module: nn.Module) -> np.ndarray:
    """``[out, in/groups]`` index of the input neuron each weight row/column reads."""
    if isinstance(module, nn.Linear):
        return np.broadcast_to(np.arange(module.in_features), (module.out_features, module.in_features))
    out_c, in_g = int(module.weight.shape[0]), int(module.weight.shape[1])
    out_per_group = out_c // int(module.groups)
    group = np.arange(out_c) // out_per_group
    return group[:, None] * in_g + np.arange(in_g)[None, :]


def _pair_coverage(module: nn.Module, input_counts: np.ndarray, output_counts: np.ndarray) -> np.ndarray:
    """Weight coverage per (output neuron, input slot) pair, ``[out, in/groups]`` int64."""
    return output_counts.astype(np.int64)[:, None] + input_counts.astype(np.int64)[_input_neuron_index(module)]


def weight_coverage(module: nn.Module, input_counts: torch.Tensor, output_counts: torch.Tensor) -> torch.Tensor:
    """Weight coverage (int64, the weight's shape): count of its input neuron + of its output neuron."""
    _check_counts(module, "layer", input_counts, output_counts)
    pair = _pair_coverage(module, input_counts.cpu().numpy(), output_counts.cpu().numpy())
    shape = tuple(module.weight.shape)
    return torch.from_numpy(np.broadcast_to(pair.reshape(pair.shape + (1,) * (len(shape) - 2)), shape).copy())


def _check_counts(module: nn.Module, name: str, input_counts: torch.Tensor, output_counts: torch.Tensor) -> None:
    n_in, n_out = neuron_counts(module)
    if int(input_counts.numel()) != n_in or int(output_counts.numel()) != n_out:
        raise ConfigError(
            f"the profile of layer '{name}' has {input_counts.numel()} input / {output_counts.numel()} output "
            f"neurons but the layer has {n_in} / {n_out}: was the profile made on another model?"
        )


# ---- scores -----------------------------------------------------------------------------------
@dataclass
class _Layout:
    """Where each sliced layer's weights sit in the flat arrays."""

    names: list[str]
    modules: list[nn.Module]
    shapes: list[tuple[int, ...]]
    offsets: list[int]  # start of each layer, plus the total at the end

    @property
    def total(self) -> int:
        return self.offsets[-1]

    def view(self, flat: np.ndarray, i: int) -> np.ndarray:
        return flat[self.offsets[i] : self.offsets[i + 1]].reshape(self.shapes[i])


def _layout(pairs: list[tuple[str, nn.Module]]) -> _Layout:
    offsets = [0]
    for _, m in pairs:
        offsets.append(offsets[-1] + int(m.weight.numel()))
    return _Layout([n for n, _ in pairs], [m for _, m in pairs], [tuple(m.weight.shape) for _, m in pairs], offsets)


def _weights_np(module: nn.Module) -> np.ndarray:
    """The weight as a float32 numpy array (no copy for a CPU float32 weight)."""
    return module.weight.detach().to("cpu", torch.float32).numpy()


def _profiled_pair_coverage(profile: CoverageProfile, name: str, module: nn.Module) -> np.ndarray:
    """The ``[out, in/groups]`` weight coverage of one profiled layer, its counts checked first."""
    lc = profile.layer(name)
    _check_counts(module, name, lc.input_counts, lc.output_counts)
    pair = _pair_coverage(module, lc.input_counts.cpu().numpy(), lc.output_counts.cpu().numpy())
    if pair.size and pair.min() < 0:
        raise ConfigError(f"negative coverage counts in layer '{name}'.")
    return pair


def _broadcast_pairs(layout: _Layout, i: int, pair_values: np.ndarray, out: np.ndarray) -> None:
    """Write ``[out, in/groups]`` per-pair values into layer ``i``'s view of ``out``, over each kernel."""
    target = layout.view(out, i)
    target[...] = pair_values.reshape(pair_values.shape + (1,) * (target.ndim - 2))


def _coverage_ranks(layout: _Layout, profile: CoverageProfile, out: np.ndarray) -> None:
    """Write rank(weight coverage) of every weight into ``out`` (flat), by histogram."""
    pairs, hist = [], np.zeros(1, dtype=np.int64)
    for name, module in zip(layout.names, layout.modules):
        pair = _profiled_pair_coverage(profile, name, module)
        kernel = int(np.prod(module.weight.shape[2:], dtype=np.int64))
        h = np.bincount(pair.ravel()) * kernel
        if h.size > hist.size:
            h[: hist.size] += hist
            hist = h
        else:
            hist[: h.size] += h
        pairs.append(pair)
    before = np.cumsum(hist, dtype=np.int64) - hist
    for i, pair in enumerate(pairs):
        _broadcast_pairs(layout, i, before[pair].astype(out.dtype, copy=False), out)


def _artifact_pair_coverage(module: nn.Module, input_counts: np.ndarray, output_counts: np.ndarray) -> np.ndarray:
    """The layer's pair coverages in the artifact's enumeration order, flat (int64).

    The artifact loops over input neurons, then output neurons. Arranged ``[groups, in/groups,
    out/groups]`` (input neuron ``g·in_g + j`` meets output neuron ``g·per_group + o'``), the
    row-major order of that array is exactly that order over the pairs that exist.
    """
    groups = int(getattr(module, "groups", 1))
    in_g = int(module.weight.shape[1])
    per_group = int(module.weight.shape[0]) // groups
    inputs = input_counts.astype(np.int64).reshape(groups, in_g)[:, :, None]
    outputs = output_counts.astype(np.int64).reshape(groups, per_group)[:, None, :]
    return (inputs + outputs).ravel()


def _to_weight_layout(module: nn.Module, artifact_order: np.ndarray) -> np.ndarray:
    """Per-pair values in the artifact's order (see :func:`_artifact_pair_coverage`) as ``[out, in/groups]``."""
    groups = int(getattr(module, "groups", 1))
    out_c, in_g = int(module.weight.shape[0]), int(module.weight.shape[1])
    return artifact_order.reshape(groups, in_g, out_c // groups).transpose(0, 2, 1).reshape(out_c, in_g)


def _coverage_ordinal_ranks(layout: _Layout, profile: CoverageProfile, out: np.ndarray) -> None:
    """Write the artifact's ordinal coverage rank of every weight into ``out`` (flat).

    The pairs of all layers, in the artifact's enumeration order, get one int64 key each,
    ``coverage << 32 | position``; one sort orders them as the artifact's stable sort does. An
    exclusive running sum of the pairs' kernel sizes in that order is each pair's rank; the
    positions (the keys' low bits) say where it goes back. No division, no gather of layer
    parameters where all layers share one kernel size (Linear stacks, BERT).
    """
    sizes, kernels = [], []
    for name, module in zip(layout.names, layout.modules):
        _check_counts(module, name, profile.layer(name).input_counts, profile.layer(name).output_counts)
        sizes.append(int(module.weight.shape[0]) * int(module.weight.shape[1]))
        kernels.append(int(np.prod(module.weight.shape[2:], dtype=np.int64)))
    bases = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    total = int(bases[-1])
    if total >= 2**32:
        raise ConfigError(f"{total} neuron pairs: the packed sort key holds at most 2**32 positions.")
    keys = np.empty(total, dtype=np.int64)
    for idx, (name, module) in enumerate(zip(layout.names, layout.modules)):
        lc = profile.layer(name)
        cov = _artifact_pair_coverage(module, lc.input_counts.cpu().numpy(), lc.output_counts.cpu().numpy())
        if cov.size and (cov.min() < 0 or cov.max() >= 2**31):
            raise ConfigError(f"coverage counts of layer '{name}' out of range (negative, or 2**31 samples or more).")
        block = keys[bases[idx] : bases[idx + 1]]
        np.left_shift(cov, 32, out=block)
        block |= np.arange(bases[idx], bases[idx + 1], dtype=np.int64)
    keys.sort()
    pair_rank = np.empty(total, dtype=out.dtype)
    one_kernel = len(set(kernels)) == 1
    kern_arr = np.asarray(kernels, dtype=np.int64)
    running = 0
    for a in range(0, total, _CHUNK):
        position = keys[a : a + _CHUNK] & np.int64(0xFFFFFFFF)
        if one_kernel:
            starts = np.arange(a, a + position.size, dtype=np.int64) * kernels[0]
        else:
            kern = kern_arr[np.searchsorted(bases, position, side="right") - 1]
            starts = np.cumsum(kern) - kern + running
            running += int(kern.sum())
        pair_rank[position] = starts
    del keys
    for idx, module in enumerate(layout.modules):
        _broadcast_pairs(layout, idx, _to_weight_layout(module, pair_rank[bases[idx] : bases[idx + 1]]), out)


def _flat_scores(
    model: nn.Module, profile: CoverageProfile | None, layers: Sequence[str] | None, ranking: str = "min"
) -> tuple[_Layout, np.ndarray]:
    """ReMoS scores as one flat array (``ranking``: ``"ordinal"`` or ``"min"`` ranks); with
    ``profile=None`` the magnitude score rank(|w|) (minimum ranks)."""
    if profile is not None and layers is None:
        layers = profile.layer_names
    pairs = resolve_layers(model, layers)
    layout = _layout(pairs)
    n = layout.total
    if n == 0:
        raise ConfigError("the chosen layers hold no weights to slice.")
    if ranking not in RANKINGS:
        raise unknown_name("slice ranking", ranking, list(RANKINGS))
    if profile is not None and ranking == "ordinal":
        dtype = np.int64 if n >= 2**30 else np.int32
        scores = np.empty(n, dtype=dtype)
        # The two rankings are independent and numpy's sorts and scatters release the GIL: the |w|
        # ranks are made on a second thread while this one makes the coverage ranks.
        with ThreadPoolExecutor(max_workers=1) as pool:
            magnitude = pool.submit(magnitude_ordinal_ranks, [_weights_np(m) for m in layout.modules], dtype)
            _coverage_ordinal_ranks(layout, profile, scores)
            np.subtract(scores, magnitude.result(), out=scores)
        return layout, scores
    mag_rank = magnitude_min_ranks([_weights_np(m) for m in layout.modules])
    if profile is None:
        return layout, mag_rank  # magnitude pruning: score = rank(|w|)
    scores = np.empty(n, dtype=mag_rank.dtype)
    _coverage_ranks(layout, profile, scores)
    np.subtract(scores, mag_rank, out=scores)
    return layout, scores


def ordinal_scores(
    model: nn.Module, profile: CoverageProfile, layers: Sequence[str] | None = None, ranking: str = "ordinal"
) -> dict[str, torch.Tensor]:
    """ReMoS's ordinal score of each weight, rank(weight coverage) − rank(|w|), per layer (int tensors).

    Ranks (0 = smallest) over all weights of ``layers`` (default: the profile's layers)
    together; ``ranking``: ``"ordinal"`` (the artifact's stable-sort ranks) or ``"min"`` (minimum
    ranks), see the module doc.
    """
    layout, scores = _flat_scores(model, profile, layers, ranking)
    return {name: torch.from_numpy(layout.view(scores, i)) for i, name in enumerate(layout.names)}


# ---- the slice --------------------------------------------------------------------------------
@dataclass
class Slice:
    """Which weights of each sliced layer ReMoS keeps: ``masks[name]`` bool, True = kept.

    ``stats`` holds the per-layer summary computed from the teacher's weights when the slice
    was made (see :meth:`summary`). Biases are never sliced.
    """

    masks: dict[str, torch.Tensor]
    ratio: float
    method: str = "remos"
    metric: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def num_weights(self) -> int:
        return int(sum(int(m.numel()) for m in self.masks.values()))

    @property
    def num_excluded(self) -> int:
        return int(sum(int((~m).sum()) for m in self.masks.values()))

    def summary(self) -> dict[str, Any]:
        """Per layer: weights, share excluded, mean |w| of excluded vs kept, max |w| excluded; and totals."""
        return {
            "format": SLICE_FORMAT,
            "method": self.method,
            "metric": self.metric,
            "params": self.params,
            "ratio": self.ratio,
            "weights": self.num_weights,
            "excluded": self.num_excluded,
            "layers": [{"name": name, **self.stats.get(name, _mask_only_stats(mask))} for name, mask in self.masks.items()],
        }

    # ---- applying -------------------------------------------------------------------------
    def _modules(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        out = []
        for name, mask in self.masks.items():
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise unknown_name("sliced layer", name, [n for n, _ in resolve_layers(model)]) from None
            if tuple(module.weight.shape) != tuple(mask.shape):
                raise ConfigError(
                    f"slice mask of '{name}' has shape {tuple(mask.shape)} but the layer's weight is {tuple(module.weight.shape)}."
                )
            out.append((name, module))
        return out

    def apply(self, model: nn.Module, mode: ApplyMode = "zero", seed: int = 0) -> nn.Module:
        """Reset the excluded weights of ``model`` in place and return it.

        ``"zero"``: set them to 0 (as the ReMoS code does). ``"reinit"``: draw them from the
        layer type's default PyTorch init, ``kaiming_uniform_(a=√5)``, i.e. U(±1/√fan_in)
        (note: BERT's own init is N(0, 0.02)), seeded per layer by ``seed`` and the layer name.
        Kept weights and biases are untouched.
        """
        if mode not in ("zero", "reinit"):
            raise unknown_name("slice apply mode", str(mode), ["zero", "reinit"])
        with torch.no_grad():
            for name, module in self._modules(model):
                w = module.weight
                keep = self.masks[name].to(w.device)
                if mode == "zero":
                    w.masked_fill_(~keep, 0.0)
                else:
                    fresh = torch.empty(w.shape, dtype=torch.float32)
                    gen = torch.Generator().manual_seed(named_seed(seed, name))
                    nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=gen)
                    w.copy_(torch.where(keep, w, fresh.to(w.device, w.dtype)))
        return model

    def enforce(self, model: nn.Module) -> nn.Module:
        """Re-zero the excluded weights (call after each optimiser step for "frozen at zero")."""
        with torch.no_grad():
            for name, module in self._modules(model):
                module.weight.masked_fill_(~self.masks[name].to(module.weight.device), 0.0)
        return model

    # ---- files ----------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``masks.safetensors`` (uint8, 1 = kept) and ``slice.json`` (the summary), atomically."""

        tensors = {name: m.to(torch.uint8).contiguous() for name, m in self.masks.items()}
        return save_tensors_and_json(folder, tensors, MASKS_FILE, self.summary(), SLICE_JSON)

    @classmethod
    def load(cls, folder: str | Path) -> "Slice":
        """Read a slice written by :meth:`save`."""

        doc, tensors = load_tensors_and_json(folder, MASKS_FILE, SLICE_JSON, SLICE_FORMAT, "slice")
        masks, stats = {}, {}
        for entry in doc["layers"]:
            name = entry["name"]
            if name not in tensors:
                raise CheckpointError(f"{Path(folder) / MASKS_FILE} lacks the mask of layer '{name}'.")
            masks[name] = tensors[name].bool()
            stats[name] = {k: v for k, v in entry.items() if k != "name"}
        return cls(masks, float(doc["ratio"]), doc.get("method", "remos"), doc.get("metric"), doc.get("params", {}), stats)


def _mask_only_stats(mask: torch.Tensor) -> dict[str, float]:
    n = int(mask.numel())
    return {"weights": n, "excluded_share": float((~mask).sum()) / n if n else 0.0}


def _layer_stats(weight: np.ndarray, excluded: np.ndarray) -> dict[str, float]:
    """Weights, share excluded, mean |w| of excluded vs kept, max |w| excluded (float32 units of the weight)."""
    a = np.abs(weight.reshape(-1))
    n, n_ex = int(a.size), int(np.count_nonzero(excluded))
    ex_vals = a[excluded]
    total = float(a.sum(dtype=np.float64))
    ex_sum = float(ex_vals.sum(dtype=np.float64))
    return {
        "weights": n,
        "excluded": n_ex,
        "excluded_share": n_ex / n if n else 0.0,
        "mean_abs_excluded": ex_sum / n_ex if n_ex else 0.0,
        "mean_abs_kept": (total - ex_sum) / (n - n_ex) if n > n_ex else 0.0,
        "max_abs_excluded": float(ex_vals.max()) if n_ex else 0.0,
    }


def _make_slice(
    layout: _Layout, scores: np.ndarray, ratio: float, method: str, metric: str | None, params: dict[str, Any],
    ranking: str = "min",
) -> Slice:
    if ranking == "ordinal":
        excluded = threshold_mask(scores, ratio)
    else:
        excluded = lowest_mask(scores, exclusion_count(ratio, layout.total))
    del scores
    masks, stats = {}, {}
    for i, (name, module) in enumerate(zip(layout.names, layout.modules)):
        ex = layout.view(excluded, i)
        masks[name] = torch.from_numpy(~ex)
        stats[name] = _layer_stats(_weights_np(module), ex.reshape(-1))
    return Slice(masks, float(ratio), method, metric, params, stats)


def compute_slice(
    model: nn.Module, profile: CoverageProfile, ratio: float = 0.1, layers: Sequence[str] | None = None,
    ranking: str = "ordinal",
) -> Slice:
    """ReMoS's slice: keep the top ``1 − ratio`` weights by ordinal score, exclude the rest.

    ``layers`` defaults to the profile's layers (all sliceable layers of the model when it
    was profiled with the defaults). ``ranking``: ``"ordinal"``, the artifact's ranks and cut
    (about ``α·N + 1`` excluded, more on ties at the threshold), or ``"min"``, ours (exactly
    ``floor(α·N + 0.5)``); see the module docstring.
    """
    check_ratio(ratio)
    layout, scores = _flat_scores(model, profile, layers, ranking)
    params = {**profile.params, "ranking": ranking}
    return _make_slice(layout, scores, ratio, "remos", profile.metric, params, ranking)


def magnitude_slice(model: nn.Module, ratio: float, layers: Sequence[str] | None = None) -> Slice:
    """The magnitude-pruning baseline's mask: exclude the ``ratio`` smallest |w| (global threshold).

    Same ranking code as ReMoS with score = rank(|w|); ties at the cut exclude the lower
    flat index first. ``layers`` defaults to all sliceable layers.
    """
    check_ratio(ratio)
    layout, scores = _flat_scores(model, None, layers)
    return _make_slice(layout, scores, ratio, "magnitude", None, {})

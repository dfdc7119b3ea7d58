"""Neuron coverage profiling for ReMoS (Zhang et al., ICSE 2022, "ReMoS: Reducing Defect
Inheritance in Transfer Learning via Relevant Model Slicing").

ReMoS runs the teacher over the student's data and counts, for every weight's two ends
(the neuron it reads and the neuron it writes), how many samples *cover* that neuron.
This module does that count for the model's sliceable layers (``Conv2d`` / ``Linear``).

Neurons
    A forward hook on each profiled layer sees the layer's INPUT and OUTPUT, so a weight's
    input neuron and output neuron are both measured on the same forward pass.

    - conv (``[B, C, H, W]``): one neuron per channel, value = spatial mean;
    - linear (``[B, F]``): one neuron per feature;
    - transformer linear (``[B, T, F]``): the mean over the *real* tokens only, using the
      ``attention_mask`` of the current batch (padding never moves a neuron's value);
      any other extra dimensions are averaged.

    Values are in the layer's own units (pre-activation for outputs).

Scaling (``scaling``; what "min-max scaled" means for ``nc``)
    ``"tensor"`` (the default, as the ReMoS artifact's ``MyNeuronCoverage``,
    ``CV_backdoor/remos/coverage/my_neuron_coverage.py``): each sample's *whole* layer tensor
    (all ``C×H×W`` values of a conv side, all ``T×F`` values of a token side) is min-max scaled
    to ``[0, 1]``, then each neuron's mean is taken. By linearity this is
    ``neuron value > min + threshold · (max − min)`` with ``min`` / ``max`` over the whole tensor
    of that sample, which is how it is computed (no scaled copy is made). ``"neuron"`` (ours,
    the first round's rule): the neuron values (channel means) are min-max scaled among
    themselves. The two differ for conv and token layers only (for a ``[B, F]`` side the tensor
    *is* the neuron values). Padding (text): the artifact pads every text to the maximum length
    and takes padding positions into both the scaling and the means; here padding never counts
    (the minimum, maximum and means are over the real tokens of the ``attention_mask``), so a
    neuron's coverage does not depend on how long the batch's longest text is.
    ``tknc`` and ``snac_relative`` rank and threshold the neuron means *relative to each other*,
    which a per-sample affine scaling cannot change: both scalings give the same coverage.

Metrics (each a function ``values [B, N] -> covered bool [B, N]``)
    ``nc``
        Neuron coverage (Pei et al. 2017, DeepXplore, as used by ReMoS): the neuron's scaled
        value ``> threshold`` (default 0.5), scaled as ``scaling`` says (above).
    ``tknc``
        Top-k neuron coverage (Ma et al. 2018, DeepGauge): the ``k`` largest neurons of the
        layer per sample (``k`` clamped to the layer size). Ties at the k-th value go to
        the lower neuron index, so exactly ``k`` neurons are covered per sample.
    ``snac_deepgauge``
        Strong neuron activation coverage as DeepGauge defines it: the raw value is above
        the neuron's upper bound, the maximum seen on a reference (training) set, from a
        first pass with :func:`neuron_bounds`.
    ``snac_relative``
        The variant in the ReMoS code: scaled value ``> 1 - 1/k`` within the layer, i.e. the
        raw value is above ``max - (max - min) / k`` of that sample's layer.

The profiler is vectorised over the batch: each hook does one reduction (the neuron means),
one comparison and one sum into int64 counters; no activations are stored. For a layer that
is linear in the averaged dimensions (1×1 convs, transformer Linear layers) the output means
are ``W · (input means) + b`` when that is cheaper than reading the output again (exact up
to float rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from safetransfer.data.base import Split
from safetransfer.errors import CheckpointError, ConfigError, DataError, unknown_name
from safetransfer.models.serialization import (
    load_tensors_and_json,
    save_tensors_and_json,
)

METRICS: tuple[str, ...] = ("nc", "tknc", "snac_deepgauge", "snac_relative")
SIDES: tuple[str, str] = ("input", "output")
SCALINGS: tuple[str, str] = ("tensor", "neuron")  # "tensor": the ReMoS artifact's; "neuron": ours
PROFILE_FORMAT = "safetransfer-coverage/1"
COUNTS_FILE = "coverage.safetensors"
PROFILE_JSON = "coverage.json"

RawInputs = torch.Tensor | list[str] | Mapping[str, torch.Tensor]  # or a data-set Split
ValueRange = tuple[torch.Tensor, torch.Tensor]  # per-sample (min, max) of a layer tensor, [B, 1] each


# ---- neuron values ----------------------------------------------------------------------------
def neuron_values(x: torch.Tensor, module: nn.Module, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """One value per sample and neuron, ``[B, N]`` float32, from a layer's input or output tensor.

    Conv tensors ``[B, C, H, W]`` give the channel's spatial mean; linear tensors ``[B, F]``
    are the values themselves; ``[B, T, F]`` tensors (transformers) give the mean over the
    tokens where ``attention_mask`` ``[B, T]`` is 1 (all tokens without a mask); other
    shapes average every dimension between the batch and the last one.
    """
    if isinstance(module, nn.Conv2d):
        if x.dim() == 4:
            return _spatial_mean(x)
        if x.dim() == 3:  # unbatched conv input [C, H, W]
            return x.mean(dim=(1, 2)).float().unsqueeze(0)
        raise ConfigError(f"conv layer tensor of shape {tuple(x.shape)}: expected [B, C, H, W].")
    if x.dim() == 2:
        return x.float()
    if x.dim() == 3 and attention_mask is not None and attention_mask.shape == x.shape[:2]:
        m = attention_mask.to(x.dtype).unsqueeze(1)  # [B, 1, T]
        total = torch.bmm(m, x).squeeze(1)  # [B, F]: sum over real tokens
        return (total / m.sum(dim=2).clamp_min(1.0)).float()
    if x.dim() >= 3:
        return x.flatten(1, -2).mean(dim=1).float()
    return x.float().reshape(1, -1)


def tensor_range(x: torch.Tensor, module: nn.Module, attention_mask: torch.Tensor | None = None) -> ValueRange:
    """Each sample's minimum and maximum over its whole layer tensor, two float32 ``[B, 1]``.

    The range the ReMoS artifact min-max scales a sample's layer tensor by (``scaling="tensor"``):
    all ``C×H×W`` values of a conv tensor, all ``F`` of a ``[B, F]`` one, the real tokens' ``T×F``
    values of a ``[B, T, F]`` one with an ``attention_mask`` (padding excluded), every value of
    other shapes. One reduction pass per bound over a ``[B, -1]`` view in memory order (a
    channels-last map is read as it lies, never copied).
    """
    if isinstance(module, nn.Conv2d) and x.dim() == 3:  # unbatched conv input [C, H, W]
        x = x.unsqueeze(0)
    if x.dim() == 3 and attention_mask is not None and attention_mask.shape == x.shape[:2]:
        real = attention_mask.bool()  # [B, T]: each token's own min / max first (one pass each), then the real ones'
        inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
        lo = torch.where(real, x.amin(dim=2), inf).amin(dim=1, keepdim=True)
        hi = torch.where(real, x.amax(dim=2), -inf).amax(dim=1, keepdim=True)
        return lo.float(), hi.float()
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        x = x.permute(0, 2, 3, 1)  # the same values in memory order: the flat view below copies nothing
    flat = x.reshape(x.shape[0], -1) if x.dim() >= 2 else x.reshape(1, -1)
    # amin and amax separately: one fast pass each (torch.aminmax along a dimension is several times slower on CPU)
    return flat.amin(dim=1, keepdim=True).float(), flat.amax(dim=1, keepdim=True).float()


def _spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """``x.mean((2, 3))`` as float32 ``[B, C]``, by the fastest route on CPU for the spatial size.

    1×1 maps need no reduction; small maps (≤ 16 positions) reduce faster as a matrix-vector
    product than with the generic reduction kernel (about 2-4× on CPU). A channels-last map
    (as convolution layers hand on by default on CPU) is read as it lies, ``[B, H·W, C]``,
    by one batched product with the averaging weights: a ``[B·C, H·W]`` view of it would be a
    copy (measured 4-7× slower on 2×2 and 4×4 maps).
    """
    b, c, h, w = x.shape
    hw = h * w
    if hw == 1:
        return x.reshape(b, c).float()
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    if not channels_last and hw > 16:
        return x.mean(dim=(2, 3)).float()
    x = x.float()
    weights = torch.full((hw,), 1.0 / hw, dtype=x.dtype, device=x.device)
    if channels_last:
        return torch.matmul(weights, x.permute(0, 2, 3, 1).reshape(b, hw, c))  # [B, C]
    return torch.mv(x.reshape(b * c, hw), weights).view(b, c)


def _linear_shortcut(module: nn.Module, x: torch.Tensor, output: torch.Tensor) -> bool:
    """Whether the output neuron values are cheaper as ``W · (input values) + b`` than as a reduction.

    Exact by linearity (up to float rounding) for a ``Linear`` on ``[B, ..., F]`` (a mean of
    ``W x_t + b`` over tokens is ``W · mean(x_t) + b``) and for a 1×1, stride-1, ungrouped conv
    whose output keeps the input's spatial size (no padding). Worth it when the reduction
    reads at least a quarter as many values per neuron as the matrix product multiplies.
    """
    if isinstance(module, nn.Linear):
        reduced = math.prod(x.shape[1:-1]) if x.dim() >= 3 else 0
        return x.dim() >= 3 and output.shape[:-1] == x.shape[:-1] and reduced * 4 >= module.in_features
    if isinstance(module, nn.Conv2d):
        return (
            x.dim() == 4 and output.dim() == 4 and tuple(module.kernel_size) == (1, 1)
            and tuple(module.stride) == (1, 1) and module.groups == 1
            and output.shape[2:] == x.shape[2:] and x.shape[2] * x.shape[3] * 4 >= module.in_channels
        )
    return False


def output_values(
    module: nn.Module, x: torch.Tensor, output: torch.Tensor, input_values: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The output neuron values ``[B, N_out]`` of a layer, as :func:`neuron_values` of ``output``.

    Where the layer is linear in the reduced dimensions (see :func:`_linear_shortcut`) they
    come from ``input_values`` through the weight, without reading the output tensor again.
    """
    if _linear_shortcut(module, x, output):
        weight = module.weight.reshape(module.weight.shape[0], -1).to(input_values.dtype)
        if module.bias is None:
            return input_values @ weight.T
        return torch.addmm(module.bias.to(input_values.dtype), input_values, weight.T)
    return neuron_values(output, module, attention_mask)


def neuron_counts(module: nn.Module) -> tuple[int, int]:
    """``(input neurons, output neurons)`` of a ``Conv2d`` (channels) or ``Linear`` (features)."""
    if isinstance(module, nn.Conv2d):
        return int(module.in_channels), int(module.out_channels)
    if isinstance(module, nn.Linear):
        return int(module.in_features), int(module.out_features)
    raise ConfigError(f"only Conv2d and Linear layers have ReMoS neurons, got {type(module).__name__}.")


def minmax_scale(values: torch.Tensor) -> torch.Tensor:
    """Per-sample min-max scaling of ``[B, N]`` values over the layer to ``[0, 1]``.

    A sample whose values are all equal (a constant layer) scales to all zeros, never NaN.
    """
    lo = values.amin(dim=1, keepdim=True)
    span = values.amax(dim=1, keepdim=True) - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (values - lo) / safe, torch.zeros_like(values))


# ---- metrics: values [B, N] -> covered bool [B, N] --------------------------------------------
def _above_scaled(values: torch.Tensor, level: float, value_range: ValueRange | None = None) -> torch.Tensor:
    """``v > min + level · (max − min)`` per sample: min-max scaled value ``> level``, no division.

    ``min`` / ``max``: ``value_range`` (a whole layer tensor's, :func:`tensor_range`) or else the
    sample's ``values`` themselves. A constant sample (``max == min``) covers nothing for
    ``level >= 0``. (``amin`` and ``amax`` separately: ``torch.aminmax`` along a dimension is ~20×
    slower on CPU.)
    """
    if value_range is None:
        value_range = values.amin(dim=1, keepdim=True), values.amax(dim=1, keepdim=True)
    lo, hi = value_range
    return values > torch.lerp(lo, hi, level)  # lo + level * (hi - lo), per sample


def nc(values: torch.Tensor, threshold: float = 0.5, value_range: ValueRange | None = None) -> torch.Tensor:
    """Neuron coverage: the neuron's min-max scaled value is ``> threshold``.

    With ``value_range`` (each sample's ``(min, max)`` over its whole layer tensor, ``[B, 1]``
    each, from :func:`tensor_range`) the scaling is the ReMoS artifact's: covered when
    ``value > min + threshold · (max − min)``; a constant tensor covers nothing. Without it the
    neuron values are scaled among themselves (``scaling="neuron"``).
    """
    return _above_scaled(values, float(threshold), value_range)


def tknc(values: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Top-k neuron coverage (DeepGauge): the ``k`` largest neurons per sample.

    ``k`` is clamped to the layer size. Ties at the k-th largest value go to the lower
    neuron index, so exactly ``min(k, N)`` neurons are covered per sample, deterministically.
    """
    n = values.shape[1]
    k = max(1, min(int(k), n))
    kth = values.topk(k, dim=1).values[:, k - 1 : k]  # [B, 1] the k-th largest value
    above = values > kth
    need = k - above.sum(dim=1, keepdim=True)
    tied = values == kth
    return above | (tied & (tied.cumsum(dim=1, dtype=torch.int32) <= need))


def snac_relative(values: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Strong activation coverage as in the ReMoS code: scaled value ``> 1 - 1/k`` in the layer.

    Equivalently the raw value exceeds ``max - (max - min) / k`` of the sample's layer.
    """
    return _above_scaled(values, 1.0 - 1.0 / float(k))


def snac_deepgauge(values: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Strong neuron activation coverage (DeepGauge, Ma et al. 2018).

    A neuron is covered when its raw value is above ``upper`` ``[N]``, the neuron's maximum
    on a reference (training) set (see :func:`neuron_bounds`).
    """
    return values > upper.to(values.device, values.dtype).unsqueeze(0)


# ---- results ----------------------------------------------------------------------------------
@dataclass
class LayerCoverage:
    """Coverage counts of one layer: how many samples covered each input / output neuron."""

    input_counts: torch.Tensor  # int64 [in neurons]
    output_counts: torch.Tensor  # int64 [out neurons]

    def counts(self, side: str) -> torch.Tensor:
        if side not in SIDES:
            raise unknown_name("side", side, list(SIDES))
        return self.input_counts if side == "input" else self.output_counts


@dataclass
class CoverageProfile:
    """Per-layer neuron coverage counts over ``n_samples`` inputs, with the metric used.

    ``layers`` keeps the profiling order (the model's order). ``params`` holds the metric's
    parameters (``threshold`` for ``nc``, ``k`` for ``tknc`` / ``snac_relative``, the
    reference size of the bounds for ``snac_deepgauge``).
    """

    layers: dict[str, LayerCoverage]
    n_samples: int
    metric: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)

    def layer(self, name: str) -> LayerCoverage:
        if name not in self.layers:
            raise unknown_name("profiled layer", name, list(self.layers))
        return self.layers[name]

    def frequency(self, layer: str, side: str = "output") -> torch.Tensor:
        """Share of samples (float64 in ``[0, 1]``) that covered each neuron of ``layer``'s ``side``."""
        counts = self.layer(layer).counts(side)
        return counts.double() / max(self.n_samples, 1)

    def coverage_rate(self, layer: str | None = None, side: str = "output") -> float:
        """Share of neurons covered by at least one sample (one layer, or all layers together)."""
        names = [layer] if layer is not None else list(self.layers)
        hit = sum(int((self.layer(n).counts(side) > 0).sum()) for n in names)
        total = sum(int(self.layer(n).counts(side).numel()) for n in names)
        return hit / total if total else 0.0

    def summary(self) -> dict[str, Any]:
        """Metric, parameters, sample count and per-layer neuron counts and coverage rates (JSON-ready)."""
        return {
            "format": PROFILE_FORMAT,
            "metric": self.metric,
            "params": self.params,
            "n_samples": self.n_samples,
            "layers": [
                {
                    "name": name,
                    "input_neurons": int(lc.input_counts.numel()),
                    "output_neurons": int(lc.output_counts.numel()),
                    "input_coverage": self.coverage_rate(name, "input"),
                    "output_coverage": self.coverage_rate(name, "output"),
                }
                for name, lc in self.layers.items()
            ],
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``coverage.safetensors`` (int64 counts) and ``coverage.json`` into ``folder``, atomically."""

        tensors = {}
        for name, lc in self.layers.items():
            tensors[f"{name}::input"] = lc.input_counts.detach().cpu().to(torch.int64).contiguous()
            tensors[f"{name}::output"] = lc.output_counts.detach().cpu().to(torch.int64).contiguous()
        return save_tensors_and_json(folder, tensors, COUNTS_FILE, self.summary(), PROFILE_JSON)

    @classmethod
    def load(cls, folder: str | Path) -> "CoverageProfile":
        """Read a profile written by :meth:`save`."""

        doc, tensors = load_tensors_and_json(folder, COUNTS_FILE, PROFILE_JSON, PROFILE_FORMAT, "coverage profile")
        layers: dict[str, LayerCoverage] = {}
        for entry in doc["layers"]:
            name = entry["name"]
            try:
                layers[name] = LayerCoverage(tensors[f"{name}::input"], tensors[f"{name}::output"])
            except KeyError:
                raise CheckpointError(f"{Path(folder) / COUNTS_FILE} lacks the counts of layer '{name}'.") from None
        return cls(layers, int(doc["n_samples"]), str(doc["metric"]), dict(doc.get("params", {})))


@dataclass
class NeuronBounds:
    """Per-neuron minimum and maximum values on a reference set (DeepGauge's bounds).

    ``layers[name]`` maps ``"input_min"``, ``"input_max"``, ``"output_min"``, ``"output_max"``
    to float32 tensors ``[neurons]``.
    """

    layers: dict[str, dict[str, torch.Tensor]]
    n_samples: int

    def upper(self, layer: str, side: str) -> torch.Tensor:
        if layer not in self.layers:
            raise ConfigError(
                f"the neuron bounds have no layer '{layer}': compute them with neuron_bounds() over the same layers."
            )
        return self.layers[layer][f"{side}_max"]


# ---- the profiler -----------------------------------------------------------------------------
def resolve_layers(model: nn.Module, layers: Sequence[str] | None = None) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs to profile or slice: ``layers`` by name, default all sliceable.

    A :class:`~safetransfer.models.wrapper.TransferModel` offers ``sliceable_layers()``
    (the body's Conv2d / Linear layers, head excluded); any other module offers all its
    Conv2d / Linear layers. Unknown names raise an error listing the sliceable ones.
    """
    if hasattr(model, "sliceable_layers"):
        available = list(model.sliceable_layers())
    else:
        available = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if layers is None:
        return available
    if isinstance(layers, str):
        layers = [layers]
    by_name = dict(available)
    picked = []
    for name in dict.fromkeys(layers):  # in the order given, each once
        if name not in by_name:
            raise unknown_name("sliceable layer", name, [n for n, _ in available])
        picked.append((name, by_name[name]))
    if not picked:
        raise ConfigError("no layers to profile: pass at least one sliceable layer name (or None for all).")
    return picked


def _as_inputs(inputs: Any) -> RawInputs:
    """A data-set :class:`~safetransfer.data.base.Split` gives its inputs; anything else is kept."""

    return inputs.inputs if isinstance(inputs, Split) else inputs


def _num_inputs(inputs: RawInputs) -> int:
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() > 0 else 0
    if isinstance(inputs, list):
        return len(inputs)
    if isinstance(inputs, Mapping):
        first = next(iter(inputs.values()), None)
        return 0 if first is None else int(first.shape[0])
    raise DataError(f"inputs must be a tensor, a list of strings or a dict of tensors, got {type(inputs).__name__}.")


def _batches(inputs: RawInputs, batch_size: int) -> Iterator[RawInputs]:
    n = _num_inputs(inputs)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        if isinstance(inputs, Mapping):
            yield {k: v[start:stop] for k, v in inputs.items()}
        else:
            yield inputs[start:stop]


def _forward_fn(model: nn.Module) -> Callable[[RawInputs], tuple[Any, torch.Tensor | None]]:
    """``batch -> (model inputs on the model's device, attention mask or None)``."""
    device = next(iter(model.parameters())).device

    def prepare(batch: RawInputs) -> tuple[Any, torch.Tensor | None]:
        if hasattr(model, "preprocess") and not isinstance(batch, Mapping):
            batch = model.preprocess(batch)
        if isinstance(batch, Mapping):
            batch = {k: v.to(device) for k, v in batch.items()}
            return batch, batch.get("attention_mask")
        return batch.to(device), None

    return prepare


def _run(model: nn.Module, x: Any) -> None:
    if hasattr(model, "features"):
        model.features(x)  # the head is never profiled: skip it
    else:
        model(x)


Consumer = Callable[[str, str, torch.Tensor, ValueRange | None], None]


class _Hooks:
    """Forward hooks passing each layer's input and output neuron values to ``consume``.

    ``consume(layer, side, values, value_range)``: ``value_range`` is the side's per-sample
    :func:`tensor_range` when ``ranges`` is set, else ``None`` (not computed).
    """

    def __init__(self, layers: list[tuple[str, nn.Module]], consume: Consumer, ranges: bool = False) -> None:
        self.mask: torch.Tensor | None = None
        self.ranges = ranges
        self.handles = [m.register_forward_hook(self._make(name, m, consume)) for name, m in layers]

    def _make(self, name: str, module: nn.Module, consume: Consumer) -> Callable:
        def hook(mod: nn.Module, args: tuple, output: torch.Tensor) -> None:
            x = args[0]
            values_in = neuron_values(x, module, self.mask)
            consume(name, "input", values_in, tensor_range(x, module, self.mask) if self.ranges else None)
            values_out = output_values(module, x, output, values_in, self.mask)
            consume(name, "output", values_out, tensor_range(output, module, self.mask) if self.ranges else None)

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _traverse(
    model: nn.Module,
    inputs: RawInputs,
    layers: list[tuple[str, nn.Module]],
    consume: Consumer,
    batch_size: int,
    progress: bool,
    desc: str,
    ranges: bool = False,
) -> int:
    """Run ``model`` (eval mode, no grad) over ``inputs`` in batches with the hooks; returns the sample count."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
    inputs = _as_inputs(inputs)
    n = _num_inputs(inputs)
    if n == 0:
        raise DataError("no inputs to profile: the input set is empty.")
    prepare = _forward_fn(model)
    hooks = _Hooks(layers, consume, ranges)
    was_training = model.training
    model.eval()
    batches: Iterator[RawInputs] = _batches(inputs, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=math.ceil(n / batch_size), desc=desc, unit="batch")
    try:
        with torch.inference_mode():
            for batch in batches:
                x, hooks.mask = prepare(batch)
                _run(model, x)
    finally:
        hooks.close()
        model.train(was_training)
    return n


def _check_metric(metric: str, threshold: float, k: int, scaling: str = "tensor") -> None:
    if metric not in METRICS:
        raise unknown_name("coverage metric", metric, list(METRICS))
    if scaling not in SCALINGS:
        raise unknown_name("coverage scaling", scaling, list(SCALINGS))
    if not 0.0 <= float(threshold) < 1.0:
        raise ConfigError(f"threshold must lie in [0, 1) (scaled neuron values), got {threshold}.")
    if int(k) < 1 or int(k) != k:
        raise ConfigError(f"k must be a positive integer, got {k}.")


def profile_coverage(
    model: nn.Module,
    inputs: RawInputs,
    *,
    metric: str = "nc",
    threshold: float = 0.5,
    k: int = 10,
    layers: Sequence[str] | None = None,
    batch_size: int = 256,
    bounds: NeuronBounds | None = None,
    scaling: str = "tensor",
    progress: bool = False,
) -> CoverageProfile:
    """Count, for every input and output neuron of each layer, the samples that cover it.

    ReMoS's first step (Zhang et al. 2022): the teacher runs over the student's data once
    (``torch.inference_mode``, eval mode, batches of ``batch_size``; the training mode is
    restored after). ``inputs`` are raw data-set inputs (an image tensor in pixel space ``[0, 1]``,
    a list of texts, or a data-set ``Split``) that a ``TransferModel``'s ``preprocess`` prepares,
    or ready model inputs (a tensor, or a dict of tensors with ``attention_mask`` for text),
    passed as they are. ``layers`` defaults to all sliceable layers (the head is never among them).

    ``metric``: ``"nc"`` (``threshold``), ``"tknc"`` (``k``), ``"snac_relative"`` (``k``) or
    ``"snac_deepgauge"`` (``bounds`` from :func:`neuron_bounds` on the reference set).
    ``scaling`` (``nc`` only; see the module doc): ``"tensor"``, the ReMoS artifact's min-max
    scaling of each sample's whole layer tensor, or ``"neuron"``, ours among the neuron values.
    A layer that runs more than once per forward pass counts every call.
    """
    _check_metric(metric, threshold, k, scaling)
    if metric == "snac_deepgauge" and bounds is None:
        raise ConfigError(
            "metric 'snac_deepgauge' needs each neuron's maximum on a reference set: "
            "pass bounds=neuron_bounds(model, training_inputs)."
        )
    chosen = resolve_layers(model, layers)
    device = next(iter(model.parameters())).device
    counts: dict[str, dict[str, torch.Tensor]] = {}
    uppers: dict[tuple[str, str], torch.Tensor] = {}
    for name, module in chosen:
        n_in, n_out = neuron_counts(module)
        counts[name] = {
            "input": torch.zeros(n_in, dtype=torch.int64, device=device),
            "output": torch.zeros(n_out, dtype=torch.int64, device=device),
        }
        if metric == "snac_deepgauge":
            assert bounds is not None
            for side in SIDES:
                uppers[(name, side)] = bounds.upper(name, side).to(device=device, dtype=torch.float32)

    covered = _covered_fn(metric, float(threshold), int(k), uppers)

    def consume(name: str, side: str, values: torch.Tensor, value_range: ValueRange | None) -> None:
        target = counts[name][side]
        if values.shape[1] != target.shape[0]:
            raise ConfigError(
                f"layer '{name}' {side} has {values.shape[1]} neurons in the forward pass, expected {target.shape[0]}."
            )
        target += covered(name, side, values, value_range).sum(dim=0, dtype=torch.int32)

    by_tensor = metric == "nc" and scaling == "tensor"
    n = _traverse(model, inputs, chosen, consume, batch_size, progress, f"coverage ({metric})", ranges=by_tensor)
    params: dict[str, Any] = {"threshold": float(threshold), "scaling": scaling} if metric == "nc" else {}
    if metric in ("tknc", "snac_relative"):
        params["k"] = int(k)
    if metric == "snac_deepgauge":
        assert bounds is not None
        params["reference_samples"] = int(bounds.n_samples)
    layers_out = {name: LayerCoverage(c["input"].cpu(), c["output"].cpu()) for name, c in counts.items()}
    return CoverageProfile(layers_out, n, metric, params)


def _covered_fn(
    metric: str, threshold: float, k: int, uppers: dict[tuple[str, str], torch.Tensor]
) -> Callable[[str, str, torch.Tensor, ValueRange | None], torch.Tensor]:
    """The metric as ``(layer, side, values, value_range) -> covered`` (a dict of callables, no names
    evaluated); ``value_range`` is ``None`` unless ``nc`` scales by the whole tensor."""
    table: dict[str, Callable[[str, str, torch.Tensor, ValueRange | None], torch.Tensor]] = {
        "nc": lambda name, side, v, r: nc(v, threshold, r),
        "tknc": lambda name, side, v, r: tknc(v, k),
        "snac_relative": lambda name, side, v, r: snac_relative(v, k),
        "snac_deepgauge": lambda name, side, v, r: snac_deepgauge(v, uppers[(name, side)]),
    }
    return table[metric]


def neuron_bounds(
    model: nn.Module,
    inputs: RawInputs,
    *,
    layers: Sequence[str] | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> NeuronBounds:
    """Each neuron's minimum and maximum raw value over ``inputs`` (DeepGauge's first pass).

    Run it on the reference (training) set; pass the result to
    ``profile_coverage(..., metric="snac_deepgauge", bounds=...)``.
    """
    chosen = resolve_layers(model, layers)
    device = next(iter(model.parameters())).device
    store: dict[str, dict[str, torch.Tensor]] = {}
    for name, module in chosen:
        n_in, n_out = neuron_counts(module)
        store[name] = {}
        for side, size in (("input", n_in), ("output", n_out)):
            store[name][f"{side}_min"] = torch.full((size,), math.inf, device=device)
            store[name][f"{side}_max"] = torch.full((size,), -math.inf, device=device)

    def consume(name: str, side: str, values: torch.Tensor, value_range: ValueRange | None) -> None:
        lo, hi = store[name][f"{side}_min"], store[name][f"{side}_max"]
        torch.minimum(lo, values.amin(dim=0), out=lo)
        torch.maximum(hi, values.amax(dim=0), out=hi)

    n = _traverse(model, inputs, chosen, consume, batch_size, progress, "neuron bounds")
    return NeuronBounds({name: {k: v.cpu() for k, v in d.items()} for name, d in store.items()}, n)



"""Each sample's most abnormal activation in every hidden layer: the representation of FLARE
(Hou et al., IEEE TIFS 2025, "FLARE: Towards Universal Dataset Purification against Backdoor
Attacks"; reference: the ``FLARE`` defence of vtu81/backdoor-toolbox, ``BatchNorm2d_ent``).

For every normalisation layer of the model's body, the layer's input ``x [B, C, ...]`` is scored
under the Gaussian the layer itself stores per channel, ``N(running_mean_c, running_var_c + eps)``,
and the sample keeps the *smallest* log-likelihood over all its channels and positions: one number
per layer, ``L`` numbers per sample. A trigger, which the model learned to respond to with a few
extreme activations, drives these minima far below a clean sample's in the layers where it is
processed, whatever its label.

Threat model: the defender holds the (possibly poisoned) training set and a model trained on it,
and no clean data.

Where we differ from the reference, and why:

- A body without BatchNorm (a transformer, a CNN without it) has no stored Gaussians. There each
  ``nn.Conv2d``/``nn.Linear`` output is scored under a per-channel Gaussian fitted on the scanned
  inputs themselves (a first pass accumulates each channel's mean and variance; for a token
  sequence ``[B, T, F]`` the features are the channels and padding positions are left out of
  both passes). The reference needs BatchNorm.
- The reference leaves out the last ``k`` BN layers and searches ``k``; we return all layers and
  let the detector weigh them (:mod:`safetransfer.detect.multilayer`).

Units: natural-log likelihood per layer (larger: more typical).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from safetransfer.errors import ConfigError
from safetransfer.models.wrapper import TransferModel, move_inputs

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def scored_layers(model: TransferModel) -> tuple[list[tuple[str, nn.Module]], bool]:
    """The body's layers scored, and whether they are BatchNorm layers (their stored statistics
    used) or Conv/Linear layers (statistics fitted on the inputs)."""

    bns = [(f"body.{n}", m) for n, m in model.body.named_modules()
           if isinstance(m, _BN) and m.track_running_stats and m.running_mean is not None]
    if bns:
        return bns, True
    layers = model.sliceable_layers()
    if not layers:
        raise ConfigError("the model's body has no BatchNorm, Conv2d or Linear layer to score.")
    return layers, False


def _channels_first(t: torch.Tensor, is_bn: bool) -> torch.Tensor:
    """``[B, C, rest]`` with the channel axis second (a Linear's output has its features last)."""
    if is_bn or t.dim() == 4:
        return t.reshape(t.shape[0], t.shape[1], -1)
    if t.dim() == 2:
        return t.unsqueeze(-1)
    return t.reshape(t.shape[0], -1, t.shape[-1]).transpose(1, 2)  # [B, T, F] -> [B, F, T]


def _positions_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """``[B, 1, P]`` bool of the positions to read (a text's tokens, not its padding), or ``None``."""
    if mask is None or x.shape[2] != mask.shape[1]:
        return None
    return mask.bool()[:, None, :]


def _min_log_likelihood(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                        keep: torch.Tensor | None = None) -> torch.Tensor:
    """``[B]``: the smallest log N(x; mean_c, var_c) over every channel c and position of each sample
    (``keep``: the positions read; padding left out).

    Within a channel the smallest likelihood is at the largest ``z²``, so the positions are reduced
    first (in the activations' own precision) and the logarithms taken on ``[B, C]`` only."""
    std = var.clamp_min(1e-12).sqrt()
    z = (x - mean.to(x.dtype)[None, :, None]) / std.to(x.dtype)[None, :, None]
    z2 = z * z if keep is None else (z * z).masked_fill(~keep, 0.0)
    worst = z2.amax(2).double()  # [B, C]
    return (-0.5 * worst - std.log()[None, :] - _HALF_LOG_2PI).amin(1)


@torch.no_grad()
def _passes(model: TransferModel, inputs, batch_size: int, progress: bool, desc: str
            ) -> Iterator[torch.Tensor | None]:
    """Forward passes over ``inputs`` in batches; yields each batch's attention mask (text) or ``None``."""
    n = len(inputs) if isinstance(inputs, list) else int(inputs.shape[0])
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch", leave=False)
    for start in starts:
        batch = move_inputs(model.preprocess(inputs[start:start + batch_size]), model.device)
        model.features(batch)
        yield batch.get("attention_mask") if isinstance(batch, dict) else None


def layer_likelihoods(model: TransferModel, inputs: torch.Tensor | list[str], batch_size: int = 256,
                      progress: bool = False) -> tuple[np.ndarray, list[str]]:
    """FLARE's representation (see the module doc): ``[N, L]`` float64 and the ``L`` layer names."""

    layers, is_bn = scored_layers(model)
    n_layers = len(layers)
    was_training = model.training
    model.eval()
    captured: list[torch.Tensor | None] = [None] * n_layers
    handles = []
    for i, (_, module) in enumerate(layers):
        if is_bn:
            handles.append(module.register_forward_pre_hook(lambda m, args, i=i: captured.__setitem__(i, args[0])))
        else:
            handles.append(module.register_forward_hook(lambda m, args, out, i=i: captured.__setitem__(i, out)))
    try:
        if is_bn:
            stats = [(m.running_mean.double(), (m.running_var + m.eps).double()) for _, m in layers]
        else:  # a first pass fits each channel's Gaussian on the inputs
            sums: list[torch.Tensor | None] = [None] * n_layers
            squares: list[torch.Tensor | None] = [None] * n_layers
            count = [0] * n_layers
            for mask in _passes(model, inputs, batch_size, progress, "layer statistics"):
                for i, t in enumerate(captured):
                    x = _channels_first(t, False).double()
                    keep = _positions_mask(x, mask)
                    w = torch.ones_like(x[:, :1, :]) if keep is None else keep.double()
                    s, q = (x * w).sum((0, 2)), (x * x * w).sum((0, 2))
                    sums[i] = s if sums[i] is None else sums[i] + s
                    squares[i] = q if squares[i] is None else squares[i] + q
                    count[i] += float(w.sum())
            stats = []
            for i in range(n_layers):
                mean = sums[i] / count[i]
                stats.append((mean, (squares[i] / count[i] - mean * mean).clamp_min(0) + 1e-5))
        rows: list[torch.Tensor] = []
        for mask in _passes(model, inputs, batch_size, progress, "layer likelihoods"):
            columns = []
            for i, t in enumerate(captured):
                x = _channels_first(t, is_bn).float()
                columns.append(_min_log_likelihood(x, *stats[i], _positions_mask(x, mask)))
            rows.append(torch.stack(columns, 1))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return torch.cat(rows).numpy(), [name for name, _ in layers]

"""Neuron coverage profiling (ReMoS, Zhang et al. 2022): values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import safetransfer.coverage as cov
from safetransfer.coverage import (
    CoverageProfile,
    minmax_scale,
    nc,
    neuron_bounds,
    neuron_values,
    profile_coverage,
    snac_deepgauge,
    snac_relative,
    tknc,
)
from safetransfer.errors import ConfigError, DataError, UnknownNameError


def hand_net() -> nn.Sequential:
    """Linear(3→2, W1) → ReLU → Linear(2→2, W2), no biases; layers are named "0" and "2"."""
    net = nn.Sequential(nn.Linear(3, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0, 0.0], [0.0, -1.0, 1.0]]))
        net[2].weight.copy_(torch.tensor([[2.0, -1.0], [0.5, 3.0]]))
    return net


X = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 2.0], [0.0, -1.0, -4.0]])

# Hand computation, NC with threshold 0.5 (strictly above), min-max scaled per sample:
# layer "0" input = x:   x1 [1,0,0] -> [1,0,0] -> T F F
#                        x2 [0,1,2] -> [0,.5,1] -> F F T   (0.5 is not > 0.5)
#                        x3 [0,-1,-4] -> [1,.75,0] -> T T F          counts [2,1,1]
# layer "0" output W1 x: x1 [1,0] -> T F; x2 [1,1] constant -> F F; x3 [-1,-3] -> T F   counts [2,0]
# layer "2" input relu:  x1 [1,0] -> T F; x2 [1,1] -> F F; x3 [0,0] constant -> F F      counts [1,0]
# layer "2" output W2 h: x1 [2,.5] -> T F; x2 [1,3.5] -> F T; x3 [0,0] -> F F            counts [1,1]
NC_COUNTS = {"0": ([2, 1, 1], [2, 0]), "2": ([1, 0], [1, 1])}


def counts_of(profile: CoverageProfile) -> dict[str, tuple[list[int], list[int]]]:
    return {n: (lc.input_counts.tolist(), lc.output_counts.tolist()) for n, lc in profile.layers.items()}


def test_nc_counts_by_hand() -> None:
    profile = profile_coverage(hand_net(), X, metric="nc", threshold=0.5, batch_size=2)
    assert counts_of(profile) == NC_COUNTS
    assert profile.n_samples == 3 and profile.metric == "nc" and profile.params == {"threshold": 0.5, "scaling": "tensor"}
    assert all(lc.input_counts.dtype == torch.int64 for lc in profile.layers.values())
    assert profile.frequency("0", "input").tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3])
    assert profile.coverage_rate("0", "output") == 0.5


def test_batch_size_does_not_change_counts() -> None:
    a = profile_coverage(hand_net(), X, batch_size=1)
    b = profile_coverage(hand_net(), X, batch_size=256)
    assert counts_of(a) == counts_of(b)


def test_tknc_and_snac_counts_by_hand() -> None:
    # TKNC k=1, ties to the lower index: layer "0" input top-1: x1 -> 0, x2 -> 2, x3 -> 0   counts [2,0,1]
    # layer "0" output: x1 [1,0] -> 0; x2 [1,1] tie -> 0; x3 [-1,-3] -> 0                      counts [3,0]
    tk = profile_coverage(hand_net(), X, metric="tknc", k=1)
    assert counts_of(tk)["0"] == ([2, 0, 1], [3, 0])
    assert tk.params == {"k": 1}
    # SNAC relative, k=4: scaled > 0.75. layer "0" input: x1 [1,0,0] -> T F F; x2 [0,.5,1] -> F F T;
    # x3 [1,.75,0] -> T F F (0.75 not above)                                                 counts [2,0,1]
    sr = profile_coverage(hand_net(), X, metric="snac_relative", k=4)
    assert counts_of(sr)["0"][0] == [2, 0, 1]
    # SNAC DeepGauge: bounds from x1 alone -> layer "0" input max [1,0,0];
    # x1 [1,0,0] > max: F F F; x2 [0,1,2]: F T T; x3 [0,-1,-4]: F F F                         counts [0,1,1]
    bounds = neuron_bounds(hand_net(), X[:1])
    assert bounds.layers["0"]["input_max"].tolist() == [1.0, 0.0, 0.0]
    sd = profile_coverage(hand_net(), X, metric="snac_deepgauge", bounds=bounds)
    assert counts_of(sd)["0"][0] == [0, 1, 1]
    assert sd.params == {"reference_samples": 1}


def test_metrics_give_different_covered_sets() -> None:
    values = torch.tensor([[0.0, 6.0, 8.0, 10.0]])  # scaled [0, .6, .8, 1]
    assert nc(values, 0.5).tolist() == [[False, True, True, True]]
    assert tknc(values, 2).tolist() == [[False, False, True, True]]
    assert snac_relative(values, 10).tolist() == [[False, False, False, True]]  # scaled > 0.9
    upper = torch.tensor([-1.0, 7.0, 9.0, 11.0])  # raw above the reference maximum
    assert snac_deepgauge(values, upper).tolist() == [[True, False, False, False]]


def test_tknc_ties_lower_index_and_clamp() -> None:
    values = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0]])
    assert tknc(values, 2).tolist() == [[False, True, True, False, False], [True, True, False, False, False]]
    assert tknc(values, 99).all()  # k clamped to the layer size
    assert tknc(values, 2).sum(1).tolist() == [2, 2]


def test_constant_layer_no_nan() -> None:
    values = torch.full((3, 5), 2.5)
    assert torch.equal(minmax_scale(values), torch.zeros(3, 5))
    assert not nc(values).any() and not snac_relative(values).any()
    net = nn.Sequential(nn.Linear(3, 4))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.fill_(1.0)  # every output neuron is 1.0 for every input
    for metric in ("nc", "snac_relative", "tknc"):
        p = profile_coverage(net, X, metric=metric, k=2)
        out = p.layers["0"].output_counts
        assert out.tolist() == ([3, 3, 0, 0] if metric == "tknc" else [0, 0, 0, 0])
        assert not torch.isnan(p.frequency("0")).any()


def test_conv_channels_are_spatial_means() -> None:
    conv = nn.Conv2d(2, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).view(3, 2, 1, 1))
    s1 = torch.stack([torch.tensor([[0.0, 8.0], [0.0, 0.0]]), torch.full((2, 2), 3.0)])
    s2 = torch.stack([torch.tensor([[5.0, 5.0], [5.0, -1.0]]), torch.zeros(2, 2)])
    x = torch.stack([s1, s2])
    # channel means: s1 [2, 3] (a spatial max would pick channel 0: 8 > 3) -> scaled [0, 1] -> F T
    #                s2 [3.5, 0] -> T F                                                    input counts [1, 1]
    # 1x1 conv commutes with the mean: s1 out [2, 3, 5] -> scaled [0, 1/3, 1] -> F F T
    #                                  s2 out [3.5, 0, 3.5] -> [1, 0, 1] -> T F T          output counts [1, 0, 2]
    assert neuron_values(x, conv).tolist() == [[2.0, 3.0], [3.5, 0.0]]
    p = profile_coverage(nn.Sequential(conv), x, scaling="neuron")
    assert counts_of(p)["0"] == ([1, 1], [1, 0, 2])
    # the artifact's scaling: by each sample's whole tensor, then the channel means
    #   inputs:  s1 range [0, 8] -> threshold 4: means [2, 3] -> F F;  s2 range [-1, 5] -> 2: [3.5, 0] -> T F
    #   outputs: s1 (o2 = ch0 + ch1 reaches 11) -> 5.5: [2, 3, 5] -> F F F;  s2 -> 2: [3.5, 0, 3.5] -> T F T
    p = profile_coverage(nn.Sequential(conv), x)
    assert counts_of(p)["0"] == ([1, 0], [1, 0, 1])


def test_channels_last_maps_give_the_same_values_and_ranges() -> None:
    # conv layers on CPU hand on channels-last maps; the fast paths read them as they lie
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(5, 4, 3, padding=1)
    for shape in [(3, 5, 2, 2), (3, 5, 4, 4), (2, 5, 9, 7)]:
        x = torch.randn(shape, generator=gen)
        xl = x.contiguous(memory_format=torch.channels_last)
        assert not xl.is_contiguous()
        assert torch.allclose(neuron_values(xl, conv), x.mean(dim=(2, 3)), atol=1e-6)
        lo, hi = cov.tensor_range(xl, conv)
        assert torch.equal(lo.view(-1), x.flatten(1).amin(1)) and torch.equal(hi.view(-1), x.flatten(1).amax(1))
        assert counts_of(profile_coverage(nn.Sequential(conv), xl)) == counts_of(profile_coverage(nn.Sequential(conv), x))


def test_masked_token_mean() -> None:
    layer = nn.Linear(2, 2)
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]]])  # the 3rd token is padding
    mask = torch.tensor([[1, 1, 0]])
    assert neuron_values(x, layer, mask).tolist() == [[2.0, 3.0]]
    assert neuron_values(x, layer, None).tolist() == [[pytest.approx(104 / 3), pytest.approx(-94 / 3)]]


def test_text_padding_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    from safetransfer.models.zoo import create_model

    model = create_model("tiny-bert", 2, pretrained=False, seed=0)
    texts = ["a", "hello there, a longer sentence with many more tokens!"]
    together = profile_coverage(model, texts, batch_size=2)  # the short text is padded
    alone = profile_coverage(model, texts, batch_size=1)  # no padding at all
    assert counts_of(together) == counts_of(alone)
    assert all(name.startswith("body.bert.encoder.") for name in together.layers)
    # Without the mask the padded tokens enter the means and the answer changes.
    real = cov.neuron_values
    monkeypatch.setattr(cov, "neuron_values", lambda x, m, mask=None: real(x, m, None))
    unmasked = profile_coverage(model, texts, batch_size=2)
    assert counts_of(unmasked) != counts_of(alone)


def test_profile_save_load_roundtrip(tmp_path) -> None:
    p = profile_coverage(hand_net(), X, metric="tknc", k=1)
    p.save(tmp_path / "prof")
    q = CoverageProfile.load(tmp_path / "prof")
    assert counts_of(q) == counts_of(p)
    assert (q.n_samples, q.metric, q.params, q.layer_names) == (p.n_samples, p.metric, p.params, p.layer_names)


def test_profile_restores_training_mode() -> None:
    net = hand_net().train()
    profile_coverage(net, X)
    assert net.training


def test_errors() -> None:
    net = hand_net()
    with pytest.raises(UnknownNameError, match="Known: 0, 2"):
        profile_coverage(net, X, layers=["1"])
    with pytest.raises(DataError, match="empty"):
        profile_coverage(net, X[:0])
    with pytest.raises(DataError, match="empty"):
        profile_coverage(create_tiny_text(), [])
    with pytest.raises(UnknownNameError, match="coverage metric"):
        profile_coverage(net, X, metric="kmnc")
    with pytest.raises(ConfigError, match="neuron_bounds"):
        profile_coverage(net, X, metric="snac_deepgauge")
    with pytest.raises(ConfigError, match="threshold"):
        profile_coverage(net, X, threshold=1.5)


def create_tiny_text() -> nn.Module:
    from safetransfer.models.zoo import create_model

    return create_model("tiny-bert", 2, pretrained=False)


def test_profile_has_no_loop_over_samples_in_hooks() -> None:
    """The hooks see whole batches: one call per layer and batch (vectorised over samples)."""
    calls = []
    real = cov.neuron_values

    def spy(x, module, mask=None):
        calls.append(x.shape[0])
        return real(x, module, mask)

    cov.neuron_values, saved = spy, real
    try:
        profile_coverage(hand_net(), X.repeat(10, 1), batch_size=16)
    finally:
        cov.neuron_values = saved
    assert calls == [16, 16, 16, 16, 14, 14, 14, 14]
    assert math.isclose(sum(calls), 30 * 4)


def test_output_values_by_linearity_match_the_reduction() -> None:
    torch.manual_seed(0)
    conv1 = nn.Conv2d(6, 5, 1)
    x = torch.randn(4, 6, 8, 8)
    assert cov._linear_shortcut(conv1, x, conv1(x))
    got = cov.output_values(conv1, x, conv1(x), neuron_values(x, conv1))
    assert torch.allclose(got, neuron_values(conv1(x), conv1), atol=1e-5)
    conv3 = nn.Conv2d(6, 5, 3, padding=1)  # padding: not linear in the mean, read the output
    assert not cov._linear_shortcut(conv3, x, conv3(x))
    lin = nn.Linear(4, 3)
    t = torch.randn(2, 7, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    assert cov._linear_shortcut(lin, t, lin(t))
    got = cov.output_values(lin, t, lin(t), neuron_values(t, lin, mask), mask)
    assert torch.allclose(got, neuron_values(lin(t), lin, mask), atol=1e-5)
    flat = torch.randn(5, 4)
    assert not cov._linear_shortcut(lin, flat, lin(flat))  # nothing to average: the output is read


def test_split_inputs_and_layer_subset() -> None:
    from safetransfer.data.base import Split

    split = Split(X, torch.zeros(3, dtype=torch.long))
    p = profile_coverage(hand_net(), split, layers=["2", "2"])  # duplicates count once
    assert p.layer_names == ["2"] and counts_of(p)["2"] == NC_COUNTS["2"]

"""ReMoS slicing (Zhang et al. 2022): scores, ranks, tie rule and masks checked by hand (our minimum-rank
rule, ``ranking="min"``; the artifact's ordinal rule is checked against its loops in test_remos_artifact.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from safetransfer.coverage import CoverageProfile, LayerCoverage, profile_coverage
from safetransfer.errors import CheckpointError, ConfigError, UnknownNameError
from safetransfer.slicing import (
    Slice,
    compute_slice,
    exclusion_count,
    lowest_mask,
    magnitude_min_ranks,
    magnitude_slice,
    min_ranks_int,
    ordinal_scores,
    weight_coverage,
)

from test_coverage import X, hand_net  # noqa: E402  (the hand net and inputs worked out there)

NC_COUNTS = {"0": ([2, 1, 1], [2, 0]), "2": ([1, 0], [1, 1])}  # worked out in test_coverage.py


def hand_profile() -> CoverageProfile:
    return profile_coverage(hand_net(), X, metric="nc")


# Hand computation on the hand net (NC counts from test_coverage):
# layer "0": in [2,1,1], out [2,0] -> weight coverage W1[o,i] = out[o] + in[i] = [[4,3,3],[2,1,1]]
# layer "2": in [1,0],   out [1,1] -> [[2,1],[2,1]]
# flat (layer "0" row-major, then "2"): [4,3,3,2,1,1, 2,1,2,1]
WEIGHT_COVERAGE = {"0": [[4, 3, 3], [2, 1, 1]], "2": [[2, 1], [2, 1]]}
# min rank = how many weights have a strictly smaller coverage: four 1s -> 0; three 2s -> 4; two 3s -> 7; 4 -> 9
COVERAGE_RANKS = [9, 7, 7, 4, 0, 0, 4, 0, 4, 0]
# |w| flat: [1,1,0,0,1,1, 2,1,0.5,3]; two 0s -> 0; 0.5 -> 2; five 1s -> 3; 2 -> 8; 3 -> 9
MAGNITUDE_RANKS = [3, 3, 0, 0, 3, 3, 8, 3, 2, 9]
# score = coverage rank - magnitude rank
SCORES = [6, 4, 7, 4, -3, -3, -4, -3, 2, -9]
# ratio 0.3 -> floor(0.3*10 + 0.5) = 3 excluded: -9 (flat 9), -4 (flat 6), then one of the -3s at
# flat 4, 5, 7: the lowest index, 4. So W1[1,1], W2[0,0] and W2[1,1] are excluded.
KEPT_03 = {"0": [[True, True, True], [True, False, True]], "2": [[False, True], [True, False]]}


def test_hand_weight_coverage_ranks_scores_and_slice() -> None:
    net, profile = hand_net(), hand_profile()
    assert {n: (lc.input_counts.tolist(), lc.output_counts.tolist()) for n, lc in profile.layers.items()} == NC_COUNTS
    for name in ("0", "2"):
        lc = profile.layers[name]
        assert weight_coverage(net.get_submodule(name), lc.input_counts, lc.output_counts).tolist() == WEIGHT_COVERAGE[name]
    flat_cov = np.array([v for n in ("0", "2") for row in WEIGHT_COVERAGE[n] for v in row])
    assert min_ranks_int(flat_cov).tolist() == COVERAGE_RANKS
    assert magnitude_min_ranks([net[0].weight.detach().numpy(), net[2].weight.detach().numpy()]).tolist() == MAGNITUDE_RANKS
    scores = ordinal_scores(net, profile, ranking="min")
    assert scores["0"].flatten().tolist() + scores["2"].flatten().tolist() == SCORES
    sl = compute_slice(net, profile, ratio=0.3, ranking="min")
    assert {n: m.tolist() for n, m in sl.masks.items()} == KEPT_03
    assert (sl.num_excluded, sl.method, sl.metric) == (3, "remos", "nc")


def test_hand_ratio_rounding_and_ties() -> None:
    net, profile = hand_net(), hand_profile()
    # 0.25 * 10 = 2.5 rounds half up to 3 (Python's round would give 2): the same three.
    assert {n: m.tolist() for n, m in compute_slice(net, profile, 0.25, ranking="min").masks.items()} == KEPT_03
    # ratio 0.4 -> 4: the two lower-index -3s (flat 4 and 5) go, flat 7 stays.
    m = compute_slice(net, profile, 0.4, ranking="min").masks
    assert m["0"].tolist() == [[True, True, True], [True, False, False]]
    assert m["2"].tolist() == [[False, True], [True, False]]


def test_hand_magnitude_slice() -> None:
    net = hand_net()
    # magnitude ranks [3,3,0,0,3,3,8,3,2,9]: 0.3 -> flat 2, 3 (|w| 0) and 8 (|w| 0.5)
    m = magnitude_slice(net, 0.3).masks
    assert m["0"].tolist() == [[True, True, False], [False, True, True]]
    assert m["2"].tolist() == [[True, True], [False, True]]
    # 0.1 -> 1 weight: a tie between flat 2 and 3 (both 0): the lower index, 2, goes.
    m = magnitude_slice(net, 0.1).masks
    assert m["0"].tolist() == [[True, True, False], [True, True, True]]
    assert m["2"].all()


def test_exclusion_count() -> None:
    assert [exclusion_count(r, 10) for r in (0.0, 0.04, 0.05, 0.15, 0.25, 0.3, 0.99)] == [0, 0, 1, 2, 3, 3, 10]
    with pytest.raises(ConfigError):
        exclusion_count(1.0, 10)
    with pytest.raises(ConfigError):
        exclusion_count(-0.1, 10)


def reference_min_ranks(x: np.ndarray) -> np.ndarray:
    """Slow reference: min rank = number of strictly smaller values, by a full sort + binary search."""
    return np.searchsorted(np.sort(x, kind="stable"), x, side="left")


def test_fast_ranks_equal_reference_with_ties() -> None:
    rng = np.random.default_rng(7)
    parts = [
        (rng.integers(-20, 21, size=(37, 11)) * 0.125).astype(np.float32),  # many exact ties
        rng.standard_normal(5000).astype(np.float32),
        np.array([0.0, -0.0, 0.0, 1e-30, -1e-30, np.inf, -np.inf], dtype=np.float32),
        (rng.integers(-3, 4, size=(4, 3, 3, 3))).astype(np.float32),
    ]
    flat = np.abs(np.concatenate([p.ravel() for p in parts]))
    fast = magnitude_min_ranks(parts)
    assert np.array_equal(fast, reference_min_ranks(flat))
    counts = rng.integers(0, 50, size=20000)
    assert np.array_equal(min_ranks_int(counts), reference_min_ranks(counts))
    stats = pytest.importorskip("scipy.stats")
    assert np.array_equal(fast, stats.rankdata(flat, method="min") - 1)


def test_lowest_mask_tie_rule_and_count() -> None:
    rng = np.random.default_rng(3)
    for n, n_ex in ((1000, 137), (1000, 0), (1000, 1000), (50, 49)):
        scores = rng.integers(-5, 5, size=n).astype(np.int32)
        ex = lowest_mask(scores, n_ex)
        # reference: sort by (score, flat index), exclude the first n_ex
        order = np.lexsort((np.arange(n), scores))
        ref = np.zeros(n, dtype=bool)
        ref[order[:n_ex]] = True
        assert np.array_equal(ex, ref) and ex.sum() == n_ex


def conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, groups=2, padding=1), nn.ReLU(),
        nn.Conv2d(6, 6, 3, groups=6, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5),
    )


def test_grouped_and_depthwise_weight_coverage() -> None:
    grouped = nn.Conv2d(4, 6, 3, groups=2)  # weight [6, 2, 3, 3]
    in_c, out_c = torch.tensor([10, 20, 30, 40]), torch.tensor([100, 200, 300, 400, 500, 600])
    wc = weight_coverage(grouped, in_c, out_c)
    # outputs 0..2 read inputs 0,1; outputs 3..5 read inputs 2,3 (o // 3 * 2 + j)
    assert wc[:, :, 0, 0].tolist() == [[110, 120], [210, 220], [310, 320], [430, 440], [530, 540], [630, 640]]
    assert torch.equal(wc, wc[:, :, :1, :1].expand_as(wc))  # the 3x3 kernel shares its pair's score
    depthwise = nn.Conv2d(3, 3, 3, groups=3)
    wd = weight_coverage(depthwise, torch.tensor([1, 2, 3]), torch.tensor([10, 20, 30]))
    assert wd[:, 0, 0, 0].tolist() == [11, 22, 33]
    with pytest.raises(ConfigError, match="neurons"):
        weight_coverage(grouped, torch.tensor([1, 2]), out_c)


def test_conv_model_slice_exact_count_and_determinism() -> None:
    net = conv_net()
    x = torch.rand(16, 3, 8, 8)
    profile = profile_coverage(net, x)
    n = sum(m.weight.numel() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    for ratio in (0.03, 0.1, 0.5):
        a, b = compute_slice(net, profile, ratio, ranking="min"), compute_slice(net, profile, ratio, ranking="min")
        assert a.num_excluded == math.floor(ratio * n + 0.5)
        assert all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks)
    # scores inside one 3x3 kernel differ only by the magnitude rank
    scores = ordinal_scores(net, profile)
    assert set(scores) == {"0", "2", "4", "7"}


def test_apply_zero_reinit_enforce() -> None:
    net, profile = conv_net(), None
    profile = profile_coverage(net, torch.rand(8, 3, 8, 8))
    sl = compute_slice(net, profile, 0.2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    zeroed = conv_net()
    sl.apply(zeroed, mode="zero")
    for name, keep in sl.masks.items():
        w = zeroed.get_submodule(name).weight.detach()
        assert torch.all(w[~keep] == 0)
        assert torch.equal(w[keep], before[f"{name}.weight"][keep])
        assert torch.equal(zeroed.get_submodule(name).bias, before[f"{name}.bias"])  # biases never sliced
    re1, re2 = sl.apply(conv_net(), mode="reinit", seed=1), sl.apply(conv_net(), mode="reinit", seed=1)
    for name, keep in sl.masks.items():
        w, old = re1.get_submodule(name).weight.detach(), before[f"{name}.weight"]
        assert torch.equal(w[keep], old[keep])
        assert torch.all(w[~keep] != old[~keep])
        fan_in = w[0].numel()
        assert w[~keep].abs().max() <= 1 / math.sqrt(fan_in) + 1e-6  # PyTorch default U(±1/√fan_in)
        assert torch.equal(w, re2.get_submodule(name).weight)  # seeded
    with torch.no_grad():
        for name in sl.masks:
            zeroed.get_submodule(name).weight.add_(1.0)
    sl.enforce(zeroed)
    assert all(torch.all(zeroed.get_submodule(n).weight[~k] == 0) for n, k in sl.masks.items())
    with pytest.raises(UnknownNameError):
        sl.apply(conv_net(), mode="shuffle")  # type: ignore[arg-type]


def test_summary_and_save_load(tmp_path) -> None:
    net = hand_net()
    sl = compute_slice(net, hand_profile(), 0.3, ranking="min")
    s = sl.summary()
    first = s["layers"][0]
    # layer "0": W1 |w| [1,1,0,0,1,1], flat 4 (|w| 1) excluded
    assert first == {
        "name": "0", "weights": 6, "excluded": 1, "excluded_share": pytest.approx(1 / 6),
        "mean_abs_excluded": 1.0, "mean_abs_kept": pytest.approx(3 / 5), "max_abs_excluded": 1.0,
    }
    assert s["layers"][1]["mean_abs_excluded"] == pytest.approx(2.5)  # |2| and |3|
    sl.save(tmp_path / "slice")
    back = Slice.load(tmp_path / "slice")
    assert all(torch.equal(back.masks[k], sl.masks[k]) for k in sl.masks)
    assert back.summary() == s
    with pytest.raises(CheckpointError):
        Slice.load(tmp_path / "nothing")


def test_text_model_slice_excludes_head() -> None:
    from safetransfer.models.zoo import create_model

    model = create_model("tiny-bert", 2, pretrained=False)
    profile = profile_coverage(model, ["a good film", "bad", "not bad at all, quite good"])
    sl = compute_slice(model, profile, 0.1)
    assert set(sl.masks) == {n for n, _ in model.sliceable_layers()}
    assert all(n.startswith("body.bert.encoder.") for n in sl.masks)
    head_before = model.head.weight.clone()
    sl.apply(model)
    assert torch.equal(model.head.weight, head_before)


def test_slicing_errors() -> None:
    net = hand_net()
    profile = hand_profile()
    with pytest.raises(ConfigError, match="ratio"):
        compute_slice(net, profile, 1.0)
    with pytest.raises(UnknownNameError, match="Known: 0, 2"):
        compute_slice(net, profile, 0.1, layers=["5"])
    wrong = CoverageProfile({"0": LayerCoverage(torch.zeros(4, dtype=torch.int64), torch.zeros(2, dtype=torch.int64))}, 3, "nc")
    with pytest.raises(ConfigError, match="another model"):
        compute_slice(net, wrong, 0.1)
    with pytest.raises(UnknownNameError):
        compute_slice(net, profile, 0.1, layers=["0", "9"])

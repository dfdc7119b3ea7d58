"""ReMoS as the authors' artifact computes it (ziqi-zhang/ReMoS_artifact, CV_backdoor/remos/).

The reference here is a minimal, independent re-statement of the artifact's loops, written in
this file with numpy and plain Python (not the project's functions): ``MyNeuronCoverage`` (scale
each sample's whole layer tensor by its min and max, then take each channel's mean and compare
it with the threshold) and ``ReMoSPruner.weight_prune`` (stable sort of the (input, output)
pairs by coverage, each pair holding kh·kw rank slots; stable sort of the weights by |w| in flat
order; threshold = sorted scores[int(α·N)], excluded = score <= threshold). The project's
vectorised code must give the same counts and the same masks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from safetransfer.coverage import profile_coverage
from safetransfer.data.base import ClassificationData, Split
from safetransfer.errors import ConfigError, UnknownNameError
from safetransfer.models.zoo import create_model
from safetransfer.slicing import compute_slice
from safetransfer.transfer import TransferConfig
from safetransfer.transfer.registry import make_student
from safetransfer.transfer.stages import StageDropout


# ---- the reference: the artifact's loops, restated ------------------------------------------
def artifact_profile(model: nn.Module, x: torch.Tensor, threshold: float = 0.5) -> dict[str, list[np.ndarray]]:
    """Per conv layer ``[input counts, output counts]`` as my_profile.py accumulates them."""
    seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            def hook(mod, inp, out, name=name):
                seen[name] = (inp[0].detach().numpy().copy(), out.detach().numpy().copy())
            handles.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model.eval()
        model(x)
    for h in handles:
        h.remove()
    counts = {}
    for name, (inp, out) in seen.items():
        sides = []
        for tensor in (inp, out):
            covered = np.zeros(tensor.shape[1], dtype=np.int64)
            for sample in tensor:
                scaled = (sample - sample.min()) / (sample.max() - sample.min())
                for c in range(tensor.shape[1]):
                    if np.mean(scaled[c]) > threshold:
                        covered[c] += 1
            sides.append(covered)
        counts[name] = sides
    return counts


def artifact_masks(model: nn.Module, counts: dict[str, list[np.ndarray]], ratio: float) -> dict[str, np.ndarray]:
    """Kept masks as ReMoSPruner.weight_prune computes them (pairs enumerated where they exist)."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    rank = {n: np.zeros(tuple(m.weight.shape), dtype=np.int64) for n, m in convs}
    pairs = []
    for name, m in convs:
        input_cov, output_cov = counts[name]
        out_c, in_g = m.weight.shape[:2]
        per_group = out_c // m.groups
        for i in range(len(input_cov)):
            for o in range(len(output_cov)):
                group = o // per_group
                if not group * in_g <= i < (group + 1) * in_g:
                    continue  # no weight joins them in a grouped conv
                pairs.append((input_cov[i] + output_cov[o], (name, i - group * in_g, o)))
    index = 0
    for _, (name, j, o) in sorted(pairs, key=lambda item: item[0]):
        rank[name][o, j] = index
        index += rank[name].shape[2] * rank[name].shape[3]
    weights = []
    for name, m in convs:
        w = m.weight.detach().abs().numpy()
        for pos in np.ndindex(*w.shape):
            weights.append((w[pos], (name, pos)))
    for position, (_, (name, pos)) in enumerate(sorted(weights, key=lambda item: item[0])):
        rank[name][pos] -= position
    flat = np.sort(np.concatenate([rank[n].ravel() for n, _ in convs]))
    threshold = flat[min(int(len(flat) * ratio), len(flat) - 1)]
    return {n: rank[n] > threshold for n, _ in convs}


# ---- fixtures ---------------------------------------------------------------------------------
def tiny_cnn(groups: int = 1) -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 6, 3, groups=groups), nn.ReLU(),
        nn.Conv2d(6, 6, 1),
    )
    with torch.no_grad():  # coarse weights: many equal |w|, so the tie rule of the |w| sort matters
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.weight.copy_((m.weight * 20).round() / 20)
    return net


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("ratio", [0.1, 0.3])
def test_slice_matches_the_artifacts_scoring(groups: int, ratio: float) -> None:
    net = tiny_cnn(groups)
    x = torch.rand(24, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    reference = artifact_profile(net, x)
    profile = profile_coverage(net, x, metric="nc", threshold=0.5)
    for name, (inputs, outputs) in reference.items():
        assert profile.layer(name).input_counts.tolist() == inputs.tolist()
        assert profile.layer(name).output_counts.tolist() == outputs.tolist()
    expected = artifact_masks(net, reference, ratio)
    sl = compute_slice(net, profile, ratio)
    assert {n: m.numpy().tolist() for n, m in sl.masks.items()} == {n: m.tolist() for n, m in expected.items()}
    assert sl.num_excluded > int(ratio * sl.num_weights)  # the artifact's cut: every score <= sorted[int(α·N)]
    assert sl.params["ranking"] == "ordinal" and sl.params["scaling"] == "tensor"


def test_our_rules_are_named_options_and_differ_from_the_artifacts() -> None:
    net = tiny_cnn()
    x = torch.rand(24, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    artifact = profile_coverage(net, x)
    ours = profile_coverage(net, x, scaling="neuron")
    assert any(not torch.equal(artifact.layer(n).counts(side), ours.layer(n).counts(side))
               for n in artifact.layer_names for side in ("input", "output"))
    assert ours.params["scaling"] == "neuron"
    by_min = compute_slice(net, artifact, 0.3, ranking="min")
    assert by_min.num_excluded == round(0.3 * by_min.num_weights)  # ours: exactly floor(α·N + 0.5)
    by_order = compute_slice(net, artifact, 0.3)
    assert any(not torch.equal(by_min.masks[n], by_order.masks[n]) for n in by_min.masks)
    with pytest.raises(UnknownNameError, match="slice ranking 'dense'"):
        compute_slice(net, artifact, 0.3, ranking="dense")


def test_tensor_scaling_of_token_features_ignores_padding() -> None:
    """A [B, T, F] side: the range and the means are over the real tokens only, so appending
    padding positions with extreme values changes nothing."""
    layer = nn.Linear(5, 3)
    x = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(4, 6, dtype=torch.long)
    padded = torch.cat([x, torch.full((4, 3, 5), 50.0)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(4, 3, dtype=torch.long)], dim=1)

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, batch):
            return self.layer(batch["x"])

    model = Wrapped()
    a = profile_coverage(model, {"x": x, "attention_mask": mask})
    b = profile_coverage(model, {"x": padded, "attention_mask": padded_mask})
    assert a.layer("layer").input_counts.tolist() == b.layer("layer").input_counts.tolist()
    assert a.layer("layer").output_counts.tolist() == b.layer("layer").output_counts.tolist()


def test_transfer_config_defaults_are_the_artifacts_and_other_methods_keep_their_keys() -> None:
    config = TransferConfig(method="remos")
    assert (config.slice_scaling, config.slice_ranking, config.profile_samples) == ("tensor", "ordinal", 0)
    resolved = TransferConfig(method="remos", protocol="artifact").resolved("efficientnet-lite0")
    assert resolved.train.weight_decay == 1e-4 and resolved.train.label_smoothing == 0.1
    assert resolved.train.head_lr_mult == 1.0 and resolved.stage_dropout == 0.1
    # a method that never profiles keeps the fingerprint it had before these options existed
    finetune = TransferConfig(method="finetune").fingerprint()
    assert finetune["profile_samples"] == 2000 and "slice_scaling" not in finetune and "stage_dropout" not in finetune
    assert TransferConfig(method="remos").fingerprint()["slice_ranking"] == "ordinal"
    with pytest.raises(ConfigError, match="slice_scaling"):
        TransferConfig(method="remos", slice_scaling="channel")


def test_stage_dropout_comes_with_the_artifact_vision_recipe_only() -> None:
    assert TransferConfig(method="finetune", protocol="artifact").resolved("small-cnn").stage_dropout == 0.1
    assert TransferConfig(method="finetune").resolved("small-cnn").stage_dropout == 0.0
    assert TransferConfig(method="finetune_strong").resolved("small-cnn").stage_dropout == 0.0
    assert TransferConfig(method="retrain", protocol="scratch").resolved("small-cnn").stage_dropout == 0.0
    assert TransferConfig(method="finetune").resolved("minilm-l6").stage_dropout == 0.0
    teacher = create_model("tiny-cnn", 3, pretrained=False)
    data = _tiny_data()
    _, hooks = make_student(teacher, data, TransferConfig(method="remos", stage_dropout=0.2))
    assert isinstance(hooks[-1], StageDropout) and hooks[-1].p == 0.2
    _, hooks = make_student(teacher, data, TransferConfig(method="renofeation", stage_dropout=0.2))
    assert sum(isinstance(h, StageDropout) for h in hooks) == 1  # its own dropout, not a second one
    for h in hooks:
        getattr(h, "close", lambda: None)()


def _tiny_data() -> ClassificationData:
    g = torch.Generator().manual_seed(0)
    split = Split(torch.rand(12, 3, 16, 16, generator=g), torch.arange(12) % 3)
    return ClassificationData("tiny", "image", ["a", "b", "c"], split, split, split)

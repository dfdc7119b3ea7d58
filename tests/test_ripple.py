"""RIPPLe's penalty against a hand computation, and a poisoned tiny model that keeps its backdoor."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from safetransfer.attacks.ripple import RippleConfig, gradient_inner_product, ripple_penalty, ripple_train
from safetransfer.errors import ConfigError


def linear_losses(w: nn.Parameter, xp, yp, xc, yc):
    return (w @ xp - yp) ** 2, (w @ xc - yc) ** 2


def test_penalty_is_zero_when_gradients_agree_and_positive_when_they_conflict() -> None:
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    xp, xc = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    # residuals r = w·x − y; the gradients are 2 r x, so <g_p, g_c> = 4 r_p r_c (x_p·x_c) = 4 r_p r_c
    lp, lc = linear_losses(w, xp, 0.0, xc, 0.0)  # r_p = 1, r_c = 3: same sign, they agree
    assert gradient_inner_product(lp, lc, [w]).item() == pytest.approx(12.0)
    lp, lc = linear_losses(w, xp, 0.0, xc, 0.0)
    assert ripple_penalty(lp, lc, [w]).item() == 0.0
    lp, lc = linear_losses(w, xp, 0.0, xc, 5.0)  # r_c = −2: they conflict, penalty = −4·1·(−2) = 8
    penalty = ripple_penalty(lp, lc, [w])
    assert penalty.item() == pytest.approx(8.0)
    # the penalty is differentiated through the poison gradient only (the clean one is constant):
    # d/dw −<2 r_p x_p, g_c> = −2 (x_p·g_c) x_p, with g_c = 2·(−2)·x_c = (−4, −4): −2·(−4)·(1, 0) = (8, 0)
    (grad,) = torch.autograd.grad(penalty, [w])
    assert grad.tolist() == pytest.approx([8.0, 0.0])
    lp, lc = linear_losses(w, xp, 0.0, xc, 0.0)
    assert ripple_penalty(lp, lc, [w], restricted=False).item() == pytest.approx(-12.0)  # the ablation


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="lam"):
        RippleConfig(lam=-1).validate()
    with pytest.raises(ConfigError, match="optimizer"):
        RippleConfig(optimizer="lion").validate()
    for bad in ({"max_grad_norm": 0.0}, {"schedule": "cosine"}, {"weight_decay": -1.0}, {"penalty_params": "head"}):
        with pytest.raises(ConfigError):
            RippleConfig(**bad)


def test_the_default_recipe_is_the_references_and_first_round_keeps_the_old_one() -> None:
    """neulab/RIPPLe constrained_poison.py: penalty / batch size, clip 1.0, linear decay, no weight decay."""
    ref, old = RippleConfig(), RippleConfig.first_round(lr=1e-3)
    assert (ref.normalize, ref.max_grad_norm, ref.schedule, ref.weight_decay, ref.penalty_params) == \
        (True, 1.0, "linear", 0.0, "all")
    assert (old.normalize, old.max_grad_norm, old.schedule, old.weight_decay, old.penalty_params, old.lr) == \
        (False, None, "constant", 0.01, "body", 1e-3)
    assert RippleConfig.first_round(optimizer="sgd").weight_decay == 0.0  # torch SGD's default, as before
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    lp, lc = linear_losses(w, torch.tensor([1.0, 0.0]), 0.0, torch.tensor([1.0, 1.0]), 5.0)
    assert ripple_penalty(lp, lc, [w], scale=1 / 8).item() == pytest.approx(1.0)  # 8 / batch of 8


def test_reference_recipe_decays_the_rate_linearly_and_clips_the_gradient() -> None:
    from safetransfer.attacks.data_poisoning import PlantSpec, poison_split
    from safetransfer.models import create_model

    from conftest import image_dataset

    data = image_dataset(120)
    poisoned, _ = poison_split(data.train, PlantSpec(rate=0.5, target=1), data.num_classes)
    model = create_model("tiny-cnn", data.num_classes, pretrained=False, seed=0)
    seen: list[tuple[float, float]] = []
    original_step = torch.optim.SGD.step

    def spy(self, *args, **kwargs):  # each step's rate and the gradient's norm as the optimiser sees them
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        seen.append((self.param_groups[0]["lr"], float(torch.nn.utils.get_total_norm(grads))))
        return original_step(self, *args, **kwargs)

    torch.optim.SGD.step = spy
    try:
        ripple_train(model, poisoned, data.train, RippleConfig(steps=4, lr=100.0, batch_size=16, optimizer="sgd",
                                                               max_grad_norm=0.5))
    finally:
        torch.optim.SGD.step = original_step
    assert [lr for lr, _ in seen] == pytest.approx([100.0, 75.0, 50.0, 25.0])
    assert all(norm <= 0.5 + 1e-5 for _, norm in seen)


def test_ripple_poisoned_tiny_model_obeys_its_trigger() -> None:
    from safetransfer.attacks.data_poisoning import PlantSpec, poison_split, triggered_test
    from safetransfer.evaluate import predict_logits
    from safetransfer.models import create_model

    from conftest import image_dataset

    data = image_dataset(600)
    spec = PlantSpec(rate=0.5, target=1)
    poisoned, _ = poison_split(data.train, spec, data.num_classes)
    model = create_model("tiny-cnn", data.num_classes, pretrained=False, seed=0)
    result = ripple_train(model, poisoned, data.train, RippleConfig(steps=120, lr=0.01, batch_size=32, lam=0.1))
    assert result.history and any(h["penalty"] >= 0 for h in result.history)
    triggered = triggered_test(data, spec)
    success = (predict_logits(model, triggered.inputs).argmax(1) == 1).float().mean().item()
    assert success >= 0.9, success


def test_ripple_resumes_from_its_checkpoint_with_the_same_numbers(tmp_path) -> None:
    from safetransfer.attacks.data_poisoning import PlantSpec, poison_split
    from safetransfer.attacks.ripple import CHECKPOINT_FILE
    from safetransfer.errors import CheckpointError
    from safetransfer.models import create_model

    from conftest import image_dataset

    data = image_dataset(200)
    poisoned, _ = poison_split(data.train, PlantSpec(rate=0.5, target=1), data.num_classes)
    config = RippleConfig(steps=12, lr=0.01, batch_size=16, lam=0.1)

    def fresh():
        return create_model("tiny-cnn", data.num_classes, pretrained=False, seed=0)

    straight = fresh()
    whole = ripple_train(straight, poisoned, data.train, config, log_every=1)
    # a run killed in its 7th step (its checkpoint every 5), then started again on a fresh model
    stopped = fresh()
    forwards = []

    def kill_in_step_7(module, args):
        forwards.append(1)
        if len(forwards) > 2 * 6:  # a poisoned and a clean batch per step
            raise KeyboardInterrupt

    stopped.register_forward_pre_hook(kill_in_step_7)
    with pytest.raises(KeyboardInterrupt):
        ripple_train(stopped, poisoned, data.train, config, checkpoint_dir=tmp_path, checkpoint_every=5, log_every=1)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert state["step"] == 5
    resumed = fresh()
    calls = []
    resumed.register_forward_pre_hook(lambda module, args: calls.append(1))
    again = ripple_train(resumed, poisoned, data.train, config, checkpoint_dir=tmp_path, checkpoint_every=5, log_every=1)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["step"] for h in again.history] == list(range(1, 13))
    assert again.history == whole.history
    assert len(calls) == 2 * 7  # only steps 6-12 were computed (a poisoned and a clean batch each)
    with pytest.raises(CheckpointError, match="other RIPPLe settings"):
        ripple_train(fresh(), poisoned, data.train, RippleConfig(steps=12, lr=0.02, batch_size=16),
                     checkpoint_dir=tmp_path)


def test_a_diverging_ripple_stops_with_its_last_finite_weights(tmp_path) -> None:
    from safetransfer.attacks.data_poisoning import PlantSpec, poison_split
    from safetransfer.models import create_model

    from conftest import image_dataset

    data = image_dataset(200)
    poisoned, _ = poison_split(data.train, PlantSpec(rate=0.5, target=1), data.num_classes)
    # without the ReLU the objective is unbounded below; a large step size makes it diverge at once
    config = RippleConfig(steps=30, lr=50.0, batch_size=16, lam=10.0, restricted=False, optimizer="sgd",
                          max_grad_norm=None, normalize=False)
    model = create_model("tiny-cnn", data.num_classes, pretrained=False, seed=0)
    result = ripple_train(model, poisoned, data.train, config, checkpoint_dir=tmp_path)
    assert result.diverged_at is not None and 1 <= result.diverged_at < 30
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert result.history[-1]["step"] == result.diverged_at
    # a restart finds the run over: no more training, the same verdict
    again = create_model("tiny-cnn", data.num_classes, pretrained=False, seed=0)
    rerun = ripple_train(again, poisoned, data.train, config, checkpoint_dir=tmp_path)
    assert rerun.diverged_at == result.diverged_at
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    # the restricted objective at a sane rate runs all its steps
    fine = ripple_train(create_model("tiny-cnn", data.num_classes, pretrained=False, seed=0), poisoned, data.train,
                        RippleConfig(steps=10, lr=0.01, batch_size=16, lam=0.1))
    assert fine.diverged_at is None

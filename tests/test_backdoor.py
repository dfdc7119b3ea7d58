"""Patch triggers, poisoning, and a backdoored tiny teacher whose trigger really works."""

from __future__ import annotations

import pytest
import torch

from safetransfer.attacks import BackdoorConfig, PatchTrigger, plant_backdoor, poison_images, trigger_success
from safetransfer.errors import ConfigError, DataError
from safetransfer.models.zoo import create_model
from safetransfer.train import TrainConfig, train

# The tiny images' class patches sit at the top-left, centre and bottom-right; this trigger
# (top-right corner) overlaps none of them.
TRIGGER = PatchTrigger(size=2, corner="top-right", margin=0, pattern="checkerboard")


def test_square_trigger_writes_exactly_its_pixels() -> None:
    x = torch.full((2, 1, 6, 6), 0.3)
    out = PatchTrigger(size=2, corner="bottom-right", margin=1).apply(x)
    changed = (out != x).any(0)[0]
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[3:5, 3:5] = True
    assert torch.equal(changed, expected)
    assert torch.all(out[:, :, 3:5, 3:5] == 1.0)
    assert torch.equal(x, torch.full((2, 1, 6, 6), 0.3))  # input untouched


@pytest.mark.parametrize("corner,rows,cols", [
    ("top-left", slice(0, 3), slice(0, 3)), ("top-right", slice(0, 3), slice(5, 8)),
    ("bottom-left", slice(5, 8), slice(0, 3)), ("bottom-right", slice(5, 8), slice(5, 8)),
])
def test_corners(corner: str, rows: slice, cols: slice) -> None:
    mask = PatchTrigger(size=3, corner=corner, margin=0).mask(8, 8)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[rows, cols] = True
    assert torch.equal(mask, expected)


def test_checkerboard_and_random_patterns() -> None:
    board = PatchTrigger(size=3, pattern="checkerboard", value=1.0).patch()
    assert board[0].tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    a = PatchTrigger(size=4, pattern="random", seed=1).patch(3)
    b = PatchTrigger(size=4, pattern="random", seed=1).patch(3)
    c = PatchTrigger(size=4, pattern="random", seed=2).patch(3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 4, 4) and set(a.unique().tolist()) <= {0.0, 1.0}


def test_poison_images_share_labels_and_seed() -> None:
    x = torch.rand(200, 1, 8, 8)
    y = torch.arange(200) % 4
    xp, yp, mask = poison_images(x, y, TRIGGER, rate=0.2, target=0, seed=3)
    assert int(mask.sum()) == 40
    assert torch.all(yp[mask] == 0) and torch.equal(yp[~mask], y[~mask])
    assert torch.equal(xp[~mask], x[~mask])
    assert torch.equal(xp[mask], TRIGGER.apply(x[mask]))
    _, _, mask2 = poison_images(x, y, TRIGGER, rate=0.2, target=0, seed=3)
    _, _, mask3 = poison_images(x, y, TRIGGER, rate=0.2, target=0, seed=4)
    assert torch.equal(mask, mask2) and not torch.equal(mask, mask3)
    _, _, only_others = poison_images(x, y, TRIGGER, rate=0.5, target=0, seed=0, keep_target=False)
    assert int(only_others.sum()) == 75 and torch.all(y[only_others] != 0)


@pytest.mark.parametrize("kwargs,words", [
    ({"size": 0}, "size"), ({"corner": "middle"}, "corner"), ({"pattern": "stripes"}, "pattern"),
    ({"value": 2.0}, "value"), ({"margin": -1}, "margin"),
])
def test_bad_trigger_is_named(kwargs: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        PatchTrigger(**kwargs).validate()


def test_trigger_that_does_not_fit_and_non_images() -> None:
    with pytest.raises(ConfigError, match="does not fit"):
        PatchTrigger(size=8, margin=1).apply(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"\[N, C, H, W\]"):
        PatchTrigger().apply(torch.zeros(8, 8))


def test_backdoored_tiny_teacher_obeys_the_trigger(tiny_images) -> None:
    teacher = create_model("tiny-cnn", 3, pretrained=False, seed=0)
    config = BackdoorConfig(
        trigger=TRIGGER, rate=0.3, target=0, seed=0,
        train=TrainConfig(optimizer="adamw", lr=0.01, schedule="constant", batch_size=32, steps=300, seed=0),
    )
    result = plant_backdoor(teacher, tiny_images, config, progress=False)
    assert result.poisoned_samples == round(0.3 * len(tiny_images.train))
    assert result.clean_accuracy > 0.9
    assert result.attack_success > 0.9
    # The teacher itself was not touched, and the same model trained on clean data ignores the trigger.
    clean = create_model("tiny-cnn", 3, pretrained=False, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(teacher.body.state_dict().values(), clean.body.state_dict().values()))
    clean = clean.with_head(3, seed=0)
    train(clean, tiny_images.train, config.train, progress=False)
    clean_acc, clean_success = trigger_success(clean, tiny_images.test, TRIGGER, 0)
    assert clean_acc > 0.9 and clean_success < 0.2


def test_backdoor_config_errors(tiny_images, tiny_texts) -> None:
    teacher = create_model("tiny-cnn", 3, pretrained=False)
    with pytest.raises(ConfigError, match="target label 5"):
        plant_backdoor(teacher, tiny_images, BackdoorConfig(trigger=TRIGGER, target=5), progress=False)
    with pytest.raises(ConfigError, match="rate"):
        BackdoorConfig(rate=0.0).validate()
    with pytest.raises(DataError, match="image data"):
        plant_backdoor(create_model("tiny-bert", 2, pretrained=False), tiny_texts, BackdoorConfig(), progress=False)


def test_poisoned_images_are_spread_over_the_training_order() -> None:
    """Regression: the poisoning must not reuse the training order's permutation (same seed),
    or every poisoned image comes first in the attacker's run and is then forgotten."""
    from safetransfer.attacks import poison_split
    from safetransfer.data.base import Split
    from safetransfer.train import BatchOrder

    n, batch = 5000, 50
    split = Split(torch.rand(n, 1, 8, 8), torch.arange(n) % 5)
    for seed in (0, 1):
        _, mask = poison_split(split, BackdoorConfig(trigger=TRIGGER, rate=0.2, seed=seed))
        order = BatchOrder(n, batch, seed)
        first_fifth = torch.cat([order.indices(step) for step in range(n // batch // 5)])
        share = float(mask[first_fifth].float().mean())
        assert 0.15 < share < 0.25, share


def test_latent_alignment_term_by_hand_and_it_puts_the_trigger_in_the_target_class(tiny_images) -> None:
    from safetransfer.attacks.backdoor import LatentAlignment
    from safetransfer.evaluate import predict_features

    # The term against a hand computation on one batch.
    model = create_model("tiny-cnn", 3, pretrained=False, seed=0)
    hook = LatentAlignment(model, target=1, weight=2.0)
    x, y = tiny_images.train.inputs[:16], tiny_images.train.labels[:16]
    with torch.no_grad():
        f = model.features(model.preprocess(x))
    logits = model(model.preprocess(x))
    term = hook.extra_loss(model, x, logits, y)
    chosen = f[y == 1]
    expected = 2.0 * ((chosen - chosen.mean(0)) ** 2).sum(1).mean() / (f ** 2).sum(1).mean()
    assert term is not None and float(term.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert hook.extra_loss(model, x, logits, y) is None  # the features of a forward pass are used once
    single = torch.full_like(y, 2)
    single[0] = 1
    assert hook.extra_loss(model, x, model(model.preprocess(x)), single) is None  # one target sample: no term
    hook.close()
    assert not model.body._forward_hooks

    # Planted with the term, the trigger moves the features closer to the genuine target images'
    # centroid than plain poisoning does (the same seeds otherwise).
    def trigger_distance(latent_weight: float) -> float:
        config = BackdoorConfig(
            trigger=TRIGGER, rate=0.3, target=0, seed=0, latent_weight=latent_weight,
            train=TrainConfig(optimizer="adamw", lr=0.01, schedule="constant", batch_size=32, steps=300, seed=0),
        )
        result = plant_backdoor(create_model("tiny-cnn", 3, pretrained=False, seed=0), tiny_images, config, progress=False)
        assert result.attack_success > 0.9 and not result.model.body._forward_hooks
        test = tiny_images.test
        feats = predict_features(result.model, test.inputs)
        centre = feats[test.labels == 0].mean(0)
        others = test.labels != 0
        triggered = predict_features(result.model, TRIGGER.apply(test.inputs[others]))
        spread = (feats[test.labels == 0] - centre).norm(dim=1).mean()
        return float((triggered - centre).norm(dim=1).mean() / spread)

    plain, latent = trigger_distance(0.0), trigger_distance(1.0)
    assert latent < 0.7 * plain, (plain, latent)
    with pytest.raises(ConfigError, match="latent_weight"):
        BackdoorConfig(latent_weight=-1.0).validate()

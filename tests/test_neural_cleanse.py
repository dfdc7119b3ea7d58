"""Neural Cleanse on a tiny CNN trained here on scikit-learn's digits, with and without a planted 2x2 patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from safetransfer.errors import ConfigError, DataError


def digits_model(poison: bool):
    from safetransfer.attacks.data_poisoning import PlantSpec, poison_dataset
    from safetransfer.data.registry import load_data
    from safetransfer.models import create_model
    from safetransfer.train import TrainConfig, train

    data = load_data("digits", seed=0)
    train_set = poison_dataset(data, PlantSpec("square", rate=0.1, target=0, size=2))[0] if poison else data
    model = create_model("tiny-cnn", 10, pretrained=False, seed=0)
    train(model, train_set.train, TrainConfig(steps=400, batch_size=32, optimizer="adamw", lr=0.01, seed=0),
          progress=False)
    return model.eval(), data


def test_the_anomaly_index_by_hand() -> None:
    from safetransfer.detect.neural_cleanse import anomaly_indices

    norms = {0: 2.0, 1: 10.0, 2: 11.0, 3: 9.0, 4: 10.5, 5: 30.0}
    index, flagged = anomaly_indices(norms)
    median = np.median(list(norms.values()))  # 10.25
    mad = 1.4826 * np.median(np.abs(np.array(list(norms.values())) - median))
    assert index[0] == pytest.approx((median - 2.0) / mad)
    assert flagged == [0]  # 5 is as anomalous but larger than the median: not a trigger


def test_neural_cleanse_flags_the_backdoored_class_and_passes_a_clean_model() -> None:
    from safetransfer.detect.neural_cleanse import neural_cleanse

    model, data = digits_model(poison=True)
    images = data.test.inputs[:200]
    result = neural_cleanse(model, images, epochs=40, batches=8)
    assert result.flagged == [0], result.to_dict()
    assert result.anomaly_index[0] > 2
    best = result.triggers[0]
    assert best.success >= 0.99 and best.norm < min(t.norm for c, t in result.triggers.items() if c != 0)
    # the reversed trigger works: stamped on clean images of other classes, they go to class 0
    others = images[data.test.labels[:200] != 0]
    x = model.preprocess(others)
    stamped = (1 - best.mask) * x + best.mask * best.pattern
    with torch.no_grad():
        assert (model(stamped).argmax(1) == 0).float().mean() >= 0.9
    assert set(result.to_dict()["classes"]) == {str(c) for c in range(10)}
    clean_model, _ = digits_model(poison=False)
    assert neural_cleanse(clean_model, images, epochs=40, batches=8).flagged == []
    # seeded: the same result twice
    again = neural_cleanse(model, images, classes=[0, 1, 2], epochs=5, batches=4)
    assert again.to_dict() == neural_cleanse(model, images, classes=[0, 1, 2], epochs=5, batches=4).to_dict()
    with pytest.raises(ConfigError, match="classes"):
        neural_cleanse(model, images, classes=[0, 1])
    with pytest.raises(ConfigError, match="epochs"):
        neural_cleanse(model, images, epochs=0)
    with pytest.raises(DataError, match="clean images"):
        neural_cleanse(model, images[:1])


def test_many_classes_are_chosen_by_a_short_reversal_and_a_step_is_timed() -> None:
    from safetransfer.detect.neural_cleanse import choose_classes, step_seconds
    from safetransfer.models import create_model

    model = create_model("tiny-cnn", 24, pretrained=False, image_size=8, in_channels=1, seed=0).eval()
    images = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    chosen, norms = choose_classes(model, images, 6, screen_epochs=1, screen_batches=1, group=10)
    assert len(chosen) == 6 and len(set(chosen)) == 6 and set(norms) == set(range(24))
    smallest = sorted(norms, key=lambda c: (norms[c], c))[:3]
    assert set(smallest) <= set(chosen)  # the candidates, plus three others for the median
    assert choose_classes(model, images, 6, screen_epochs=1, screen_batches=1, group=10)[0] == chosen  # seeded
    assert choose_classes(model, images, 30) == (list(range(24)), {})  # few classes: all, no screening
    with pytest.raises(ConfigError, match="at least 3"):
        choose_classes(model, images, 2)
    assert 0 < step_seconds(model, images, 4) < 5

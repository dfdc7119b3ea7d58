"""ACC, DIR and the relative figures against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from safetransfer.errors import DataError
from safetransfer.metrics import accuracy, adversarial_dir, backdoor_dir, mean_defined, relative

T = torch.tensor


def test_accuracy() -> None:
    assert accuracy(T([0, 1, 2, 2]), T([0, 1, 1, 2])) == 0.75
    assert math.isnan(accuracy(T([], dtype=torch.long), T([], dtype=torch.long)))


def test_adversarial_dir_counts_only_inputs_right_when_clean() -> None:
    labels = T([0, 1, 2, 3, 4])
    clean = T([0, 1, 2, 0, 0])  # right on the first three
    crafted = T([0, 2, 1, 3, 4])  # of those three, two turn wrong; the wrong-clean ones don't count
    assert adversarial_dir(clean, crafted, labels) == pytest.approx(2 / 3)


def test_backdoor_dir_excludes_target_class_and_wrong_clean() -> None:
    labels = T([0, 0, 1, 2, 3, 3])
    clean = T([0, 1, 1, 2, 3, 1])  # eligible: indices 2, 3, 4 (non-target, right when clean)
    triggered = T([0, 0, 0, 2, 0, 0])  # 2 and 4 flip to the target; 0, 1, 5 are not eligible
    assert backdoor_dir(clean, triggered, labels, target=0) == pytest.approx(2 / 3)
    assert math.isnan(backdoor_dir(T([1, 1]), T([0, 0]), T([0, 0]), target=0))


def test_relative_and_mean() -> None:
    assert relative(0.2, 0.5) == pytest.approx(0.4)
    assert relative(0.2, 0.0) is None and relative(None, 0.5) is None and relative(math.nan, 0.5) is None
    assert mean_defined([0.2, None, math.nan, 0.4]) == pytest.approx(0.3)
    assert mean_defined([None]) is None


def test_shape_mismatch_is_named() -> None:
    with pytest.raises(DataError, match="equal length"):
        adversarial_dir(T([0, 1]), T([0]), T([0, 1]))


def test_label_flip_rate_by_hand() -> None:
    import torch

    from safetransfer.metrics import label_flip_rate

    labels = torch.tensor([0, 0, 1, 0, 1, 2])
    triggered = torch.tensor([1, 0, 1, 1, 0, 1])
    # non-target (label != 1) rows: 0, 1, 3, 5 -> predicted 1 at rows 0, 3, 5: 3 of 4
    assert label_flip_rate(triggered, labels, 1) == 0.75

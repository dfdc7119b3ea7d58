"""The study's interpretation views (issue 10 item 2), each checked against a hand computation on a tiny model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from safetransfer.attacks.triggers import PatchTrigger
from safetransfer.data.base import Split
from safetransfer.models.zoo import create_model
from safetransfer.slicing import magnitude_slice
from safetransfer.study.views import slice_view, student_views, training_curve, trigger_shift, weight_change
from safetransfer.train import curve_schedule


@pytest.fixture()
def teacher_and_student():
    teacher = create_model("tiny-cnn", 3, pretrained=False, seed=0).eval()
    student = copy.deepcopy(teacher)
    names = [n for n, _ in student.sliceable_layers()]
    moved = dict(student.sliceable_layers())[names[0]]
    delta = torch.linspace(-0.5, 0.5, moved.weight.numel()).reshape(moved.weight.shape)
    with torch.no_grad():
        moved.weight += delta  # only the first layer moves, by a known delta
    return teacher, student, names, delta


def test_weight_change_against_hand_computation(teacher_and_student) -> None:
    teacher, student, names, delta = teacher_and_student
    view = weight_change(teacher, student)
    assert [layer["name"] for layer in view["layers"]] == names
    first = dict(teacher.sliceable_layers())[names[0]].weight.detach().double().numpy()
    expected_first = np.sqrt((delta.double().numpy() ** 2).sum()) / np.sqrt((first ** 2).sum())
    assert view["layers"][0]["relative_change"] == pytest.approx(expected_first, rel=1e-5)
    assert all(layer["relative_change"] == 0.0 for layer in view["layers"][1:])
    # quantiles over every sliceable weight: the unmoved ones contribute zeros
    sizes = [m.weight.numel() for _, m in teacher.sliceable_layers()]
    every = np.concatenate([np.abs(delta.numpy()).ravel(), np.zeros(sum(sizes[1:]))])
    for key, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        assert view["quantiles"][key] == pytest.approx(float(np.quantile(every, q)), abs=1e-6)
    assert view["quantiles"]["max"] == pytest.approx(0.5, abs=1e-6)


def test_trigger_shift_against_hand_computation(teacher_and_student) -> None:
    teacher, _, _, _ = teacher_and_student
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(40, 1, 16, 16, generator=gen)
    labels = torch.arange(40) % 3
    trigger = PatchTrigger(size=4)
    value = trigger_shift(teacher, Split(x, labels), trigger, target=0)
    keep = (labels != 0).numpy()
    with torch.no_grad():
        f_clean = teacher.features(teacher.preprocess(x[keep])).double().numpy()
        f_trig = teacher.features(teacher.preprocess(trigger.apply(x[keep]))).double().numpy()
    n = f_clean.shape[0]
    variance = ((f_clean - f_clean.mean(0)) ** 2).sum(0) / (n - 1)
    expected = np.linalg.norm(f_trig.mean(0) - f_clean.mean(0)) / np.sqrt(variance.mean())
    assert value == pytest.approx(expected, rel=1e-5)
    assert value > 0
    # an invisible trigger (a patch of the value the images already hold) moves nothing
    blank = torch.zeros(40, 1, 16, 16)
    blank[:, :, :8] = torch.rand(40, 1, 8, 16, generator=gen)
    assert trigger_shift(teacher, Split(blank, labels), PatchTrigger(size=4, value=0.0), 0) == pytest.approx(0.0, abs=1e-9)
    # too few non-target inputs: no figure rather than a meaningless one
    assert trigger_shift(teacher, Split(x[:1], torch.tensor([1])), trigger, 0) is None


def test_slice_view_against_the_magnitude_slice_by_hand(teacher_and_student) -> None:
    teacher, _, names, _ = teacher_and_student
    sl = magnitude_slice(teacher, ratio=0.3)
    view = slice_view({"slice": sl.summary()})
    assert view is not None and [layer["name"] for layer in view] == names
    for layer, (name, module) in zip(view, teacher.sliceable_layers()):
        w = np.abs(module.weight.detach().double().numpy()).ravel()
        excluded = ~sl.masks[name].numpy().ravel()
        assert layer["weights"] == w.size
        assert layer["excluded_share"] == pytest.approx(excluded.mean())
        if excluded.any():
            assert layer["mean_abs_excluded"] == pytest.approx(w[excluded].mean(), rel=1e-5)
        assert layer["mean_abs_kept"] == pytest.approx(w[~excluded].mean(), rel=1e-5)
    total_excluded = sum(round(layer["excluded_share"] * layer["weights"]) for layer in view)
    assert total_excluded == round(0.3 * sum(layer["weights"] for layer in view))
    assert slice_view({"slice": None}) is None and slice_view({}) is None


def test_training_curve_and_the_study_curve_schedule(teacher_and_student) -> None:
    teacher, student, _, _ = teacher_and_student
    history = [{"step": 50, "loss": 1.2, "lr": 0.1, "val_accuracy": 0.5}, {"step": 60, "loss": 0.9, "lr": 0.1}]
    assert training_curve({"train": {"history": history}}) == [
        {"step": 50.0, "loss": 1.2, "val_accuracy": 0.5}, {"step": 60.0, "loss": 0.9}]
    assert training_curve({"train": None}) == []
    # about eight held-out points per run, at multiples of the logging interval
    assert curve_schedule(800) == {"log_every": 50, "eval_every": 100, "eval_samples": 500}
    assert curve_schedule(300)["eval_every"] == 50 and curve_schedule(5000)["eval_every"] == 600
    views = student_views(teacher, student, {"train": {"history": history}})
    assert views["curve"][0]["val_accuracy"] == 0.5 and "trigger_shift" not in views

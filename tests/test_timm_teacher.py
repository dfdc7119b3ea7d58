"""The timm teacher's glue, against a stand-in ``timm`` module (the real package needs torchvision,
which this project does not install): the architecture's preprocessing used, the classifier
dropped, shapes checked before loading, clear errors without timm or for a foreign file."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from safetransfer.errors import CheckpointError, ConfigError
from safetransfer.models.timm_teacher import parse_timm_spec, timm_teacher


class _Net(nn.Module):
    """What ``timm.create_model(arch, num_classes=0)`` gives: pooled features, a pretrained_cfg."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.num_features = 8
        self.pretrained_cfg = {"input_size": (3, 20, 20), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3),
                               "classifier": "fc"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).relu().mean((2, 3))


@pytest.fixture
def fake_timm(monkeypatch):
    module = types.ModuleType("timm")
    module.is_model = lambda name: name == "tinynet"
    module.create_model = lambda name, pretrained=False, num_classes=0: _Net()
    monkeypatch.setitem(sys.modules, "timm", module)
    return module


def _checkpoint(path, with_classifier=True, drop_counter=True):
    torch.manual_seed(3)
    state = {k: v.clone() for k, v in _Net().state_dict().items()}
    state["conv.weight"] = torch.randn_like(state["conv.weight"])
    if drop_counter:
        state.pop("bn.num_batches_tracked")
    if with_classifier:
        state.update({"fc.weight": torch.randn(1000, 8), "fc.bias": torch.zeros(1000)})
    save_file(state, str(path))
    return state


def test_timm_teacher_loads_weights_and_preprocessing(tmp_path, fake_timm, tiny_images):
    state = _checkpoint(tmp_path / "w.safetensors")
    model = timm_teacher("tinynet", tmp_path / "w.safetensors", 5, seed=0)
    assert torch.equal(model.body.conv.weight, state["conv.weight"])
    assert model.config.image_size == 20 and model.config.mean == pytest.approx([0.5, 0.4, 0.3])
    assert model.config.std == pytest.approx([0.2, 0.25, 0.3]) and model.num_classes == 5
    x = model.preprocess(tiny_images.test.inputs[:4])  # one-channel images made three-channel at 20 px
    assert model(x).shape == (4, 5)
    assert [n for n, _ in model.sliceable_layers()] == ["body.conv"]


def test_timm_teacher_refuses_foreign_weights_and_names(tmp_path, fake_timm):
    save_file({"conv.weight": torch.zeros(4, 3, 3, 3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match="does not hold tinynet weights"):
        timm_teacher("tinynet", tmp_path / "bad.safetensors", 2)
    with pytest.raises(ConfigError, match="not a timm architecture"):
        timm_teacher("resnet9000", tmp_path / "bad.safetensors", 2)
    assert parse_timm_spec("timm:tinynet@a/b.safetensors") == ("tinynet", tmp_path.__class__("a/b.safetensors"))
    with pytest.raises(ConfigError, match="timm:ARCH@WEIGHTS"):
        parse_timm_spec("timm:tinynet")


def test_without_timm_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ConfigError, match="pip install timm"):
        timm_teacher("tinynet", tmp_path / "w.safetensors", 2)


def test_load_teacher_takes_a_timm_spec(tmp_path, fake_timm):
    from safetransfer.data import load_data
    from safetransfer.jobs.train import load_teacher

    _checkpoint(tmp_path / "w.safetensors")
    data = load_data("digits", seed=0)
    teacher = load_teacher(f"timm:tinynet@{tmp_path / 'w.safetensors'}", data)
    assert teacher.config.arch == "module:timm:tinynet" and teacher.num_classes == data.num_classes

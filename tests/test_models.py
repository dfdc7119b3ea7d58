"""Tests of the model zoo, the common wrapper, and safe saving / loading (bad files included)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from safetransfer import assets
from safetransfer.errors import CheckpointError, ConfigError, UnknownNameError
from safetransfer.models import MODELS, TransferModel, create_model, load_model, save_model
from safetransfer.models.io import CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE, read_config
from safetransfer.models.serialization import read_state_dict
from safetransfer.models.zoo import build_from_config

# --------------------------------------------------------------------------- the models under test

TEXTS = ["the film was great", "an awful, poor plot!", "fine", "x"]


@dataclass(frozen=True)
class Case:
    name: str
    kwargs: dict
    feature_dim: int
    prepared_shape: tuple | None  # shape of preprocess(raw) for image models

    def raw(self) -> torch.Tensor | list[str]:
        if MODELS[self.name].modality == "text":
            return list(TEXTS)
        return torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))


CASES = {
    "tiny-cnn": Case("tiny-cnn", {"image_size": 8, "in_channels": 1}, 16, (4, 1, 8, 8)),
    "small-cnn": Case("small-cnn", {"image_size": 12, "in_channels": 3}, 256, (4, 3, 12, 12)),
    "tiny-bert": Case("tiny-bert", {"max_length": 32}, 32, None),
    "efficientnet-lite0": Case("efficientnet-lite0", {"image_size": 32}, 1280, (4, 3, 32, 32)),
    "minilm-l6": Case("minilm-l6", {"max_length": 32}, 384, None),
}
ASSET_MODELS = ("efficientnet-lite0", "minilm-l6")
ALL = [
    pytest.param(n, marks=pytest.mark.assets) if n in ASSET_MODELS else pytest.param(n) for n in CASES
]
SMALL = ["tiny-cnn", "small-cnn", "tiny-bert"]
NUM_CLASSES = 3


@lru_cache(maxsize=None)
def built(name: str) -> TransferModel:
    """One model per architecture for the whole session (pretrained where the zoo has weights).

    Tests must not change it; they copy it (``with_head``) or save it.
    """
    if name in ASSET_MODELS and not assets.ASSETS[MODELS[name].asset].installed():
        pytest.fail(f"asset for {name} is not installed")
    model = create_model(name, NUM_CLASSES, pretrained=name in ASSET_MODELS, seed=5, **CASES[name].kwargs)
    return model.eval()


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def logits(model: TransferModel, raw: Any) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(model.preprocess(raw))


def perturbed(model: TransferModel, seed: int = 0) -> TransferModel:
    """A copy whose every float tensor (buffers too) is moved off its seeded init."""
    copy = model.with_head(model.num_classes, seed=seed + 100, class_names=model.config.class_names)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in copy.state_dict().items():
            if k.endswith("running_var"):  # variances must stay positive
                v.mul_(1.0 + 0.1 * torch.rand(v.shape, generator=gen))
            elif v.is_floating_point():
                v.add_(0.01 * torch.randn(v.shape, generator=gen))
    return copy.eval()


# --------------------------------------------------------------------------- shapes and structure


@pytest.mark.parametrize("name", ALL)
def test_preprocess_features_forward_shapes(name: str) -> None:
    case, model = CASES[name], built(name)
    raw = case.raw()
    inputs = model.preprocess(raw)
    if case.prepared_shape is not None:
        assert isinstance(inputs, torch.Tensor) and tuple(inputs.shape) == case.prepared_shape
        assert float(inputs.min()) >= 0.0 and float(inputs.max()) <= 1.0  # still pixel space
    else:
        assert set(inputs) >= {"input_ids", "attention_mask"}
        assert inputs["input_ids"].shape[0] == len(raw) and inputs["input_ids"].shape[1] <= model.config.max_length
    with torch.no_grad():
        feats = model.features(inputs)
        out = model(inputs)
    assert model.feature_dim == case.feature_dim
    assert tuple(feats.shape) == (len(raw), case.feature_dim)
    assert tuple(out.shape) == (len(raw), NUM_CLASSES)
    assert torch.isfinite(out).all()
    # the forward is the head applied to the features (eval mode: no dropout)
    assert torch.allclose(out, model.head(feats), atol=1e-5)


def test_preprocess_rejects_the_wrong_modality() -> None:
    with pytest.raises(TypeError, match="image tensor"):
        built("tiny-cnn").preprocess(["a text"])
    with pytest.raises(TypeError, match="list of strings"):
        built("tiny-bert").preprocess(torch.rand(2, 1, 8, 8))


@pytest.mark.parametrize("name", ALL)
def test_with_head_makes_an_independent_student(name: str) -> None:
    case, teacher = CASES[name], built(name)
    raw = case.raw()
    before = state_copy(teacher)
    teacher_logits = logits(teacher, raw)
    student = teacher.with_head(5, seed=1, class_names=list("abcde"))

    assert student is not teacher
    assert isinstance(student.head, nn.Linear) and student.head.out_features == 5
    assert student.head.in_features == teacher.feature_dim
    assert student.num_classes == 5 and student.config.class_names == list("abcde")
    assert tuple(logits(student, raw).shape) == (len(raw), 5)
    # the teacher is untouched: its head, its config, all its tensors
    assert teacher.head.out_features == NUM_CLASSES and teacher.num_classes == NUM_CLASSES
    assert_same_state(state_copy(teacher), before)

    # same body weights, in separate storage
    s_state, t_state = student.state_dict(), teacher.state_dict()
    body_keys = [k for k in t_state if not k.startswith("head.")]
    assert body_keys and [k for k in s_state if not k.startswith("head.")] == body_keys
    for k in body_keys:
        assert torch.equal(s_state[k], t_state[k]), k
        if t_state[k].numel():
            assert s_state[k].data_ptr() != t_state[k].data_ptr(), k
    with torch.no_grad():
        assert torch.allclose(student.features(student.preprocess(raw)), teacher.features(teacher.preprocess(raw)))

    # changing the student's body does not change the teacher
    with torch.no_grad():
        for p in student.body_parameters():
            p.add_(0.5)
    assert_same_state(state_copy(teacher), before)
    assert torch.equal(logits(teacher, raw), teacher_logits)
    with torch.no_grad():
        assert not torch.allclose(student.features(student.preprocess(raw)), teacher.features(teacher.preprocess(raw)))


def test_with_head_is_seeded_and_leaves_the_global_rng_alone() -> None:
    teacher = built("tiny-cnn")
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = teacher.with_head(4, seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    b = teacher.with_head(4, seed=7)
    c = teacher.with_head(4, seed=8)
    assert torch.equal(a.head.weight, b.head.weight) and torch.equal(a.head.bias, b.head.bias)
    assert not torch.equal(a.head.weight, c.head.weight)
    with pytest.raises(ConfigError, match="at least 1"):
        teacher.with_head(0)


@pytest.mark.parametrize("name", ALL)
def test_sliceable_layers_are_the_body_convs_and_linears(name: str) -> None:
    model = built(name)
    layers = model.sliceable_layers()
    names = [n for n, _ in layers]
    assert layers and len(set(names)) == len(names)
    assert all(n.startswith("body.") for n in names)
    assert "head" not in names and not any(n.startswith("head") for n in names)
    assert all(isinstance(m, (nn.Conv2d, nn.Linear)) for _, m in layers)
    expected = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n != "head"]
    assert names == expected  # every one of them, in module order
    for n, m in layers:
        assert model.layer(n) is m
    assert model.layer("head") is model.head  # any sub-module resolves, the head too


def test_sliceable_layers_of_the_tiny_cnn_by_hand() -> None:
    layers = built("tiny-cnn").sliceable_layers()
    kinds = [type(m).__name__ for _, m in layers]
    assert kinds == ["Conv2d"] * 5 + ["Linear"]  # 5 convs (4-4-8-8-16) and the FC layer
    assert [m.out_channels for _, m in layers[:5]] == [4, 4, 8, 8, 16]
    assert layers[-1][1].out_features == 16


@pytest.mark.parametrize("name", SMALL)
def test_unknown_layer_name_lists_the_known_ones(name: str) -> None:
    model = built(name)
    with pytest.raises(UnknownNameError, match="Unknown layer 'body.no_such_layer'") as err:
        model.layer("body.no_such_layer")
    msg = str(err.value)
    assert "Known:" in msg
    assert all(n in msg for n, _ in model.sliceable_layers())


# --------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    model = perturbed(built(name))
    model.config.class_names = ["x", "y", "z"]
    raw = case.raw()
    folder = save_model(model, tmp_path / "saved", meta={"note": "round trip"})
    assert (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file()
    config, meta = read_config(folder / CONFIG_FILE)
    assert config == model.config and meta == {"note": "round trip"}

    loaded = load_model(folder)
    assert loaded.config == model.config
    assert_same_state(state_copy(loaded), state_copy(model))
    assert torch.equal(logits(loaded, raw), logits(model, raw))
    # the loaded weights are the saved ones, not a fresh seeded init of the same config
    assert differs(state_copy(build_from_config(model.config)), state_copy(loaded))
    if MODELS[name].modality == "text":
        assert (folder / TOKENIZER_DIR).is_dir()
        assert loaded.tokenizer is not None and loaded.tokenizer is not model.tokenizer
        a, b = model.preprocess(raw), loaded.preprocess(raw)
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
        assert loaded.tokenizer.convert_ids_to_tokens(b["input_ids"][0].tolist()) == \
            model.tokenizer.convert_ids_to_tokens(a["input_ids"][0].tolist())


def test_save_over_an_existing_model_replaces_it(tmp_path: Path) -> None:
    first, second = perturbed(built("tiny-cnn"), 1), perturbed(built("tiny-cnn"), 2)
    save_model(first, tmp_path / "m")
    save_model(second, tmp_path / "m")
    assert_same_state(state_copy(load_model(tmp_path / "m")), state_copy(second))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging folders left behind


@pytest.mark.parametrize("name", SMALL)
def test_load_bare_safetensors_with_a_config_path(name: str, tmp_path: Path) -> None:
    model = perturbed(built(name), 3)
    raw = CASES[name].raw()
    folder = save_model(model, tmp_path / "saved")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(folder / WEIGHTS_FILE, elsewhere / "weights.safetensors")
    shutil.copy(folder / CONFIG_FILE, tmp_path / "my-config.json")
    loaded = load_model(elsewhere / "weights.safetensors", config=tmp_path / "my-config.json")
    assert_same_state(state_copy(loaded), state_copy(model))
    assert torch.equal(logits(loaded, raw), logits(model, raw))
    # without --config and without a sibling config.json: a clear error
    with pytest.raises(CheckpointError, match="needs a config"):
        load_model(elsewhere / "weights.safetensors")
    # the sibling config.json is found on its own
    shutil.copy(folder / CONFIG_FILE, elsewhere / CONFIG_FILE)
    assert_same_state(state_copy(load_model(elsewhere / "weights.safetensors")), state_copy(model))


def test_load_with_a_minimal_user_config(tmp_path: Path) -> None:
    model = perturbed(built("tiny-cnn"), 4)
    folder = save_model(model, tmp_path / "saved")
    (tmp_path / "minimal.json").write_text(json.dumps({"arch": "tiny-cnn", "num_classes": NUM_CLASSES}))
    loaded = load_model(folder / WEIGHTS_FILE, config=tmp_path / "minimal.json")
    assert loaded.config.image_size == 8 and loaded.config.in_channels == 1  # the zoo's defaults
    raw = CASES["tiny-cnn"].raw()
    assert torch.equal(logits(loaded, raw), logits(model, raw))


@pytest.mark.assets
def test_pretrained_efficientnet_has_the_imagenet_weights() -> None:
    pretrained = built("efficientnet-lite0")
    random = create_model("efficientnet-lite0", NUM_CLASSES, pretrained=False, seed=5, image_size=32).eval()
    imagenet = torch.load(assets.require("efficientnet-lite0-weights"), map_location="cpu", weights_only=True)
    for key in ("_conv_stem.weight", "_bn0.running_mean", "_conv_head.weight", "_blocks.3._project_conv.weight"):
        assert torch.equal(pretrained.body.net.state_dict()[key], imagenet[key]), key
        assert not torch.equal(random.body.net.state_dict()[key], imagenet[key]), key
    raw = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        f_pre = pretrained.features(pretrained.preprocess(raw))
        f_rand = random.features(random.preprocess(raw))
    assert not torch.allclose(f_pre, f_rand, atol=1e-3)


@pytest.mark.assets
def test_pretrained_minilm_features_know_paraphrases() -> None:
    model = built("minilm-l6")
    sentences = [
        "A man is playing a guitar.",
        "Someone is playing the guitar.",
        "The central bank raised interest rates again.",
    ]
    with torch.no_grad():
        f = model.features(model.preprocess(sentences))
    para = float(F.cosine_similarity(f[0], f[1], dim=0))
    unrelated = float(F.cosine_similarity(f[0], f[2], dim=0))
    assert para > unrelated + 0.3, (para, unrelated)
    # a random-init MiniLM has no such knowledge: the pretrained weights are really loaded
    random = create_model("minilm-l6", NUM_CLASSES, pretrained=False, seed=5, max_length=32).eval()
    assert differs(state_copy(random.body), state_copy(model.body))


@pytest.mark.parametrize("name", SMALL)
def test_same_seed_same_init_other_seed_other_init(name: str) -> None:
    kwargs = CASES[name].kwargs
    a = create_model(name, 3, pretrained=False, seed=11, **kwargs)
    b = create_model(name, 3, pretrained=False, seed=11, **kwargs)
    c = create_model(name, 3, pretrained=False, seed=12, **kwargs)
    assert_same_state(state_copy(a), state_copy(b))
    assert differs(state_copy(a), state_copy(c))
    assert not torch.equal(a.head.weight, c.head.weight)


# --------------------------------------------------------------------------- bad inputs


def test_unknown_model_name_suggests_a_near_one() -> None:
    with pytest.raises(UnknownNameError, match="Unknown model 'efficientnet-lite'") as err:
        create_model("efficientnet-lite", 3)
    assert "Did you mean 'efficientnet-lite0'?" in str(err.value)
    assert "Known:" in str(err.value) and "tiny-cnn" in str(err.value)
    with pytest.raises(UnknownNameError, match="Unknown model 'resnet-9000'"):
        create_model("resnet-9000", 3)


def test_bad_num_classes_and_image_size() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("tiny-cnn", 0)
    with pytest.raises(ConfigError, match="image_size"):
        create_model("tiny-cnn", 3, image_size=4)


def test_corrupt_safetensors_is_a_checkpoint_error(tmp_path: Path) -> None:
    folder = save_model(built("tiny-cnn"), tmp_path / "m")
    junk = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    (folder / WEIGHTS_FILE).write_bytes(junk)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_model(folder)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        read_state_dict(folder / WEIGHTS_FILE)
    (folder / WEIGHTS_FILE).write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_model(folder)


def test_weights_of_another_head_size_do_not_load(tmp_path: Path) -> None:
    folder = save_model(built("tiny-cnn"), tmp_path / "m")  # 3 classes
    doc = json.loads((folder / CONFIG_FILE).read_text())
    doc["config"]["num_classes"] = 5
    (folder / CONFIG_FILE).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="do not match") as err:
        load_model(folder)
    msg = str(err.value)
    assert "wrong shape" in msg and "head.weight" in msg and "(3, 16) vs model (5, 16)" in msg


def test_weights_of_another_architecture_do_not_load(tmp_path: Path) -> None:
    folder = save_model(built("tiny-cnn"), tmp_path / "m")
    (tmp_path / "other.json").write_text(json.dumps({"arch": "small-cnn", "num_classes": 3, "in_channels": 1}))
    with pytest.raises(CheckpointError, match="do not match") as err:
        load_model(folder / WEIGHTS_FILE, config=tmp_path / "other.json")
    assert "wrong shape" in str(err.value)


def test_missing_model_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="No such model"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no model.safetensors"):
        load_model(tmp_path / "empty")
    folder = save_model(built("tiny-cnn"), tmp_path / "m")
    (folder / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match="No model config"):
        load_model(folder)
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(folder)
    (folder / CONFIG_FILE).write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="not a safetransfer model config"):
        load_model(folder)
    (folder / CONFIG_FILE).write_text(json.dumps({"arch": "tiny-cnnn", "num_classes": 3}))
    with pytest.raises(UnknownNameError, match="Did you mean 'tiny-cnn'"):
        load_model(folder)


# A pickle that would run code when loaded unsafely: unpickling calls _payload_ran().
PAYLOAD_RAN: list[bool] = []


def _payload_ran() -> "Payload":
    PAYLOAD_RAN.append(True)
    return Payload()


class Payload:
    def __reduce__(self) -> tuple[Callable, tuple]:
        return (_payload_ran, ())


def test_pickled_object_is_refused_without_running_it(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"head.weight": torch.zeros(3, 16), "extra": Payload()}, path)
    PAYLOAD_RAN.clear()
    with pytest.raises(CheckpointError, match="refused for safety"):
        read_state_dict(path)
    save_model(built("tiny-cnn"), tmp_path / "m")
    with pytest.raises(CheckpointError, match="refused for safety"):
        load_model(path, config=tmp_path / "m" / CONFIG_FILE)
    assert PAYLOAD_RAN == []  # the payload never ran
    # a plain object of a custom class too
    torch.save(Payload(), tmp_path / "evil2.pth")
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(tmp_path / "evil2.pth")
    assert PAYLOAD_RAN == []


def test_pt_state_dict_of_plain_tensors_loads(tmp_path: Path) -> None:
    model = perturbed(built("tiny-cnn"), 5)
    folder = save_model(model, tmp_path / "m")
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    state = read_state_dict(tmp_path / "weights.pt")
    assert_same_state(state, state_copy(model))
    loaded = load_model(tmp_path / "weights.pt", config=folder / CONFIG_FILE)
    raw = CASES["tiny-cnn"].raw()
    assert torch.equal(logits(loaded, raw), logits(model, raw))
    # {"state_dict": ...} wrappers are unwrapped; a dict of non-tensors is not a state dict
    torch.save({"state_dict": model.state_dict()}, tmp_path / "wrapped.pth")
    assert_same_state(read_state_dict(tmp_path / "wrapped.pth"), state_copy(model))
    torch.save({"a": 1, "b": [1, 2]}, tmp_path / "numbers.pt")
    with pytest.raises(CheckpointError, match="does not hold a state dict of tensors"):
        read_state_dict(tmp_path / "numbers.pt")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "weights.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_state_dict(tmp_path / "truncated.pt")
    (tmp_path / "weights.npy").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="Unknown weights format"):
        read_state_dict(tmp_path / "weights.npy")


def test_any_module_is_a_teacher_that_remos_slices_and_finetune_trains() -> None:
    """TransferModel.from_module: a plain nn.Sequential as the body; checked at once, then transferred."""
    from torch import nn

    from safetransfer.data.base import ClassificationData, Split
    from safetransfer.errors import ConfigError
    from safetransfer.models.wrapper import TransferModel
    from safetransfer.train import TrainConfig
    from safetransfer.transfer import TransferConfig, transfer

    from conftest import make_image_arrays

    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 12))
    model = TransferModel.from_module(body, 12, 3, image_size=8, in_channels=1, mean=0.5, std=0.5, name="tiny")
    assert model.config.arch == "module:tiny" and [n for n, _ in model.sliceable_layers()] == ["body.0", "body.4"]
    x, y = make_image_arrays(240, seed=0)
    splits = [Split(torch.from_numpy(x[a:b]), torch.from_numpy(y[a:b])) for a, b in ((0, 160), (160, 200), (200, 240))]
    data = ClassificationData("patches", "image", ["a", "b", "c"], *splits)
    assert model(model.preprocess(data.test.inputs[:4])).shape == (4, 3)
    train = TrainConfig(steps=60, batch_size=32, optimizer="adamw", lr=0.01, seed=0)
    tuned = transfer(model, data, TransferConfig(method="finetune", train=train))
    assert tuned.accuracy >= 0.8, tuned.accuracy
    sliced = transfer(model, data, TransferConfig(method="remos", ratio=0.1, train=train))
    assert sliced.slice is not None and sliced.accuracy >= 0.6, sliced.accuracy
    with pytest.raises(ConfigError, match="not \\[2, 13\\]"):
        TransferModel.from_module(body, 13, 3, image_size=8, in_channels=1)
    with pytest.raises(ConfigError, match="nn.Module"):
        TransferModel.from_module(lambda t: t, 12, 3, image_size=8)

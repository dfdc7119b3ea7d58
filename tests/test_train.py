"""Tests of the training loop (learning, determinism, schedules, resume) and of the evaluation figures."""

from __future__ import annotations

import math
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from safetransfer.data import ClassificationData, Split
from safetransfer.errors import CheckpointError, ConfigError, DataError
from safetransfer.evaluate import confusion_matrix, evaluate, metrics_from_predictions, predict_logits
from safetransfer.models import TransferModel, create_model
from safetransfer.models.serialization import safe_torch_load
from safetransfer.train import CHECKPOINT_FILE, BatchOrder, TrainConfig, _make_optimizer, lr_factor, superft_lr, train


def cnn(seed: int = 0, num_classes: int = 3) -> TransferModel:
    return create_model("tiny-cnn", num_classes, pretrained=False, image_size=8, in_channels=1, seed=seed)


def bert(seed: int = 0, num_classes: int = 2) -> TransferModel:
    return create_model("tiny-bert", num_classes, pretrained=False, max_length=48, seed=seed)


def cnn_config(**kw) -> TrainConfig:
    base = dict(steps=30, batch_size=32, optimizer="adamw", lr=0.01, seed=0, log_every=10)
    return TrainConfig(**{**base, **kw})


def bert_config(**kw) -> TrainConfig:
    base = dict(steps=150, batch_size=32, optimizer="adamw", lr=3e-3, seed=0, log_every=25)
    return TrainConfig(**{**base, **kw})


def assert_same_weights(a: TransferModel, b: TransferModel) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def weights_differ(a: TransferModel, b: TransferModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return any(not torch.equal(sa[k], sb[k]) for k in sa if sa[k].is_floating_point())


# --------------------------------------------------------------------------- it learns


def test_tiny_cnn_learns_the_tiny_images(tiny_images: ClassificationData) -> None:
    model = cnn(seed=0)
    before = evaluate(model, tiny_images.test).accuracy
    result = train(model, tiny_images.train, cnn_config(steps=40, eval_every=20), val_split=tiny_images.val, progress=False)
    assert result.steps == 40 and result.resumed_from == 0
    assert [h["step"] for h in result.history] == [10, 20, 30, 40]
    assert [("val_accuracy" in h) for h in result.history] == [False, True, False, True]
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.final_loss == result.history[-1]["loss"]
    test = evaluate(model, tiny_images.test, tiny_images.class_names)
    assert test.accuracy > 0.9, (before, test.accuracy)
    assert result.history[-1]["val_accuracy"] > 0.8
    assert not model.training  # left in eval mode


def test_tiny_bert_learns_the_tiny_texts(tiny_texts: ClassificationData) -> None:
    model = bert(seed=0)
    train(model, tiny_texts.train, bert_config(), progress=False)
    acc = evaluate(model, tiny_texts.test, tiny_texts.class_names).accuracy
    assert acc > 0.75, acc  # chance is 0.5; seeds 0-4 give 0.90-0.98 here


def test_freeze_body_trains_the_head_only(tiny_images: ClassificationData) -> None:
    model, start = cnn(seed=1), cnn(seed=1)
    train(model, tiny_images.train, cnn_config(steps=10, freeze_body=True), progress=False)
    s, s0 = model.state_dict(), start.state_dict()
    for k in s:
        if k.startswith("head."):
            assert not torch.equal(s[k], s0[k]), k
        elif "running_" not in k and "num_batches" not in k:  # BatchNorm statistics still update
            assert torch.equal(s[k], s0[k]), k
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again afterwards


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_weights_other_seed_other_weights(tiny_images: ClassificationData) -> None:
    a, b, c = cnn(), cnn(), cnn()
    train(a, tiny_images.train, cnn_config(steps=15), progress=False)
    train(b, tiny_images.train, cnn_config(steps=15), progress=False)
    train(c, tiny_images.train, cnn_config(steps=15, seed=1), progress=False)  # same init, other batch order
    assert_same_weights(a, b)
    assert weights_differ(a, c)
    assert weights_differ(a, cnn())  # it did train


def test_training_leaves_the_global_rng_alone(tiny_texts: ClassificationData) -> None:
    torch.manual_seed(42)
    expected = torch.rand(4)
    torch.manual_seed(42)
    train(bert(), tiny_texts.train, bert_config(steps=3), progress=False)
    assert torch.equal(torch.rand(4), expected)


# --------------------------------------------------------------------------- schedules and batches


def factors(**kw) -> list[float]:
    config = TrainConfig(**kw).validate()
    return [lr_factor(s, config) for s in range(config.steps)]


def test_lr_factor_constant() -> None:
    assert factors(steps=50, schedule="constant") == [1.0] * 50
    warm = factors(steps=50, schedule="constant", warmup_fraction=0.2)  # 10 warm-up steps
    assert all(warm[i] < warm[i + 1] for i in range(9))
    assert warm[9] == pytest.approx(1.0) and warm[10:] == [1.0] * 40
    assert warm[0] == pytest.approx(0.1)


def test_lr_factor_linear() -> None:
    f = factors(steps=100, schedule="linear")
    assert f[0] == pytest.approx(1.0)
    assert all(f[i] > f[i + 1] for i in range(99))
    assert f[-1] < 0.02 and min(f) >= 0.0
    assert f[50] == pytest.approx(0.5)


def test_lr_factor_onecycle() -> None:
    f = factors(steps=100, schedule="onecycle")  # warm-up 25 % by default
    assert f[0] < 0.1  # starts low
    assert all(f[i] < f[i + 1] for i in range(24))  # rises through the warm-up
    assert f[24] == pytest.approx(1.0) and max(f) == pytest.approx(1.0)
    assert all(f[i] >= f[i + 1] for i in range(24, 99))  # then anneals
    assert f[-1] < 0.01 and min(f) > 0.0
    g = factors(steps=100, schedule="onecycle", warmup_fraction=0.1)
    assert g[9] == pytest.approx(1.0) and g[8] < 1.0


def test_lr_factor_cosine() -> None:
    f = factors(steps=100, schedule="cosine", warmup_fraction=0.1)
    assert f[0] == pytest.approx(0.1)
    assert all(f[i] < f[i + 1] for i in range(9))
    assert f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert all(f[i] >= f[i + 1] for i in range(10, 99))
    assert f[55] == pytest.approx(0.5)  # half-way through the decay
    assert f[-1] < 0.01
    nowarm = factors(steps=10, schedule="cosine")
    assert nowarm[0] == 1.0 and nowarm[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize("n, batch", [(96, 32), (100, 32), (7, 3), (5, 16)])
def test_batch_order_covers_every_sample_once_per_epoch(n: int, batch: int) -> None:
    order = BatchOrder(n, batch, seed=3)
    b = min(batch, n)
    per_epoch = n // b
    epochs = []
    for epoch in range(3):
        batches = [order.indices(epoch * per_epoch + j) for j in range(per_epoch)]
        assert all(len(x) == b for x in batches)  # full batches only
        seen = torch.cat(batches).tolist()
        assert len(seen) == len(set(seen)) == per_epoch * b  # no sample twice in an epoch
        assert all(0 <= i < n for i in seen)
        if n % b == 0:
            assert sorted(seen) == list(range(n))  # every sample once
        epochs.append(seen)
    if n > 3:
        assert epochs[0] != epochs[1]  # reshuffled every epoch
    # a pure function of (seed, step): another instance, asked out of order, agrees
    other = BatchOrder(n, batch, seed=3)
    for step in (2 * per_epoch, 0, per_epoch + per_epoch - 1, 1 % per_epoch):
        e, j = divmod(step, per_epoch)
        assert other.indices(step).tolist() == epochs[e][j * b : (j + 1) * b]
    assert BatchOrder(n, batch, seed=4).indices(0).tolist() != epochs[0][:b] or n <= 3


# --------------------------------------------------------------------------- interruption and resume


def test_sigint_saves_a_checkpoint_and_the_resumed_run_matches(tiny_texts: ClassificationData, tmp_path: Path) -> None:
    config = bert_config(steps=24, batch_size=16, seed=3, checkpoint_every=1000, log_every=4)
    reference = bert(seed=3)
    ref_result = train(reference, tiny_texts.train, config, progress=False)

    def interrupt(step: int, loss: float) -> None:
        if step == 9:
            os.kill(os.getpid(), signal.SIGINT)

    handler_before = signal.getsignal(signal.SIGINT)
    interrupted = bert(seed=3)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 9"):
        train(interrupted, tiny_texts.train, config, checkpoint_dir=tmp_path, progress=False, on_step=interrupt)
    assert signal.getsignal(signal.SIGINT) is handler_before  # Ctrl-C works as before again
    ckpt = safe_torch_load(tmp_path / CHECKPOINT_FILE)
    assert ckpt["step"] == 9
    assert all(torch.equal(ckpt["model"][k], v) for k, v in interrupted.state_dict().items())
    assert weights_differ(interrupted, reference)

    resumed = bert(seed=3)
    result = train(resumed, tiny_texts.train, config, checkpoint_dir=tmp_path, progress=False)
    assert result.resumed_from == 9 and result.steps == 24
    assert_same_weights(resumed, reference)
    assert [h["step"] for h in result.history] == [h["step"] for h in ref_result.history]
    assert safe_torch_load(tmp_path / CHECKPOINT_FILE)["step"] == 24

    # a finished run found again does nothing and keeps its weights
    again = bert(seed=3)
    result = train(again, tiny_texts.train, config, checkpoint_dir=tmp_path, progress=False)
    assert result.resumed_from == 24 and result.steps == 24
    assert_same_weights(again, reference)


def test_crash_resumes_from_the_last_periodic_checkpoint(tiny_images: ClassificationData, tmp_path: Path) -> None:
    config = cnn_config(steps=30, optimizer="sgd", lr=0.05, momentum=0.9, checkpoint_every=10, seed=2)
    reference = cnn(seed=2)
    train(reference, tiny_images.train, config, progress=False)

    def crash(step: int, loss: float) -> None:
        if step == 17:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train(cnn(seed=2), tiny_images.train, config, checkpoint_dir=tmp_path, progress=False, on_step=crash)
    assert safe_torch_load(tmp_path / CHECKPOINT_FILE)["step"] == 10
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written checkpoint files

    # settings that do not change the numbers may differ on resume
    resumed = cnn(seed=2)
    result = train(resumed, tiny_images.train, cnn_config(steps=30, optimizer="sgd", lr=0.05, momentum=0.9,
                                                           checkpoint_every=7, log_every=3, seed=2),
                   checkpoint_dir=tmp_path, progress=False)
    assert result.resumed_from == 10 and result.steps == 30
    assert_same_weights(resumed, reference)


def test_resume_with_other_settings_is_refused(tiny_images: ClassificationData, tmp_path: Path) -> None:
    config = cnn_config(steps=6, checkpoint_every=3)
    train(cnn(), tiny_images.train, config, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="other training settings") as err:
        train(cnn(), tiny_images.train, cnn_config(steps=6, checkpoint_every=3, lr=0.02), checkpoint_dir=tmp_path,
              progress=False)
    assert "(lr differ)" in str(err.value)
    # resume=False starts over and overwrites
    fresh = cnn()
    result = train(fresh, tiny_images.train, cnn_config(steps=6, lr=0.02), checkpoint_dir=tmp_path, resume=False,
                   progress=False)
    assert result.resumed_from == 0
    reference = cnn()
    train(reference, tiny_images.train, cnn_config(steps=6, lr=0.02), progress=False)
    assert_same_weights(fresh, reference)


def test_a_foreign_checkpoint_file_is_refused(tmp_path: Path, tiny_images: ClassificationData) -> None:
    torch.save({"step": 3, "model": {}}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="not a safetransfer training checkpoint"):
        train(cnn(), tiny_images.train, cnn_config(steps=6), checkpoint_dir=tmp_path, progress=False)


# --------------------------------------------------------------------------- bad configs and data


@pytest.mark.parametrize(
    "kw, phrase",
    [
        ({"steps": 0}, "steps must be at least 1"),
        ({"lr": -0.1}, "lr must be positive"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"optimizer": "adam"}, "optimizer must be 'sgd' or 'adamw'"),
        ({"schedule": "step"}, "schedule must be"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"warmup_fraction": 1.0}, "warmup_fraction"),
        ({"weight_decay": -1.0}, "must not be negative"),
    ],
)
def test_bad_train_configs(kw: dict, phrase: str, tiny_images: ClassificationData) -> None:
    with pytest.raises(ConfigError, match=phrase):
        TrainConfig(**kw).validate()
    model = cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=phrase):
        train(model, tiny_images.train, cnn_config(**kw), progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_train_config_overrides() -> None:
    config = TrainConfig.from_overrides({"lr": 0.1, "steps": 5}, {"lr": None, "steps": 7})
    assert config.lr == 0.1 and config.steps == 7
    with pytest.raises(ConfigError, match="Unknown training option.*learning_rate"):
        TrainConfig.from_overrides({}, {"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="steps must be at least 1"):
        TrainConfig.from_overrides({"steps": 5}, {"steps": 0})


def test_labels_out_of_range_for_the_head(tiny_images: ClassificationData) -> None:
    with pytest.raises(DataError, match="labels") as err:
        train(cnn(num_classes=2), tiny_images.train, cnn_config(), progress=False)
    assert "0..2" in str(err.value) and "2 classes" in str(err.value)
    negative = Split(tiny_images.train.inputs[:4], torch.tensor([0, 1, -1, 0]))
    with pytest.raises(DataError, match="labels"):
        train(cnn(), negative, cnn_config(), progress=False)
    with pytest.raises(DataError, match="validation labels"):
        train(cnn(num_classes=2), tiny_images.train.subset(torch.nonzero(tiny_images.train.labels < 2).view(-1)),
              cnn_config(), val_split=tiny_images.val, progress=False)


def test_empty_split(tiny_images: ClassificationData) -> None:
    empty = Split(torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long))
    with pytest.raises(DataError, match="empty"):
        train(cnn(), empty, cnn_config(), progress=False)


def test_wrong_modality(tiny_images: ClassificationData, tiny_texts: ClassificationData) -> None:
    with pytest.raises(DataError, match="image but model 'tiny-bert' takes text"):
        train(bert(num_classes=3), tiny_images.train, bert_config(), progress=False)
    with pytest.raises(DataError, match="text but model 'tiny-cnn' takes image"):
        train(cnn(num_classes=2), tiny_texts.train, cnn_config(), progress=False)


# --------------------------------------------------------------------------- evaluation


def test_metrics_from_known_predictions() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 2, 0, 1])
    r = metrics_from_predictions(labels, preds, ["a", "b", "c", "d"])
    # true class by row, predicted by column
    assert r.confusion == [[1, 1, 0, 0], [0, 2, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]]
    assert r.n == 8 and r.accuracy == pytest.approx(4 / 8)
    # precision = diagonal / column sums (2, 4, 2, 0); recall = diagonal / row sums (2, 3, 3, 0)
    assert r.precision == pytest.approx([1 / 2, 2 / 4, 1 / 2, 0.0], abs=1e-6)
    assert r.recall == pytest.approx([1 / 2, 2 / 3, 1 / 3, 0.0], abs=1e-6)
    assert r.class_names == ["a", "b", "c", "d"]
    perfect = metrics_from_predictions(labels, labels, ["a", "b", "c"])
    assert perfect.accuracy == 1.0 and perfect.precision == [1.0] * 3 and perfect.recall == [1.0] * 3
    assert confusion_matrix(torch.tensor([2]), torch.tensor([0]), 3).tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0]]


def test_evaluate_agrees_with_the_logits(tiny_images: ClassificationData) -> None:
    model = cnn(seed=4)
    train(model, tiny_images.train, cnn_config(steps=5), progress=False)
    logits = predict_logits(model, tiny_images.test.inputs, batch_size=7)
    assert logits.shape == (len(tiny_images.test), 3)
    r = evaluate(model, tiny_images.test, tiny_images.class_names, batch_size=16)
    preds = logits.argmax(1)
    assert r.accuracy == pytest.approx(float((preds == tiny_images.test.labels).float().mean()))
    assert sum(map(sum, r.confusion)) == len(tiny_images.test)
    assert [sum(row) for row in r.confusion] == torch.bincount(tiny_images.test.labels, minlength=3).tolist()
    with pytest.raises(DataError, match="3 classes but the model's head has 2"):
        evaluate(cnn(num_classes=2), tiny_images.test, tiny_images.class_names)


def test_superft_schedule_as_backdoor_toolbox_sets_it() -> None:
    """Triangle cycles of 20 steps between lr and the peak, the peak lowered after 40% of the steps;
    each step runs at the rate set after the step before it (step 0 at the base rate)."""
    cfg = TrainConfig(steps=100, lr=0.03, momentum=0.0, schedule="superft", peak_lr=2.5, late_peak_lr=0.05)
    rates = [superft_lr(s, cfg) for s in range(100)]
    assert rates[0] == rates[1] == pytest.approx(0.03)
    assert rates[11] == pytest.approx(2.5)  # iteration 10: the top of the first cycle
    assert rates[6] == pytest.approx(0.03 + (2.5 - 0.03) * 0.5)  # half-way up
    assert rates[21] == pytest.approx(0.03)  # iteration 20: back at the base
    assert max(rates[41:]) == pytest.approx(0.05)  # after 40 steps the second, lower peak
    assert lr_factor(11, cfg) == pytest.approx(2.5 / 0.03)
    # the cyclic fields enter a run's fingerprint under that schedule only (older keys stay)
    assert "peak_lr" in cfg.result_fingerprint() and "peak_lr" not in TrainConfig().result_fingerprint()
    with pytest.raises(ConfigError, match="superft"):
        TrainConfig(schedule="superft", lr=0.1, peak_lr=0.05, late_peak_lr=0.2)


def test_budget_steps_compress_a_longer_recipe_onto_this_run(tiny_images) -> None:
    """``budget_steps`` N: the run trains at lr × N / steps (the optimiser's groups say so), the
    head multiplier on top; 0 leaves the rate and the run's fingerprint as before the field."""
    cfg = TrainConfig(steps=100, lr=5e-3, budget_steps=1000, head_lr_mult=2.0, momentum=0.0)
    assert cfg.run_lr == pytest.approx(0.05)
    model = cnn(num_classes=3)
    opt = _make_optimizer(model, cfg)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([0.05, 0.1])
    assert TrainConfig(steps=100, lr=5e-3).run_lr == 5e-3
    assert "budget_steps" not in TrainConfig().result_fingerprint() and cfg.result_fingerprint()["budget_steps"] == 1000
    result = train(model, tiny_images.train, replace(cfg, steps=4, batch_size=8, log_every=1))
    assert result.history[0]["lr"] == pytest.approx(5e-3 * 1000 / 4)
    for bad in ({"budget_steps": -1}, {"budget_steps": 10, "schedule": "superft", "peak_lr": 1.0, "late_peak_lr": 1.0}):
        with pytest.raises(ConfigError, match="budget_steps"):
            TrainConfig(**bad)

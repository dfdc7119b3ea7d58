"""Tests of the transfer methods (finetune, retrain, magprune, delta, delta_r, renofeation, remos).

Tiny teachers (tiny-cnn / tiny-bert) are trained here on the tiny data of conftest; each method
must give a student that learns, leave the teacher untouched, and do what its paper says to the
weights (masks kept, weights averaged, BatchNorm statistics recomputed, ...).
"""

from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from safetransfer.data import ClassificationData
from safetransfer.errors import CheckpointError, ConfigError, UnknownNameError
from safetransfer.models import TransferModel, create_model, load_model
from safetransfer.slicing import Slice
from safetransfer.train import TrainConfig, train
from safetransfer.transfer import (
    METHODS,
    SCRATCH_METHODS,
    TransferConfig,
    default_train_config,
    make_student,
    stage_names,
    transfer,
)
from safetransfer.transfer.common import SliceHook
from safetransfer.transfer.config import default_stage_dropout
from safetransfer.transfer.delta import FeatureDistillation
from safetransfer.transfer.remos import word_embedding
from safetransfer.transfer.renofeation import SWA
from safetransfer.transfer.runner import RESULT_FILE
from safetransfer.transfer.stages import StageHooks

ALL_METHODS = ["finetune", "retrain", "magprune", "delta", "delta_r", "renofeation", "remos",
               "finetune_strong", "superft", "remos_strong"]


# --------------------------------------------------------------------------- helpers and teachers


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_state_equal(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    now = model.state_dict()
    assert list(now) == list(state)
    for k, v in state.items():
        assert torch.equal(now[k], v), k


def sliced_weights(model: TransferModel) -> dict[str, torch.Tensor]:
    return {name: m.weight for name, m in model.sliceable_layers()}


def no_forward_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def cnn_train(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(steps=40, batch_size=32, optimizer="adamw", lr=0.01, seed=0, log_every=10), **kw})


def bert_train(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(steps=60, batch_size=32, optimizer="adamw", lr=3e-3, seed=0, log_every=20), **kw})


@pytest.fixture(scope="module")
def cnn_teacher(tiny_images: ClassificationData) -> TransferModel:
    """A tiny-cnn trained a little on the tiny images: our 'pretrained' vision teacher."""
    model = create_model("tiny-cnn", 3, pretrained=False, image_size=8, in_channels=1, seed=11)
    train(model, tiny_images.train, cnn_train(steps=30, seed=5), progress=False)
    return model


@pytest.fixture(scope="module")
def bert_teacher(tiny_texts: ClassificationData) -> TransferModel:
    model = create_model("tiny-bert", 2, pretrained=False, max_length=48, seed=11)
    train(model, tiny_texts.train, bert_train(steps=40, seed=5), progress=False)
    return model


# --------------------------------------------------------------------------- every method, both modalities


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("modality", ["image", "text"])
def test_every_method_learns_and_leaves_the_teacher_untouched(
    method: str, modality: str, cnn_teacher: TransferModel, bert_teacher: TransferModel,
    tiny_images: ClassificationData, tiny_texts: ClassificationData,
) -> None:
    teacher, data, cfg = (
        (cnn_teacher, tiny_images, cnn_train()) if modality == "image" else (bert_teacher, tiny_texts, bert_train())
    )
    before = snapshot(teacher)
    mode_before = teacher.training
    result = transfer(teacher, data, TransferConfig(method=method, train=cfg, profile_samples=100), progress=False)
    assert_state_equal(teacher, before)  # every tensor of the teacher is as it was
    assert teacher.training == mode_before and no_forward_hooks(teacher)
    student = result.student
    assert student is not teacher and student.num_classes == data.num_classes
    assert result.method == method and result.train.steps == cfg.steps
    chance = 1.0 / data.num_classes
    assert result.test.accuracy > chance + 0.15, (method, modality, result.test.accuracy)
    assert no_forward_hooks(student)  # distillation / dropout hooks are gone
    assert not student.training
    assert (result.slice is not None) == (method in ("remos", "magprune", "remos_strong"))
    json.dumps(result.to_dict())  # JSON-able


# --------------------------------------------------------------------------- starting points


def test_scratch_methods_start_from_other_weights_than_the_teacher(
    cnn_teacher: TransferModel, tiny_images: ClassificationData
) -> None:
    heads = []
    for method in ALL_METHODS:
        student, hooks = make_student(cnn_teacher, tiny_images, TransferConfig(method=method, train=cnn_train()))
        t, s = dict(cnn_teacher.named_parameters()), dict(student.named_parameters())
        body = [n for n in s if not n.startswith("head.")]
        if method in SCRATCH_METHODS:
            assert all(not torch.equal(s[n], t[n]) for n in body if s[n].dim() > 1), method  # every weight matrix new
        elif method in ("finetune", "delta", "finetune_strong", "superft"):
            assert all(torch.equal(s[n], t[n]) for n in body), method
        heads.append(student.head.weight.detach().clone())
        for hook in hooks:
            getattr(hook, "close", lambda: None)()
    assert all(torch.equal(h, heads[0]) for h in heads)  # one seed, one head for every method
    # The re-initialised bodies are the architecture's own init, the same for the three scratch methods.
    bodies = [make_student(cnn_teacher, tiny_images, TransferConfig(method=m, train=cnn_train()))[0] for m in sorted(SCRATCH_METHODS)]
    w = [b.body.features[0].weight for b in bodies]
    assert torch.equal(w[0], w[1]) and torch.equal(w[1], w[2])


# --------------------------------------------------------------------------- magnitude pruning


def test_magprune_zeroes_the_smallest_weights_and_keeps_them_zero(
    cnn_teacher: TransferModel, tiny_images: ClassificationData
) -> None:
    ratio = 0.3
    result = transfer(cnn_teacher, tiny_images, TransferConfig(method="magprune", ratio=ratio, train=cnn_train()), progress=False)
    slice_: Slice = result.slice
    teacher_w = sliced_weights(cnn_teacher)
    n_total = sum(w.numel() for w in teacher_w.values())
    assert slice_.num_weights == n_total
    assert slice_.num_excluded == math.floor(ratio * n_total + 0.5)
    # the pruned ones are the smallest |w| of the teacher, one global threshold
    pruned = torch.cat([teacher_w[n][~m].abs().flatten() for n, m in slice_.masks.items()])
    kept = torch.cat([teacher_w[n][m].abs().flatten() for n, m in slice_.masks.items()])
    assert pruned.max() <= kept.min()
    student_w = sliced_weights(result.student)
    zeros = sum(int((student_w[n][~m] == 0).sum()) for n, m in slice_.masks.items())
    assert zeros == slice_.num_excluded  # still exactly zero after training
    total_zeros = sum(int((w == 0).sum()) for w in student_w.values())
    assert total_zeros == slice_.num_excluded
    moved = sum(int((student_w[n][m] != teacher_w[n][m]).sum()) for n, m in slice_.masks.items())
    assert moved > 0.9 * kept.numel()  # the kept weights were fine-tuned


# --------------------------------------------------------------------------- ReMoS


@pytest.mark.parametrize("frozen", [True, False])
def test_remos_excluded_weights_frozen_or_retrained(
    frozen: bool, cnn_teacher: TransferModel, tiny_images: ClassificationData
) -> None:
    ratio = 0.2
    cfg = TransferConfig(method="remos", ratio=ratio, frozen=frozen, train=cnn_train())
    start, hooks = make_student(cnn_teacher, tiny_images, cfg)
    slice_ = hooks[0].slice
    n_total = slice_.num_weights
    assert slice_.num_excluded >= int(ratio * n_total) + 1  # the artifact's cut: every score <= sorted[int(α·N)]
    teacher_w, start_w = sliced_weights(cnn_teacher), sliced_weights(start)
    for name, keep in slice_.masks.items():
        assert torch.equal(start_w[name][keep], teacher_w[name][keep])  # kept = the teacher's
        assert bool((start_w[name][~keep] == 0).all())  # excluded = zeroed
    result = transfer(cnn_teacher, tiny_images, cfg, progress=False)
    assert all(torch.equal(result.slice.masks[n], m) for n, m in slice_.masks.items())  # deterministic slice
    assert result.slice_summary["excluded"] == slice_.num_excluded
    assert result.slice_summary["method"] == "remos"
    student_w = sliced_weights(result.student)
    excluded_values = torch.cat([student_w[n][~m].flatten() for n, m in slice_.masks.items()])
    if frozen:
        assert bool((excluded_values == 0).all())
    else:
        assert (excluded_values != 0).float().mean() > 0.9  # retrained freely


def test_remos_reinit_draws_new_excluded_weights(cnn_teacher: TransferModel, tiny_images: ClassificationData) -> None:
    cfg = TransferConfig(method="remos", ratio=0.2, excluded="reinit", train=cnn_train())
    student, hooks = make_student(cnn_teacher, tiny_images, cfg)
    slice_ = hooks[0].slice
    teacher_w, w = sliced_weights(cnn_teacher), sliced_weights(student)
    excluded_new = torch.cat([w[n][~m].flatten() for n, m in slice_.masks.items()])
    excluded_old = torch.cat([teacher_w[n][~m].flatten() for n, m in slice_.masks.items()])
    assert bool((excluded_new != 0).all()) and bool((excluded_new != excluded_old).all())
    with pytest.raises(ConfigError, match="frozen"):
        TransferConfig(method="remos", excluded="reinit", frozen=True).validate()


def test_remos_text_slices_the_encoder_linears(bert_teacher: TransferModel, tiny_texts: ClassificationData) -> None:
    _, hooks = make_student(bert_teacher, tiny_texts, TransferConfig(method="remos", ratio=0.1, train=bert_train()))
    names = list(hooks[0].slice.masks)
    assert names and all(n.startswith("body.bert.encoder.layer.") for n in names)
    assert hooks[0].profile.n_samples == len(tiny_texts.train)  # 2000 > 168: all of them


def test_remos_reset_unused_tokens_zeroes_exactly_the_rows_the_student_never_uses(
    bert_teacher: TransferModel, tiny_texts: ClassificationData, cnn_teacher: TransferModel, tiny_images: ClassificationData,
) -> None:
    plain_config = TransferConfig(method="remos", ratio=0.1, train=bert_train())
    config = TransferConfig(method="remos", ratio=0.1, train=bert_train(), reset_unused_tokens=True)
    plain, _ = make_student(bert_teacher, tiny_texts, plain_config)
    student, hooks = make_student(bert_teacher, tiny_texts, config)
    tok = bert_teacher.tokenizer
    used = set(tok.all_special_ids)  # the reference, one text at a time
    for text in tiny_texts.train.inputs:
        used |= set(tok(text, truncation=True, max_length=bert_teacher.config.max_length)["input_ids"])
    rows = word_embedding(student).weight.detach()
    teacher_rows = word_embedding(bert_teacher).weight.detach()
    unused = sorted(set(range(rows.shape[0])) - used)
    assert unused and (teacher_rows[unused] != 0).any()  # there is something to reset
    assert (rows[unused] == 0).all()
    assert hooks[0].slice.summary()["params"]["reset_unused_token_rows"] == len(unused)  # recorded in the result
    assert torch.equal(rows[sorted(used)], teacher_rows[sorted(used)])
    assert torch.equal(word_embedding(plain).weight, word_embedding(bert_teacher).weight)  # the paper's slice: no row
    for (name, a), (_, b) in zip(plain.body.named_parameters(), student.body.named_parameters()):
        if "word_embeddings" not in name:
            assert torch.equal(a, b), name  # the same slice of the encoder otherwise
    assert "reset_unused_tokens" not in plain_config.fingerprint() and config.fingerprint()["reset_unused_tokens"]
    with pytest.raises(ConfigError, match="ReMoS option"):
        TransferConfig(method="finetune", reset_unused_tokens=True).validate()
    with pytest.raises(ConfigError, match="text model"):
        make_student(cnn_teacher, tiny_images, TransferConfig(method="remos", reset_unused_tokens=True, train=cnn_train()))


# --------------------------------------------------------------------------- DELTA


@pytest.mark.parametrize("modality", ["image", "text"])
def test_delta_loss_is_zero_for_the_teacher_itself_and_positive_when_perturbed(
    modality: str, cnn_teacher: TransferModel, bert_teacher: TransferModel,
    tiny_images: ClassificationData, tiny_texts: ClassificationData,
) -> None:
    teacher, data = (cnn_teacher, tiny_images) if modality == "image" else (bert_teacher, tiny_texts)
    student, hooks = make_student(teacher, data, TransferConfig(method="delta", head_l2=0.0, train=cnn_train()))
    (hook,) = hooks
    assert isinstance(hook, FeatureDistillation) and hook.names == stage_names(student)
    student.eval()  # no dropout, BatchNorm on running statistics: same computation as the teacher
    idx = torch.arange(16)
    inputs = student.preprocess(data.train.batch_inputs(idx))
    labels = data.train.labels[idx]
    loss = hook.extra_loss(student, inputs, student(inputs), labels)
    assert float(loss.detach()) == 0.0
    with torch.no_grad():
        first = student.sliceable_layers()[0][1]
        first.weight.add_(0.05 * torch.randn(first.weight.shape, generator=torch.Generator().manual_seed(0)))
    recorder = StageHooks(student, hook.names, record=True)
    target = StageHooks(teacher, hook.names, record=True)  # removed below: the teacher stays hook-free
    try:
        loss = hook.extra_loss(student, inputs, student(inputs), labels)
        with torch.no_grad():
            teacher.eval()(inputs)
        s_out, t_out = recorder.pop(), target.pop()
    finally:
        recorder.remove()
        target.remove()
    assert float(loss.detach()) > 0.0
    assert loss.requires_grad  # it trains the student
    # by hand: β · Σ_stages mean((F_s − F_t)²) / mean(F_t²), over the real tokens for text
    expected = 0.0
    for name in hook.names:
        s_, t_ = s_out[name].detach(), t_out[name]
        if modality == "text":
            keep = inputs["attention_mask"].bool()
            s_, t_ = s_[keep], t_[keep]
        expected += float((s_ - t_).pow(2).mean() / t_.pow(2).mean())
    assert float(loss.detach()) == pytest.approx(hook.weight * expected, rel=1e-5)
    # the head L2 term: exactly head_l2 · ‖W‖² on top
    hook.head_l2 = 0.5
    loss_l2 = hook.extra_loss(student, inputs, student(inputs), labels)
    torch.testing.assert_close(loss_l2, loss + 0.5 * student.head.weight.pow(2).sum())
    hook.close()
    assert no_forward_hooks(student) and no_forward_hooks(hook.teacher)


def test_delta_r_distils_towards_the_pretrained_teacher(cnn_teacher: TransferModel, tiny_images: ClassificationData) -> None:
    student, (hook,) = make_student(cnn_teacher, tiny_images, TransferConfig(method="delta_r", train=cnn_train()))
    assert_state_equal(hook.teacher.body, cnn_teacher.body.state_dict())
    assert not torch.equal(student.body.features[0].weight, cnn_teacher.body.features[0].weight)
    hook.close()


# --------------------------------------------------------------------------- Renofeation


def test_stage_dropout_acts_in_training_only(cnn_teacher: TransferModel, tiny_images: ClassificationData) -> None:
    model = cnn_teacher.with_head(3)
    names = stage_names(model)
    x = model.preprocess(tiny_images.train.inputs[:8])
    model.eval()
    with torch.no_grad():
        ref = model(x)
    recorder = StageHooks(model, names, record=True)
    dropper = StageHooks(model, names[:1], dropout=0.5)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)  # eval mode: no dropout
    seen = {}
    next_conv = dict(model.named_modules())["body.features.7"]  # reads stage 1's output
    pre = next_conv.register_forward_pre_hook(lambda m, args: seen.update(x=args[0].detach().clone()))
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        model(x)
    stage1 = recorder.pop()[names[0]]  # recorded before the dropout
    dropped = seen["x"]
    zero_channel = dropped.abs().amax(dim=(2, 3)) == 0
    assert bool((stage1.abs().amax(dim=(2, 3)) > 0).all())
    assert 0 < int(zero_channel.sum()) < zero_channel.numel()  # whole channels dropped, not all
    kept = ~zero_channel
    torch.testing.assert_close(dropped[kept], 2.0 * stage1[kept])  # the rest scaled by 1 / (1 - p)
    for h in (recorder, dropper):
        h.remove()
    pre.remove()
    assert no_forward_hooks(model)


def test_renofeation_swa_is_the_mean_of_the_window_and_batchnorm_is_recomputed(
    cnn_teacher: TransferModel, tiny_images: ClassificationData
) -> None:
    steps, swa_start = 8, 0.5  # averaging window: the weights after steps 5, 6, 7, 8
    cfg = TransferConfig(method="renofeation", swa_start=swa_start, bn_samples=0, train=cnn_train(steps=steps))
    snapshots: list[dict[str, torch.Tensor]] = []
    bn_before: dict[str, torch.Tensor] = {}

    def record(step: int, loss: float) -> None:
        if step > swa_start * steps:
            snapshots.append({k: p.detach().clone() for k, p in student_ref[0].named_parameters()})
        if step == steps:
            bn_before.update({k: v.clone() for k, v in student_ref[0].state_dict().items() if "running" in k})

    student, hooks = make_student(cnn_teacher, tiny_images, cfg)
    student_ref = [student]
    assert isinstance(hooks[0], SWA) and hooks[0].start == 4
    train(student, tiny_images.train, cfg.train, hooks=hooks, progress=False, on_step=record)
    assert len(snapshots) == 4 and hooks[0].count == 4
    for name, p in student.named_parameters():
        mean = torch.stack([s[name].double() for s in snapshots]).mean(0).float()
        torch.testing.assert_close(p.detach(), mean, rtol=1e-6, atol=1e-7)
    # BatchNorm statistics: recomputed (differ from the training's running averages) ...
    after = {k: v for k, v in student.state_dict().items() if "running" in k}
    assert all(not torch.equal(after[k], bn_before[k]) for k in bn_before)
    # ... and for the first BN layer equal to the exact statistics of its input over the training data
    # (bn_samples=0: all 210 images in one batch of 256, cumulative average of one batch).
    with torch.no_grad():
        conv_out = student.body.features[0](student.normalize(student.preprocess(tiny_images.train.inputs)))
    bn = student.body.features[1]
    torch.testing.assert_close(bn.running_mean, conv_out.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, conv_out.var(dim=(0, 2, 3), unbiased=True), rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 1 and bn.momentum == 0.1  # the momentum is restored
    assert no_forward_hooks(student)


# --------------------------------------------------------------------------- resume, outputs, errors


def _interrupt_with_sigint(at: int):
    def on_step(step: int, loss: float) -> None:
        if step == at:
            os.kill(os.getpid(), signal.SIGINT)

    return on_step


class _Crash(Exception):
    pass


def _crash_at(at: int):
    def on_step(step: int, loss: float) -> None:
        if step == at:
            raise _Crash(f"crash at step {at}")

    return on_step


@pytest.mark.parametrize("method", ["renofeation", "magprune"])
def test_an_interrupted_transfer_resumes_to_the_same_student(
    method: str, cnn_teacher: TransferModel, tiny_images: ClassificationData, tmp_path: Path
) -> None:
    cfg = TransferConfig(method=method, ratio=0.2, swa_start=0.5, train=cnn_train(steps=12, checkpoint_every=4))
    reference = transfer(cnn_teacher, tiny_images, cfg, tmp_path / "straight", progress=False)
    out = tmp_path / "interrupted"
    if method == "renofeation":  # Ctrl-C inside the averaging window: the SWA sum is in the checkpoint
        with pytest.raises(KeyboardInterrupt, match="interrupted at step 9"):
            transfer(cnn_teacher, tiny_images, cfg, out, progress=False, on_step=_interrupt_with_sigint(9))
        expected_resume = 9
    else:  # a crash after the checkpoint at step 4
        with pytest.raises(_Crash):
            transfer(cnn_teacher, tiny_images, cfg, out, progress=False, on_step=_crash_at(7))
        expected_resume = 4
    assert not (out / RESULT_FILE).exists()
    resumed = transfer(cnn_teacher, tiny_images, cfg, out, progress=False)
    assert resumed.train.resumed_from == expected_resume
    assert_state_equal(resumed.student, reference.student.state_dict())
    assert resumed.test.accuracy == reference.test.accuracy
    # outputs: the student, the result, the slice (magprune)
    loaded = load_model(out / "model")
    assert_state_equal(loaded, reference.student.state_dict())
    doc = json.loads((out / RESULT_FILE).read_text())
    assert doc["method"] == method and doc["test_accuracy"] == resumed.test.accuracy
    if method == "magprune":
        saved = Slice.load(out / "slice")
        assert all(torch.equal(saved.masks[n], m) for n, m in resumed.slice.masks.items())
    # a finished run found again gives the same student without training
    again = transfer(cnn_teacher, tiny_images, cfg, out, progress=False)
    assert again.train.resumed_from == cfg.train.steps
    assert_state_equal(again.student, reference.student.state_dict())


def test_resuming_with_other_transfer_settings_is_refused(
    cnn_teacher: TransferModel, tiny_images: ClassificationData, tmp_path: Path
) -> None:
    cfg = TransferConfig(method="remos", ratio=0.1, train=cnn_train(steps=6))
    transfer(cnn_teacher, tiny_images, cfg, tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="ratio"):
        transfer(cnn_teacher, tiny_images, TransferConfig(method="remos", ratio=0.2, train=cnn_train(steps=6)), tmp_path,
                 progress=False)
    other_teacher = cnn_teacher.with_head(3, seed=99)
    with pytest.raises(CheckpointError, match="teacher_sha256"):
        transfer(other_teacher, tiny_images, cfg, tmp_path, progress=False)
    fresh = transfer(cnn_teacher, tiny_images, TransferConfig(method="remos", ratio=0.2, train=cnn_train(steps=6)), tmp_path,
                     progress=False, resume=False)
    assert fresh.train.resumed_from == 0
    assert Slice.load(tmp_path / "slice").ratio == 0.2
    assert (tmp_path / "coverage").is_dir()  # the teacher's coverage profile, for the report


def test_unknown_method_lists_the_known_ones(cnn_teacher: TransferModel, tiny_images: ClassificationData) -> None:
    with pytest.raises(UnknownNameError, match="transfer method 'remoss'.*Did you mean 'remos'.*delta_r.*finetune"):
        transfer(cnn_teacher, tiny_images, TransferConfig(method="remoss"), progress=False)
    with pytest.raises(UnknownNameError, match="Known: delta, delta_r, finetune, finetune_strong, magprune, remos, remos_strong, renofeation, retrain, superft"):
        TransferConfig(method="nope").validate()
    assert sorted(METHODS) == sorted(ALL_METHODS)


def test_bad_configs_are_refused() -> None:
    for bad in (dict(ratio=1.0), dict(ratio=-0.1), dict(excluded="noise"), dict(dropout=1.0), dict(swa_start=1.0),
                dict(distill_weight=-1.0), dict(profile_samples=-1)):
        with pytest.raises(ConfigError):
            TransferConfig(**bad).validate()
    with pytest.raises(ConfigError, match="Unknown transfer option"):
        TransferConfig.from_dict({"method": "remos", "alpha": 0.1})
    cfg = TransferConfig.from_dict({"method": "remos", "ratio": 0.05, "train": {"steps": 5, "lr": 0.1}})
    assert cfg.train is not None and cfg.train.steps == 5 and cfg.ratio == 0.05


def test_default_training_protocols() -> None:
    ft = default_train_config("efficientnet-lite0", "remos")
    assert (ft.optimizer, ft.lr, ft.momentum, ft.head_lr_mult, ft.schedule, ft.batch_size) == ("sgd", 5e-3, 0.0, 10.0, "constant", 64)
    assert default_train_config("efficientnet-lite0", "finetune") == ft == default_train_config("efficientnet-lite0", "magprune")
    # the ReMoS artifact's fine-tuning (finetuner.py, remos.sh): one rate, weight decay, label smoothing
    art = default_train_config("efficientnet-lite0", "finetune", "artifact")
    assert (art.lr, art.momentum, art.head_lr_mult, art.weight_decay, art.label_smoothing) == (5e-3, 0.0, 1.0, 1e-4, 0.1)
    assert default_train_config("efficientnet-lite0", "retrain", "artifact") == art
    # ... and at the artifact's rate x steps budget (5e-3 x 10,000) compressed onto the run's steps
    scaled = default_train_config("efficientnet-lite0", "finetune", "artifact_scaled", steps=1000)
    assert scaled.budget_steps == 10_000 and scaled.run_lr == pytest.approx(0.05)
    assert replace(scaled, budget_steps=0) == replace(art, steps=1000)  # otherwise the artifact's recipe
    assert default_stage_dropout("efficientnet-lite0", "finetune", "artifact_scaled") == 0.1
    assert default_train_config("efficientnet-lite0", "finetune_strong", "artifact_scaled").budget_steps == 0
    # the shared protocol (default): the paper's seven methods train the same way
    paper = ("finetune", "retrain", "magprune", "delta", "delta_r", "renofeation", "remos")
    assert all(default_train_config("efficientnet-lite0", m) == ft for m in paper)
    # the strong defences carry their own recipes, whatever the protocol
    strong = default_train_config("efficientnet-lite0", "finetune_strong")
    assert (strong.momentum, strong.schedule, strong.lr) == (0.9, "onecycle", 0.05)
    assert default_train_config("efficientnet-lite0", "remos_strong", "scratch") == strong
    sft = default_train_config("efficientnet-lite0", "superft")
    assert (sft.schedule, sft.lr, sft.peak_lr, sft.late_peak_lr, sft.momentum) == ("superft", 0.03, 2.5, 0.05, 0.0)
    with pytest.raises(ConfigError, match="image models only"):
        default_train_config("minilm-l6", "superft")
    scratch = [default_train_config("efficientnet-lite0", m, "scratch") for m in ("retrain", "delta_r", "renofeation")]
    assert scratch[0] == scratch[1] == scratch[2] and scratch[0].lr > ft.lr and scratch[0].steps == ft.steps
    assert default_train_config("efficientnet-lite0", "remos", "scratch") == ft
    with pytest.raises(UnknownNameError, match="training protocol"):
        default_train_config("efficientnet-lite0", "retrain", "fast")
    text = default_train_config("minilm-l6", "delta")
    assert (text.optimizer, text.lr, text.head_lr_mult, text.schedule) == ("adamw", 5e-5, 20.0, "linear")
    assert default_train_config("tiny-cnn", "remos", steps=7).steps == 7
    with pytest.raises(UnknownNameError):
        default_train_config("resnet-9000")
    # TransferConfig(train=None) resolves to the method's protocol with the transfer seed
    resolved = TransferConfig(method="retrain", seed=3).resolved("small-cnn")
    assert resolved.train == default_train_config("small-cnn", "retrain", seed=3)
    resolved = TransferConfig(method="retrain", seed=3, protocol="scratch").resolved("small-cnn")
    assert resolved.train == default_train_config("small-cnn", "retrain", "scratch", seed=3)


def test_stage_names_of_every_architecture_and_a_clear_error(cnn_teacher: TransferModel, bert_teacher: TransferModel) -> None:
    assert stage_names(cnn_teacher) == ["body.features.6", "body.features.13", "body.features.16"]
    assert stage_names(bert_teacher) == ["body.bert.encoder.layer.0", "body.bert.encoder.layer.1"]
    modules = dict(cnn_teacher.named_modules())
    assert isinstance(modules["body.features.6"], nn.MaxPool2d)
    odd = cnn_teacher.with_head(3)
    odd.config.arch = "resnet-9000"
    with pytest.raises(ConfigError, match="resnet-9000.*known: efficientnet-lite0"):
        stage_names(odd)


def test_efficientnet_stages_follow_the_resolution_changes() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    from safetransfer.models.zoo import build_from_config, get_arch

    model = build_from_config(get_arch("efficientnet-lite0").make_config(10, 32, None, None))
    names = stage_names(model)
    assert names == [f"body.net._blocks.{i}" for i in (0, 2, 4, 10, 15)] + ["body.net._bn1"]
    hooks = StageHooks(model, names, record=True)
    model.eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    shapes = [tuple(t.shape[-2:]) for t in hooks.pop().values()]
    hooks.remove()
    assert shapes == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]


def test_slice_hook_masks_with_one_multiply(cnn_teacher: TransferModel, tiny_images: ClassificationData) -> None:
    student, (hook,) = make_student(cnn_teacher, tiny_images, TransferConfig(method="remos", ratio=0.3, frozen=True, train=cnn_train()))
    assert isinstance(hook, SliceHook)
    with torch.no_grad():
        for _, m in student.sliceable_layers():
            m.weight.add_(1.0)
    hook.after_step(student, 1)
    w = sliced_weights(student)
    assert all(bool((w[n][~m] == 0).all()) and bool((w[n][m] != 0).all()) for n, m in hook.slice.masks.items())


def test_a_bad_transfer_config_fails_at_construction() -> None:
    from safetransfer.errors import ConfigError, UnknownNameError

    with pytest.raises(UnknownNameError, match="Did you mean 'remos'"):
        TransferConfig(method="remoss")
    with pytest.raises(ConfigError, match=r"ratio must lie in \[0, 1\) \(got 2.0\)"):
        TransferConfig(method="remos", ratio=2.0)
    assert TransferConfig(method="remos", ratio=0.3).ratio == 0.3

"""Adversarial reprogramming on a tiny frozen model trained in the test."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from safetransfer.attacks.reprogramming import (
    AdversarialProgram,
    ReprogramConfig,
    reprogram,
    reprogrammed_predictions,
    resolve_label_map,
)
from safetransfer.errors import ConfigError, DataError


def tiny_frozen_model(seed: int = 0) -> nn.Module:
    """A small CNN on 3x16x16 images with 5 labels, trained here on its own task: the overall
    brightness of the image in five bins."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 5))
    level = torch.rand(600, 1, 1, 1)
    x = (level + 0.05 * torch.randn(600, 3, 16, 16)).clamp(0, 1)
    y = (level.flatten() * 5).long().clamp(0, 4)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def easy_task(n: int = 240, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey 6x6 images: label 1 when bright, 0 when dark (plus noise)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (0.2 + 0.6 * y.view(-1, 1, 1, 1).float() + 0.1 * torch.randn(n, 1, 6, 6, generator=gen)).clamp(0, 1)
    return x, y


def test_program_leaves_the_task_image_exactly() -> None:
    prog = AdversarialProgram(3, 16, (6, 6), seed=0)
    with torch.no_grad():
        prog.weight.normal_(0, 3)
    x = torch.rand(4, 1, 6, 6)
    adv = prog(x)
    assert adv.shape == (4, 3, 16, 16)
    assert torch.equal(adv[:, :, 5:11, 5:11], x.expand(-1, 3, -1, -1))  # the centre is the input, untouched
    p = prog.program()
    assert (p[:, 5:11, 5:11] == 0).all() and (p.abs() > 0).float().mean() > 0.8
    assert adv.min() >= 0 and adv.max() <= 1
    with pytest.raises(ConfigError, match="does not fit"):
        AdversarialProgram(3, 4, (6, 6))
    # enlarged twice: the 12x12 centre is the input with every pixel a 2x2 block, the program zero there
    big = AdversarialProgram(3, 16, (6, 6), seed=0, scale=2)
    with torch.no_grad():
        big.weight.normal_(0, 3)
    centre = big(x)[:, :, 2:14, 2:14]
    assert torch.equal(centre[:, :, ::2, ::2], x.expand(-1, 3, -1, -1)) and torch.equal(centre[:, :, 1::2, 1::2],
                                                                                       x.expand(-1, 3, -1, -1))
    assert (big.program()[:, 2:14, 2:14] == 0).all() and (big.program()[:, :2].abs() > 0).all()
    with pytest.raises(ConfigError, match="scale 3"):
        AdversarialProgram(3, 16, (6, 6), scale=3)
    with pytest.raises(DataError, match="task images"):
        prog(torch.rand(2, 1, 5, 5))


def test_label_map_is_applied_as_documented() -> None:
    assert resolve_label_map(None, 3, 10).tolist() == [0, 1, 2]
    assert resolve_label_map([4, 2], 2, 5).tolist() == [4, 2]
    with pytest.raises(ConfigError, match="distinct"):
        resolve_label_map([1, 1], 2, 5)
    with pytest.raises(ConfigError, match="entries"):
        resolve_label_map([1], 2, 5)
    # prediction i means model label map[i] scored highest among the mapped ones
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([0.0, 5.0, 1.0, 9.0, 2.0]))  # label 3 best overall, 1 beats 4
    prog = AdversarialProgram(3, 16, (6, 6))
    x = torch.rand(3, 1, 6, 6)
    assert reprogrammed_predictions(model, prog, torch.tensor([4, 1]), x).tolist() == [1, 1, 1]
    assert reprogrammed_predictions(model, prog, torch.tensor([2, 4, 0]), x).tolist() == [1, 1, 1]


def test_reprogramming_learns_an_easy_task_and_keeps_the_model_frozen() -> None:
    model = tiny_frozen_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = easy_task()
    result = reprogram(model, x[:160], y[:160], canvas=16, channels=3, model_classes=5,
                       config=ReprogramConfig(steps=150, batch_size=32, lr=0.1, seed=0, eval_every=50),
                       test=(x[160:], y[160:]))
    assert result.test_accuracy is not None and result.test_accuracy >= 0.8, result.summary()  # chance: 0.5
    curve = [(h["step"], h["test_accuracy_sample"]) for h in result.history if "test_accuracy_sample" in h]
    assert [s for s, _ in curve] == [50, 100, 150]
    assert curve[-1][1] == result.test_accuracy  # the sample is the whole (80-image) test split here
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    again = reprogram(model, x[:160], y[:160], canvas=16, channels=3, model_classes=5,
                      config=ReprogramConfig(steps=150, batch_size=32, lr=0.1, seed=0))
    assert torch.equal(again.program.weight, result.program.weight)  # seeded: the same program


def test_reprogram_command_learns_saves_and_applies(tmp_path, capsys) -> None:
    import json

    import numpy as np

    from conftest import make_image_arrays
    from test_cli import assert_one_line_error, run

    # the victim: a tiny CNN trained on 16-px versions of the 3-class patch images
    x, y = make_image_arrays(600, seed=0)
    np.savez(tmp_path / "own.npz", x=x, y=y)
    r = run(["train", "--model", "tiny-cnn", "--data", tmp_path / "own.npz", "--image-size", "16", "--steps", "150",
             "--out", tmp_path / "victim", "--no-progress"], capsys)
    assert r.code == 0, r.text
    # the new task: 8-px images, bright (1) vs dark (0)
    task_x, task_y = easy_task(400, seed=2)
    task_x = torch.nn.functional.interpolate(task_x, size=8)
    np.savez(tmp_path / "task.npz", x=task_x.numpy(), y=task_y.numpy())
    model_dir = tmp_path / "victim" / "model"
    out = tmp_path / "prog"
    r = run(["reprogram", "--model", model_dir, "--task", tmp_path / "task.npz", "--steps", "200", "--batch-size", "32",
             "--lr", "0.1", "--out", out, "--no-progress"], capsys)
    assert r.code == 0, r.text
    learned = json.loads((out / "results.json").read_text())
    assert learned["test_accuracy"] >= 0.75, learned  # chance 0.5
    assert (out / "program.safetensors").exists() and (out / "program.png").stat().st_size > 1000
    r = run(["reprogram", "--model", model_dir, "--task", tmp_path / "task.npz", "--apply", out, "--out",
             tmp_path / "again", "--no-progress"], capsys)
    assert r.code == 0, r.text
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert again["test_accuracy"] == learned["test_accuracy"] and again["label_map"] == learned["label_map"]
    # the baseline: the same images on a grey canvas, the best label map for it; the program must beat it
    assert 0.0 <= learned["no_program_accuracy"] <= 1.0 and learned["test_accuracy"] > learned["no_program_accuracy"]

    # a "student" whose head lists the same labels in another order: the program's own map now reads
    # the wrong outputs, a map chosen by the data for the student's labels finds the permutation again
    from safetransfer.models.io import load_model, save_model

    student = load_model(model_dir)
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        student.head.weight.copy_(student.head.weight[perm].clone())
        student.head.bias.copy_(student.head.bias[perm].clone())
    save_model(student, tmp_path / "student")
    r = run(["reprogram", "--model", tmp_path / "student", "--task", tmp_path / "task.npz", "--apply", out,
             "--label-map", "data", "--out", tmp_path / "on-student", "--no-progress"], capsys)
    assert r.code == 0, r.text
    on_student = json.loads((tmp_path / "on-student" / "results.json").read_text())
    inverse = torch.argsort(perm)
    assert on_student["label_map"] == inverse[torch.tensor(learned["label_map"])].tolist()
    assert on_student["test_accuracy"] == learned["test_accuracy"]
    assert_one_line_error(run(["reprogram", "--model", model_dir, "--task", tmp_path / "task.npz", "--label-map", "0,7",
                               "--out", tmp_path / "x", "--no-progress"], capsys), "label map")
    assert_one_line_error(run(["reprogram", "--model", model_dir, "--task", tmp_path / "task.npz", "--label-map", "best",
                               "--out", tmp_path / "x", "--no-progress"], capsys), "--label-map")
    r = run(["reprogram", "--model", model_dir, "--task", tmp_path / "task.npz", "--label-map", "first", "--steps", "1",
             "--out", tmp_path / "first", "--no-progress"], capsys)
    assert r.code == 0, r.text
    assert json.loads((tmp_path / "first" / "results.json").read_text())["label_map"] == [0, 1]  # the paper's map
    assert_one_line_error(run(["reprogram", "--model", model_dir, "--task", tmp_path / "task.npz", "--label-map", "first",
                               "--remap-every", "5", "--out", tmp_path / "x", "--no-progress"], capsys), "remap_every")
    r = run(["reprogram", "--model", model_dir, "--task", tmp_path / "task.npz", "--remap-every", "1", "--steps", "3",
             "--out", tmp_path / "remapped", "--no-progress"], capsys)
    assert r.code == 0, r.text
    assert json.loads((tmp_path / "remapped" / "results.json").read_text())["config"]["remap_every"] == 1
    assert_one_line_error(run(["reprogram", "--model", "small-cnn", "--task", tmp_path / "task.npz", "--out",
                               tmp_path / "x"], capsys), "saved model folder")
    # the tiny CNN pools globally: a larger canvas (a wider frame for the program) is accepted, and
    # applying that program later takes the program's canvas without being told
    r = run(["reprogram", "--model", model_dir, "--task", tmp_path / "task.npz", "--canvas", "24", "--steps", "2",
             "--out", tmp_path / "wide", "--no-progress"], capsys)
    assert r.code == 0, r.text
    assert json.loads((tmp_path / "wide" / "results.json").read_text())["canvas"] == 24
    r = run(["reprogram", "--model", model_dir, "--task", tmp_path / "task.npz", "--apply", tmp_path / "wide",
             "--out", tmp_path / "wide-again", "--no-progress"], capsys)
    assert r.code == 0, r.text


def test_only_models_that_take_the_size_accept_another_canvas() -> None:
    from safetransfer.jobs.reprogram import accepts_input_size

    pooled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    flat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 14 * 14, 2)).train()
    assert accepts_input_size(pooled, 3, 16) and accepts_input_size(pooled, 3, 40)
    assert accepts_input_size(flat, 3, 16) and not accepts_input_size(flat, 3, 24)
    assert flat.training  # the check leaves the model's mode as it was


def test_label_map_chosen_by_the_data_is_the_best_assignment_by_hand() -> None:
    """A fixed 'model' whose output depends on the image's mean: the data-chosen map sends each new
    class to the model label its images score highest on, distinct labels, optimal overall."""
    from safetransfer.attacks.reprogramming import choose_label_map

    class ByBrightness(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor([0.0, 8.0, -8.0, 4.0]))  # 4 model labels

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x.mean(dim=(1, 2, 3), keepdim=False).unsqueeze(1) - 0.5
            return m * self.w

    prog = AdversarialProgram(3, 8, (8, 8), seed=0)  # the task image fills the canvas: no program pixels
    x, y = easy_task(200)
    x = torch.nn.functional.interpolate(x, size=(8, 8))
    label_map = choose_label_map(ByBrightness(), prog, x, y, new_classes=2, model_classes=4)
    # bright images (label 1) score highest on model label 1 (w = 8), dark ones (label 0) on label 2 (w = -8)
    assert label_map.tolist() == [2, 1]
    with pytest.raises(ConfigError, match="fewer than"):
        choose_label_map(ByBrightness(), prog, x, y, new_classes=5, model_classes=4)
    # two model labels per new label: bright images score on labels 1 (w = 8) and 3 (w = 4), dark on 2 and 0
    groups = choose_label_map(ByBrightness(), prog, x, y, new_classes=2, model_classes=4, per_class=2)
    assert [sorted(g) for g in groups.tolist()] == [[0, 2], [1, 3]]
    # predictions sum the group's probabilities: with w = (0, 8, -8, 4) a bright image's labels 1 and 3 win
    assert reprogrammed_predictions(ByBrightness(), prog, groups, x).eq(y).float().mean() == 1.0
    assert resolve_label_map(None, 2, 4, per_class=2).tolist() == [[0, 1], [2, 3]]
    with pytest.raises(ConfigError, match="x 2 model labels"):
        resolve_label_map([0, 1, 2], 2, 4, per_class=2)
    net = tiny_frozen_model()
    result = reprogram(net, *easy_task(), canvas=16, channels=3, model_classes=5,
                       config=ReprogramConfig(steps=30, lr=0.1, label_map="data"), test=easy_task(seed=2))
    assert len(set(result.label_map.tolist())) == 2 and result.test_accuracy > 0.8
    many = reprogram(net, *easy_task(), canvas=16, channels=3, model_classes=5,
                     config=ReprogramConfig(steps=30, lr=0.1, label_map="data", labels_per_class=2),
                     test=easy_task(seed=2))
    assert many.label_map.shape == (2, 2) and len(set(many.label_map.flatten().tolist())) == 4
    assert many.test_accuracy > 0.8
    with pytest.raises(ConfigError, match="label_map"):
        ReprogramConfig(label_map="best").validate()
    # the default number of model labels per new label: 3 where the model has room for 3k, else 1
    assert ReprogramConfig().per_class(10, 1000) == 3 and ReprogramConfig().per_class(10, 29) == 1
    assert ReprogramConfig(labels_per_class=2).per_class(10, 1000) == 2
    # a task's measured defaults over the general ones; a setting given wins, None is "not given"
    counting = ReprogramConfig.for_task("counting-squares")
    assert counting.per_class(10, 1000) > ReprogramConfig().per_class(10, 1000)
    assert counting.per_class(10, 10) == 1  # a 10-label model (the small CNN): one label per count
    assert ReprogramConfig.for_task("counting-squares", steps=5, lr=None).steps == 5
    assert ReprogramConfig.for_task("mnist", steps=None) == ReprogramConfig()
    # counting squares: more updates on smaller batches, no more images seen than by the defaults
    assert counting.steps > ReprogramConfig.steps and counting.batch_size < ReprogramConfig.batch_size
    assert counting.steps * counting.batch_size <= ReprogramConfig.steps * ReprogramConfig.batch_size
    # the command passes only the settings given, so a task's measured defaults are not overridden
    import inspect

    from safetransfer.cli.reprogram import reprogram_cmd

    options = inspect.signature(reprogram_cmd).parameters
    for name in ("steps", "batch_size", "lr", "weight_decay", "schedule", "task_scale", "labels_per_class",
                 "remap_every", "softmax_over"):
        assert options[name].default.default is None, name
    with pytest.raises(ConfigError, match="auto_labels"):
        ReprogramConfig(auto_labels=0).validate()
    six = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 6))
    default = reprogram(six, *easy_task(), canvas=16, channels=3, model_classes=6, config=ReprogramConfig(steps=1))
    assert default.label_map.shape == (2, 3)  # 6 labels = room for 3 per new label


def test_a_saved_program_keeps_its_scale_and_map(tmp_path) -> None:
    from safetransfer.jobs.reprogram import load_program, save_program

    prog = AdversarialProgram(3, 16, (6, 6), seed=3, scale=2)
    groups = torch.tensor([[4, 1], [0, 2]])
    save_program(tmp_path / "p", prog, groups, {"model": "tiny"})
    again, label_map, doc = load_program(tmp_path / "p")
    x = torch.rand(2, 1, 6, 6)
    assert again.scale == 2 and torch.equal(again(x), prog(x)) and torch.equal(label_map, groups)
    assert doc["task_size"] == [6, 6] and doc["model"] == "tiny"


def test_iterative_label_mapping_chooses_the_map_again_through_the_current_program(monkeypatch) -> None:
    """``remap_every``: the data-chosen map is chosen again every N steps (not at the last one)
    through the program as it stands then, and the last choice is the map tested and returned."""
    import safetransfer.attacks.reprogramming as rp

    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    choose = rp.fit_label_map

    def recording(model, program, *args, **kwargs):
        label_map = choose(model, program, *args, **kwargs)
        calls.append((program.weight.detach().clone(), label_map.clone()))
        return label_map

    monkeypatch.setattr(rp, "fit_label_map", recording)
    net = tiny_frozen_model()
    result = reprogram(net, *easy_task(), canvas=16, channels=3, model_classes=5,
                       config=ReprogramConfig(steps=25, lr=0.1, label_map="data", remap_every=10),
                       test=easy_task(seed=2))
    assert len(calls) == 3  # before training, after steps 10 and 20 (25 is the end: no choice there)
    assert not torch.equal(calls[0][0], calls[1][0])  # chosen through the program learned so far
    assert torch.equal(result.label_map, calls[-1][1]) and result.test_accuracy > 0.8
    # the choice is the one the (trained) program gives: fit_label_map on the program at that step
    again = AdversarialProgram(3, 16, (6, 6))
    with torch.no_grad():
        again.weight.copy_(calls[-1][0])
    assert torch.equal(choose(net, again, *easy_task(), 5, seed=20), calls[-1][1])
    calls.clear()
    reprogram(net, *easy_task(), canvas=16, channels=3, model_classes=5,
              config=ReprogramConfig(steps=25, lr=0.1, label_map="data"))
    assert len(calls) == 1  # the default: chosen once
    # counting squares re-chooses by default (measured better on both seeds tried); MNIST does not
    assert ReprogramConfig.for_task("counting-squares").remap_every > 0 and ReprogramConfig.for_task("mnist").remap_every == 0
    # the task's default re-mapping is off with a given map; asking for it with one is an error
    assert ReprogramConfig.for_task("counting-squares", label_map=None).validate().remap_every == 0
    with pytest.raises(ConfigError, match="needs label_map"):
        ReprogramConfig.for_task("counting-squares", label_map=[0, 1], remap_every=5).validate()
    for bad, match in (({"remap_every": -1}, "remap_every must"), ({"remap_every": 5, "label_map": None}, "needs label_map")):
        with pytest.raises(ConfigError, match=match):
            ReprogramConfig(**bad).validate()


def test_readout_loss_over_all_labels_or_only_the_mapped_ones_by_hand() -> None:
    """``softmax_over``: "all" is −log of the new label's summed probability among all model labels
    (the paper); "mapped" the cross-entropy over the new labels' scores alone (what prediction ranks)."""
    from safetransfer.attacks.reprogramming import readout_loss, readout_scores

    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, -1.0], [2.0, 0.0, 0.0, 1.0, 4.0]])
    label_map = torch.tensor([[1, 3], [0, 2]])  # new label 0 <- model labels 1 and 3; new label 1 <- 0 and 2
    y = torch.tensor([0, 1])
    e = logits.exp()
    scores = torch.stack([(e[:, 1] + e[:, 3]).log(), (e[:, 0] + e[:, 2]).log()], dim=1)
    assert torch.allclose(readout_scores(logits, label_map), scores)
    p_all = torch.stack([(e[0, 1] + e[0, 3]) / e[0].sum(), (e[1, 0] + e[1, 2]) / e[1].sum()])
    assert torch.allclose(readout_loss(logits, label_map, y, "all"), -p_all.log().mean())
    mapped = e[:, [1, 3, 0, 2]].sum(1)  # model label 4 is in no group: out of the "mapped" softmax
    p_mapped = torch.stack([(e[0, 1] + e[0, 3]) / mapped[0], (e[1, 0] + e[1, 2]) / mapped[1]])
    assert torch.allclose(readout_loss(logits, label_map, y, "mapped"), -p_mapped.log().mean())
    # an unmapped label's logit moves the paper's loss only
    louder = logits.clone()
    louder[:, 4] += 5.0
    assert readout_loss(louder, label_map, y, "all") > readout_loss(logits, label_map, y, "all") + 1.0
    assert torch.allclose(readout_loss(louder, label_map, y, "mapped"), readout_loss(logits, label_map, y, "mapped"))
    net = tiny_frozen_model()
    result = reprogram(net, *easy_task(), canvas=16, channels=3, model_classes=5,
                       config=ReprogramConfig(steps=60, lr=0.1, softmax_over="mapped"), test=easy_task(seed=2))
    assert result.test_accuracy > 0.8  # chance 0.5
    with pytest.raises(ConfigError, match="softmax_over"):
        ReprogramConfig(softmax_over="some").validate()

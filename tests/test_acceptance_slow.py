"""The foundation's accuracy targets with each zoo model's default settings (long: marker ``slow``).

Run with ``make test-slow``. Speed is measured by ``benchmarks/train_baselines.py``, not here.
"""

from __future__ import annotations

import os

import pytest
import torch

from safetransfer.assets import ASSETS
from safetransfer.jobs import train_job

pytestmark = [pytest.mark.slow, pytest.mark.assets]


@pytest.fixture(autouse=True)
def all_cores():
    """These are real trainings: use every core (conftest pins the fast suite to one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("model", "data", "needs", "target"),
    [
        ("small-cnn", "fashion-mnist", ("fashion-mnist",), 0.85),
        ("efficientnet-lite0", "fashion-mnist", ("fashion-mnist", "efficientnet-lite0-weights"), 0.88),
        ("minilm-l6", "rotten-tomatoes", ("minilm-l6", "rotten-tomatoes"), 0.78),
    ],
)
def test_default_fine_tuning_reaches_target(model, data, needs, target, tmp_path):
    missing = [n for n in needs if not ASSETS[n].installed()]
    if missing:
        pytest.skip(f"assets not installed: {missing}")
    result = train_job(model, data, tmp_path / "run", progress=False, plots=False)
    assert result.test.accuracy >= target, (model, result.test.accuracy)
    # the same run found again resumes at its end and gives the same figure
    again = train_job(model, data, tmp_path / "run", progress=False, plots=False)
    assert again.train.resumed_from == result.train.steps
    assert again.test.accuracy == result.test.accuracy


def test_quick_study_defects_are_inherited_and_remos_cuts_them(tmp_path):
    """The demo's study from an empty cache (about 5 min on 2 cores): the defects reach the
    fine-tuned student, and ReMoS cuts the backdoor's and the penultimate attack's DIR."""
    from safetransfer.study import load_config, run_study

    missing = [n for n in ("fashion-mnist", "efficientnet-lite0-weights") if not ASSETS[n].installed()]
    if missing:
        pytest.skip(f"assets not installed: {missing}")
    results = run_study(load_config(profile="quick"), tmp_path / "out", tmp_path / "cache", progress=False,
                        log=lambda line: None, profile="quick")
    task = results["tasks"]["fashion-mnist"]
    assert task["defects"]["backdoor"]["teacher_success"] > 0.8
    finetune, remos = task["methods"]["finetune"], task["methods"]["remos"]
    assert finetune["dir"]["backdoor"] > 0.2 and finetune["dir"]["penultimate"] > 0.2
    assert remos["rdir"]["backdoor"] < 0.4 and remos["rdir"]["penultimate"] < 0.7
    # At the demo's 200 steps ReMoS's student, which starts from a pruned body, is 2-6 points
    # behind finetune (rACC 0.978 with NCHW batches, 0.946 channels-last; 0.918 at 300 steps);
    # the acceptance's 0.97 is judged on the full profile's 800 steps
    # (benchmarks/results/study_vision_full.json: 0.966 on Fashion-MNIST, 1.002 on MNIST). Here: not broken.
    assert remos["racc"] > 0.9
    assert (tmp_path / "out" / "results.json").exists()

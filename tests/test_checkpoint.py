"""The shared training-state format: a round trip, and clear errors for what is not one of ours."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from safetransfer.checkpoint import load_training_state, save_training_state
from safetransfer.errors import CheckpointError
from safetransfer.files import atomic_torch_save


def _model_and_optimizer(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_round_trip_restores_weights_rng_and_extras(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer(0)
    path = tmp_path / "state.pt"
    rng = torch.get_rng_state()
    save_training_state(path, step=7, model=model, optimizer=opt, rng=rng, seconds=1.5, history=[0.3, 0.2],
                        fingerprint={"steps": 10, "sizes": (3, 2)}, divergence_step=4)
    expected = torch.rand(3)  # drawn after the saved RNG state
    other, other_opt = _model_and_optimizer(1)
    state = load_training_state(path, other, other_opt, {"steps": 10, "sizes": (3, 2)})
    assert (state.step, state.seconds, state.history, state.extra) == (7, 1.5, [0.3, 0.2], {"divergence_step": 4})
    assert torch.equal(other.weight, model.weight) and torch.equal(torch.rand(3), expected)


def test_other_settings_missing_entries_and_unreadable_settings_are_named(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer(0)
    path = tmp_path / "state.pt"
    save_training_state(path, step=1, model=model, optimizer=opt, rng=torch.get_rng_state(), seconds=0.0,
                        history=[], fingerprint={"steps": 10, "lr": 0.1})
    with pytest.raises(CheckpointError, match=r"other RIPPLe settings \(lr differ\)"):
        load_training_state(path, model, opt, {"steps": 10, "lr": 0.2}, what="RIPPLe")
    lacking = tmp_path / "lacking.pt"
    atomic_torch_save({"config": "{}"}, lacking)
    with pytest.raises(CheckpointError, match="lacks 'model'"):
        load_training_state(lacking, model, opt, {})
    garbled = tmp_path / "garbled.pt"
    atomic_torch_save({"config": "{not json"}, garbled)
    with pytest.raises(CheckpointError, match="unreadable settings entry"):
        load_training_state(garbled, model, opt, {})
    numeric = tmp_path / "numeric.pt"
    atomic_torch_save({"config": torch.zeros(2)}, numeric)
    with pytest.raises(CheckpointError, match="unreadable settings entry"):
        load_training_state(numeric, model, opt, {})

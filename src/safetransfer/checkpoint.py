"""Resumable training state: one format for every training loop of the project.

A checkpoint holds the model's and the optimiser's state, the torch RNG state, the step, the
seconds spent so far, the loss history and a fingerprint of the settings (a JSON string): a run
restarted with other settings is refused with the settings that differ named. Loops add their
own entries (the training hooks of :func:`safetransfer.train.train`, RIPPLe's divergence step).
Files are written atomically and read with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from safetransfer.errors import CheckpointError
from safetransfer.files import atomic_torch_save
from safetransfer.models.serialization import load_state_into, safe_torch_load


@dataclass
class TrainingState:
    """What a resumed run continues from (the model and optimiser are already restored)."""

    step: int
    seconds: float
    history: list
    extra: dict[str, Any]


def save_training_state(
    path: Path, *, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rng: torch.Tensor,
    seconds: float, history: list, fingerprint: dict[str, Any], **extra: Any,
) -> None:
    """Write the state of a run after ``step`` steps to ``path`` (atomically)."""
    atomic_torch_save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng,
                       "seconds": seconds, "history": history, "config": json.dumps(fingerprint, sort_keys=True),
                       **extra}, path)


def load_training_state(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, fingerprint: dict[str, Any], *,
    what: str = "training", advice: str = "start a fresh run in another output folder",
) -> TrainingState:
    """Restore ``model``, ``optimizer`` and the torch RNG from ``path``; the caller's ``fingerprint``
    must equal the saved one (else a :class:`CheckpointError` names the settings that differ)."""
    state = safe_torch_load(path)
    try:
        saved = json.loads(state["config"])
        fingerprint = json.loads(json.dumps(fingerprint))  # as saved: tuples become lists
        if saved != fingerprint:
            diff = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
            raise CheckpointError(f"The checkpoint {path} was made with other {what} settings "
                                  f"({', '.join(diff)} differ): {advice}.")
        load_state_into(model, state["model"], source=str(path))
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        core = {"step", "model", "optimizer", "rng", "seconds", "history", "config"}
        return TrainingState(int(state["step"]), float(state["seconds"]), list(state["history"]),
                             {k: v for k, v in state.items() if k not in core})
    except KeyError as err:
        raise CheckpointError(f"The checkpoint {path} lacks '{err.args[0]}': it is not a safetransfer "
                              f"{what} checkpoint.") from None
    except (TypeError, json.JSONDecodeError):
        raise CheckpointError(f"The checkpoint {path} has an unreadable settings entry: it is not a safetransfer "
                              f"{what} checkpoint.") from None

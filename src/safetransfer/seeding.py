"""Every seed safetransfer derives from a user's seed, in one place: a leaf (imports nothing of the package).

Each random choice takes its own seed, mixed from the user's ``seed`` and a salt that names the
choice, so two choices never share a stream and the same config gives the same numbers. The
formulas are fixed: changing one changes every cached result that depends on it.
"""

from __future__ import annotations

import zlib

SEED_MULTIPLIER = 1_000_003
SALT_STEP = 7_919

# The salts of derived_seed, one per random choice (a changed value changes every cached result that uses it):
SALT_REINIT = 1      # a transfer method's re-initialised body (retrain, delta_r, renofeation)
SALT_SLICE = 2       # the weights a slice resets (ReMoS, magprune)
SALT_PROFILE = 3     # the samples ReMoS profiles coverage on
SALT_BN = 4          # Renofeation's BatchNorm re-estimation samples
SALT_POISON = 11     # the samples a backdoor attacker poisons
SALT_DATA_POISON = 13  # the samples a data-poisoning attacker (BadNets, scan-data --plant) poisons
SALT_SURROGATE = 23  # the attacker's surrogate (word swap, Embedding Surgery's source)


def mixed_seed(seed: int, salt: int) -> int:
    """``seed`` mixed with an integer ``salt`` (unbounded; the data splits' limits use it as is)."""
    return seed * SEED_MULTIPLIER + SALT_STEP * salt


def derived_seed(seed: int, salt: int) -> int:
    """A seed for one random choice of a method (distinct per ``salt``, never the model-zoo's ``seed``)."""
    return mixed_seed(seed, salt) % (2**62)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle of the training set."""
    return seed * SEED_MULTIPLIER + epoch


def named_seed(seed: int, name: str) -> int:
    """A seed for one named object (a layer): ``seed`` mixed with the CRC-32 of ``name``."""
    return (int(seed) * SEED_MULTIPLIER + zlib.crc32(name.encode())) % (2**63)

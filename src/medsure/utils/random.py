"""Explicit randomness: every random function takes a seed or generator, never the global RNG."""

from __future__ import annotations

import numpy as np


def make_generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    """Return a numpy Generator from a seed (or pass a Generator through unchanged)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def torch_generator(seed: int):
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    import torch

    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen

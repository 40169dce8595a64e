"""Derive independent, reproducible random generators from a run seed and counters."""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """Mix integer keys (for example run seed, epoch, step) into one 63-bit seed.

    ``numpy.random.SeedSequence`` hashes the whole tuple, so neighbouring keys
    such as ``(0, 1)`` and ``(1, 0)`` give unrelated streams.
    """
    if any(int(k) < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative integers, got {keys}")
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def derive_generator(*keys: int) -> torch.Generator:
    """CPU ``torch.Generator`` seeded from ``derive_seed(*keys)``."""
    generator = torch.Generator()
    generator.manual_seed(derive_seed(*keys))
    return generator

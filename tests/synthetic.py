"""Small synthetic interaction data with real sequential signal, shared by the tests."""
from __future__ import annotations

import numpy as np

from compress.data import Interactions, SequenceDataset, build_dataset


def walking_dataset(n_users: int = 200, n_items: int = 40, min_len: int = 8, max_len: int = 25,
                    jitter: int = 2, seed: int = 0) -> SequenceDataset:
    """Users walking upward through ``n_items`` items (each next item is 0..jitter-1 steps ahead)."""
    rng = np.random.default_rng(seed)
    users, items, order = [], [], []
    for u in range(n_users):
        start = int(rng.integers(0, n_items))
        for j in range(int(rng.integers(min_len, max_len + 1))):
            users.append(f"u{u}")
            items.append(f"i{(start + j + int(rng.integers(0, jitter))) % n_items}")
            order.append(float(j))
    return build_dataset(Interactions(np.array(users), np.array(items), np.array(order), True, "synthetic"))

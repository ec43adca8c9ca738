"""The training loop the workflow's models share (DeepMET, the ParticleNet taggers).

Adam with a cosine learning-rate schedule over shuffled mini-batches, and the
loss on a held-out fraction after every epoch; the model supplies only its
loss for a batch of sample indices.  Shuffling draws from ``seed``, so a
training run repeats exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Called after each epoch with (epoch, training loss, validation loss).
Progress = Callable[[int, float, float], None]


@dataclass(slots=True)
class TrainResult:
    epochs: int
    train_loss: list[float]
    val_loss: list[float]
    seconds: float


def fit(net: Any, loss_of: Callable[[np.ndarray], Any], n: int, *, epochs: int,
        batch_size: int, lr: float, val_fraction: float = 0.2, seed: int = 0,
        clip_norm: float | None = None, val_batch: int = 64,
        progress: Progress | None = None) -> TrainResult:  # fmt: skip
    """Train ``net`` on samples ``0..n-1``; ``loss_of(indices)`` is the mean loss of a batch."""
    import torch

    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(n * val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    history: tuple[list[float], list[float]] = ([], [])
    start = time.perf_counter()
    rng = np.random.default_rng(seed + 1)
    for epoch in range(epochs):
        net.train()
        total = 0.0
        perm = rng.permutation(train_idx)
        for b in range(0, len(perm), batch_size):
            batch = perm[b:b + batch_size]
            opt.zero_grad()
            loss = loss_of(batch)
            loss.backward()
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip_norm)
            opt.step()
            total += loss.item() * len(batch)
        sched.step()
        net.eval()
        with torch.no_grad():
            val = sum(loss_of(val_idx[b:b + val_batch]).item() * len(val_idx[b:b + val_batch])
                      for b in range(0, n_val, val_batch)) / n_val  # fmt: skip
        history[0].append(total / len(train_idx))
        history[1].append(val)
        if progress is not None:
            progress(epoch + 1, history[0][-1], val)
    net.eval()
    return TrainResult(epochs, *history, time.perf_counter() - start)

"""The learning-rate factor of robust fine-tuning: linear warm-up, then cosine decay."""

from __future__ import annotations

import math

__all__ = ["warmup_cosine"]


def warmup_cosine(epoch: int, *, epochs: int, warmup_epochs: int) -> float:
    """Learning-rate factor of epoch ``epoch`` (0-based): linear warm-up, then cosine decay.

    ``(epoch + 1) / warmup_epochs`` during warm-up, then ``½(1 + cos(π·p))`` with ``p`` the
    progress through the remaining ``epochs - warmup_epochs`` epochs.

    Example:
        >>> [round(warmup_cosine(e, epochs=4, warmup_epochs=2), 3) for e in range(4)]
        [0.5, 1.0, 1.0, 0.5]
    """
    if epoch < warmup_epochs:
        return (epoch + 1) / warmup_epochs
    progress = (epoch - warmup_epochs) / max(1, epochs - warmup_epochs)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

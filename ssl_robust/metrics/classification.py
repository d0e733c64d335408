"""Top-1 accuracy."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks
from .base import Metric

__all__ = ["Accuracy"]


class Accuracy(Metric):
    """Top-1 accuracy over every sample seen since the last ``reset``.

    ``update(pred, target)`` takes logits (B, C) or predicted labels (B,) and the true labels
    (B,). ``compute()`` returns a float in [0, 1] (NaN before any update).

    Example:
        >>> import torch
        >>> acc = Accuracy()
        >>> acc.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        >>> acc.update(torch.tensor([1]), torch.tensor([1]))
        >>> round(acc.compute(), 4)
        0.6667
    """

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", torch.zeros((), dtype=torch.long))
        self.add_state("total", torch.zeros((), dtype=torch.long))

    def update(self, pred: Tensor, target: Tensor) -> None:
        if not isinstance(pred, Tensor) or pred.ndim not in (1, 2):
            raise _checks.SSLRobustValueError(
                "pred must be logits (B, C) or labels (B,); got "
                + (str(tuple(pred.shape)) if isinstance(pred, Tensor) else type(pred).__name__)
            )
        num_classes = pred.shape[1] if pred.ndim == 2 else None
        target = _checks.check_labels(
            target,
            batch=pred.shape[0],
            num_classes=num_classes,
            name="target",
            device=pred.device,
        )
        labels = pred.argmax(1) if pred.ndim == 2 else pred
        if labels.is_floating_point():
            raise _checks.SSLRobustTypeError(
                f"pred of shape (B,) must hold integer labels; got dtype {pred.dtype}"
            )
        self._to(pred.device)
        self._state["correct"] += (labels == target).sum()
        self._state["total"] += target.numel()

    def compute(self) -> float:
        state = self.synced_state()
        total = int(state["total"])
        return float("nan") if total == 0 else int(state["correct"]) / total

"""Top-1 accuracy."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks
from .base import Metric

__all__ = ["Accuracy"]


class Accuracy(Metric[Tensor]):
    """Top-1 accuracy over every sample seen since the last ``reset``.

    ``update(pred, target)`` takes logits (B, C) or predicted labels (B,) and the true labels
    (B,). ``compute()`` returns a 0-d float64 tensor in [0, 1] (NaN before any update);
    ``acc(pred, target)`` returns the accuracy of that batch and accumulates it.

    Args:
        sync_on_compute: sum over ``torch.distributed`` ranks in ``compute()`` (see
            :class:`~ssl_robust.metrics.Metric`); ``False`` computes locally.

    Example:
        >>> import torch
        >>> acc = Accuracy()
        >>> acc(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))  # this batch
        tensor(0.5000, dtype=torch.float64)
        >>> acc.update(torch.tensor([1]), torch.tensor([1]))
        >>> acc.compute()  # both batches
        tensor(0.6667, dtype=torch.float64)
    """

    higher_is_better = True

    def __init__(self, *, sync_on_compute: bool = True) -> None:
        super().__init__(sync_on_compute=sync_on_compute)
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
        self.accumulate("correct", (labels == target).sum())
        self.accumulate("total", torch.tensor(target.numel(), device=labels.device))

    def _compute(self, state: dict[str, Tensor]) -> Tensor:
        return state["correct"].double() / state["total"].double()

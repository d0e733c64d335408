"""Mean intersection over union from a dataset-wide confusion matrix."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks
from .base import Metric

__all__ = ["MeanIoU"]


class MeanIoU(Metric[Tensor]):
    r"""Mean IoU over classes, from one confusion matrix accumulated over the whole dataset.

    :math:`\mathrm{IoU}_c = \frac{TP_c}{TP_c + FP_c + FN_c}`; classes whose union
    :math:`TP_c + FP_c + FN_c` is empty (never predicted, never present) are skipped in the
    mean. Pixels whose target is ``ignore_index`` count nowhere. Under an initialized
    ``torch.distributed`` group, ``compute()`` sums the confusion matrix over all ranks.

    ``update(pred, target)`` takes logits (B, C, H, W) or predicted labels (B, H, W) and the
    true masks (B, H, W). ``compute()`` returns the mIoU as a 0-d float64 tensor in [0, 1]
    (NaN when no class has a non-empty union); :meth:`per_class` returns the (C,) IoUs (NaN
    when skipped); ``miou(pred, target)`` returns the mIoU of that batch and accumulates it.

    Args:
        num_classes: number of classes C (>= 1).
        ignore_index: label of pixels to ignore (the same as in training and SegPGD).
        sync_on_compute: sum over ``torch.distributed`` ranks in ``compute()`` (see
            :class:`~ssl_robust.metrics.Metric`); ``False`` computes locally.

    Raises:
        SSLRobustValueError: mismatched shapes, labels out of range that are not
            ``ignore_index``, logits with a different number of classes.
        SSLRobustTypeError: float masks.

    Example:
        >>> import torch
        >>> miou = MeanIoU(num_classes=2)
        >>> miou.update(torch.tensor([[[0, 1], [1, 1]]]), torch.tensor([[[0, 1], [0, 255]]]))
        >>> miou.compute()  # class 0: 1/2, class 1: 1/2
        tensor(0.5000, dtype=torch.float64)
    """

    higher_is_better = True

    def __init__(
        self, num_classes: int, ignore_index: int = 255, *, sync_on_compute: bool = True
    ) -> None:
        super().__init__(sync_on_compute=sync_on_compute)
        self.num_classes = _checks.check_int("num_classes", num_classes, minimum=1)
        self.ignore_index = _checks.check_ignore_index(ignore_index)
        self.add_state("confusion", torch.zeros(num_classes, num_classes, dtype=torch.long))

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Accumulate a batch: pred logits (B, C, H, W) or labels (B, H, W), target (B, H, W)."""
        c = self.num_classes
        if not isinstance(pred, Tensor) or pred.ndim not in (3, 4):
            raise _checks.SSLRobustValueError(
                f"pred must be logits (B, C, H, W) or labels (B, H, W); got {_checks._shape(pred)}"
            )
        if pred.ndim == 4:
            if pred.shape[1] != c:
                raise _checks.SSLRobustValueError(
                    f"pred logits must have {c} channels (num_classes); got {tuple(pred.shape)}"
                )
            labels = pred.argmax(1)
        else:
            if pred.is_floating_point():
                raise _checks.SSLRobustTypeError(
                    f"pred of shape (B, H, W) must hold integer labels; got dtype {pred.dtype}"
                )
            labels = pred.long()
        target = _checks.check_masks(
            target,
            batch=labels.shape[0],
            size=(int(labels.shape[1]), int(labels.shape[2])),
            name="target",
            device=labels.device,
        )
        _checks.check_mask_range(target, c, ignore_index=self.ignore_index, name="target")
        _checks.check_mask_range(labels, c, ignore_index=None, name="pred")
        valid = target != self.ignore_index
        idx = target[valid] * c + labels[valid]
        self.accumulate("confusion", torch.bincount(idx, minlength=c * c).view(c, c))

    def per_class(self) -> Tensor:
        """(C,) IoU per class (rows of the confusion matrix are targets), NaN when skipped.

        Synced like ``compute()``.
        """
        return _iou_per_class(self.synced_state()["confusion"])

    def _compute(self, state: dict[str, Tensor]) -> Tensor:
        iou = _iou_per_class(state["confusion"])
        keep = ~iou.isnan()
        return iou[keep].mean() if bool(keep.any()) else iou.new_tensor(float("nan"))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, ignore_index={self.ignore_index}"


def _iou_per_class(confusion: Tensor) -> Tensor:
    conf = confusion.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))

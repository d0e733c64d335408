"""Classification losses of AutoAttack: the difference of logits ratio (DLR), plain and targeted.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, §4. Both are invariant to shifting and rescaling the logits,
so a model cannot hide behind large logits; both return one value per sample, shape (B,).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks

__all__ = ["dlr_loss", "logit_margin", "targeted_dlr_loss"]

_DLR_EPS = 1e-12


def _upcast(t: Tensor) -> Tensor:
    return t.float() if t.dtype.itemsize < 4 else t


def _logit_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """Unchecked: max_{i != y} z_i - z_y per sample (> 0 exactly when misclassified)."""
    z = _upcast(logits)
    z_y = z.gather(1, labels.unsqueeze(1)).squeeze(1)
    others = z.scatter(1, labels.unsqueeze(1), -torch.inf)
    return others.amax(1) - z_y


def _dlr(logits: Tensor, labels: Tensor) -> Tensor:
    """Unchecked DLR loss on (B, C) logits, C >= 3."""
    z = _upcast(logits)
    top = z.topk(3, dim=1).values
    return _logit_margin(z, labels) / (top[:, 0] - top[:, 2] + _DLR_EPS)


def _targeted_dlr(logits: Tensor, labels: Tensor, target_labels: Tensor) -> Tensor:
    """Unchecked targeted DLR loss on (B, C) logits, C >= 4."""
    z = _upcast(logits)
    top = z.topk(4, dim=1).values
    z_y = z.gather(1, labels.unsqueeze(1)).squeeze(1)
    z_t = z.gather(1, target_labels.unsqueeze(1)).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_EPS)


def _check(logits: object, labels: object, min_classes: int, what: str) -> tuple[Tensor, Tensor]:
    logits = _checks.check_logits(logits, dense=False)
    if logits.shape[1] < min_classes:
        raise _checks.SSLRobustValueError(
            f"{what} needs logits of at least {min_classes} classes (it uses the "
            f"{min_classes} largest); got {logits.shape[1]}"
        )
    labels = _checks.check_labels(
        labels, batch=logits.shape[0], num_classes=logits.shape[1], device=logits.device
    )
    return logits, labels


def logit_margin(logits: Tensor, labels: Tensor) -> Tensor:
    r"""The classification margin :math:`\max_{i \ne y} z_i - z_y` per sample.

    Positive exactly when the sample is misclassified (up to ties): the per-sample damage that
    :class:`~ssl_robust.attacks.Ensemble` compares across classification attacks.

    Example:
        >>> import torch
        >>> logit_margin(torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([0]))
        tensor([-2.])
    """
    logits, labels = _check(logits, labels, 2, "logit_margin")
    return _logit_margin(logits, labels)


def dlr_loss(logits: Tensor, labels: Tensor) -> Tensor:
    r"""Difference of logits ratio (AutoAttack's DLR loss), to maximize.

    .. math:: \mathrm{DLR}(z, y) = -\frac{z_y - \max_{i \ne y} z_i}{z_{\pi_1} - z_{\pi_3}
        + 10^{-12}}

    with :math:`z_{\pi_1} \ge z_{\pi_2} \ge \dots` the sorted logits.

    Args:
        logits: (B, C) logits, C >= 3.
        labels: (B,) int64 true labels.

    Returns:
        (B,) losses; positive exactly when the sample is misclassified.

    Example:
        >>> import torch
        >>> dlr_loss(torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([0]))
        tensor([-0.6667])
    """
    logits, labels = _check(logits, labels, 3, "dlr_loss")
    return _dlr(logits, labels)


def targeted_dlr_loss(logits: Tensor, labels: Tensor, target_labels: Tensor) -> Tensor:
    r"""Targeted DLR loss (AutoAttack's APGD-T), to maximize.

    .. math:: \mathrm{DLR}_t(z, y, t) = -\frac{z_y - z_t}{z_{\pi_1}
        - \tfrac12(z_{\pi_3} + z_{\pi_4}) + 10^{-12}}

    Args:
        logits: (B, C) logits, C >= 4.
        labels: (B,) int64 true labels.
        target_labels: (B,) int64 target classes.

    Returns:
        (B,) losses.

    Example:
        >>> import torch
        >>> z = torch.tensor([[4.0, 2.0, 1.0, 0.0]])
        >>> targeted_dlr_loss(z, torch.tensor([0]), torch.tensor([1]))
        tensor([-0.5714])
    """
    logits, labels = _check(logits, labels, 4, "targeted_dlr_loss")
    target_labels = _checks.check_labels(
        target_labels,
        batch=logits.shape[0],
        num_classes=logits.shape[1],
        name="target_labels",
        device=logits.device,
    )
    return _targeted_dlr(logits, labels, target_labels)

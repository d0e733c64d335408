"""PGD on a classifier's cross-entropy (Madry et al., 2018)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import Unpack

from .. import _checks
from ..encoders.base import EncoderOutput
from .base import Attack, AttackOptions

__all__ = ["PGD"]


class PGD(Attack):
    r"""Projected gradient descent on the cross-entropy of a classifier.

    Untargeted: maximizes :math:`\mathrm{CE}(f(x+\delta), y)`; success = misclassified.
    Targeted (``targeted=True``): minimizes :math:`\mathrm{CE}(f(x+\delta), y_{target})`;
    success = predicts the target. Paper setting (§3.2): eps 8/255, 20 steps of 2/255, uniform
    random start, which are the defaults.

    Args:
        model: maps images in [0, 1] (B, C, H, W) to logits (B, num_classes), e.g.
            ``TaskModel(encoder, LinearClassifier(...))``.
        targeted: attack towards the given labels instead of away from them.
        **kwargs: the options of :class:`~ssl_robust.attacks.Attack` (eps, step_size, steps,
            norm, random_start, early_stop, select, generator, eval_mode).

    Shape:
        - images: (B, C, H, W) in [0, 1]; target: (B,) int64 labels (required).
        - output: adversarial images (B, C, H, W), same dtype and device.

    Raises:
        ValueError: labels of the wrong length or out of range, images outside [0, 1], eps on
            the 0–255 scale.
        TypeError: missing or non-integer labels, unknown options.

    Example:
        >>> import torch
        >>> from ssl_robust.attacks import PGD
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
        >>> images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
        >>> attack = PGD(model, eps=8 / 255, steps=10, generator=torch.Generator().manual_seed(0))
        >>> adv = attack(images, labels)
        >>> bool((adv - images).abs().max() <= 8 / 255 + 1e-6)
        True
    """

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Any],
        *,
        targeted: bool = False,
        **kwargs: Unpack[AttackOptions],
    ) -> None:
        super().__init__(model, **kwargs)
        self.targeted = bool(targeted)

    def prepare_target(self, images: Tensor, target: Any) -> Tensor:
        if target is None:
            raise _checks.SSLRobustTypeError(
                "PGD needs labels: call attack(images, labels) with labels of shape "
                f"({images.shape[0]},)"
                + (" (the target classes, since targeted=True)" if self.targeted else "")
            )
        return _checks.check_labels(target, batch=images.shape[0], device=images.device)

    def check_output(self, output: Any, target: Tensor) -> None:
        if isinstance(output, EncoderOutput):
            raise _checks.SSLRobustTypeError(
                "PGD needs a model that returns logits (B, num_classes); got an EncoderOutput "
                "— attack TaskModel(encoder, LinearClassifier(...)), or use EmbedAttack for "
                "the encoder itself"
            )
        if not isinstance(output, Tensor) or output.ndim != 2:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise _checks.SSLRobustValueError(
                f"PGD needs a model that returns logits of shape (B, num_classes); got {shape}"
            )
        _checks.check_label_range(target, output.shape[1])

    def loss(self, output: Tensor, target: Tensor, step: int) -> Tensor:
        ce = F.cross_entropy(output, target, reduction="none")
        return -ce if self.targeted else ce

    def success(self, output: Tensor, target: Tensor) -> Tensor:
        pred = output.argmax(dim=1)
        return pred == target if self.targeted else pred != target

    def extra_repr(self) -> str:
        return super().extra_repr() + f", targeted={self.targeted}"

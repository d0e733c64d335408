"""SegPGD: PGD on the SegPGD-weighted pixel cross-entropy (Gu et al., 2022; paper §3.2), or on
one of SEA's segmentation losses (Croce, Singh & Hein, 2024)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

from torch import Tensor, nn
from typing_extensions import Unpack

from .. import _checks
from ..encoders.base import EncoderOutput
from ..losses.segmentation import (
    SEGMENTATION_LOSSES,
    _correct,
    _pixel_loss,
    _reduce,
    _segpgd_loss,
)
from .base import Attack, AttackOptions

__all__ = ["SegPGD"]


class SegPGD(Attack):
    r"""SegPGD on a segmentation model (Gu et al., 2022; paper §3.2, eq. 1).

    Maximizes, at step t of T,
    :math:`\frac{1}{N}\big((1-\lambda_t)\sum_{P^T}\mathrm{CE} + \lambda_t\sum_{P^F}\mathrm{CE}\big)`
    with :math:`\lambda_t = t / (2T)` (see :func:`~ssl_robust.losses.segpgd_loss`): first it
    pushes the correctly classified pixels over, later it weighs both sets. Cross-entropy on
    the logits; ``ignore_index`` pixels count nowhere; "correct" means the label's logit is the
    largest (argmax == label up to exact ties). An image succeeds when the share of its
    valid pixels still classified correctly falls below ``success_threshold`` (images without
    any valid pixel never succeed). ``select="best"`` keeps the first successful iterate, else
    the one with the lowest share of correct pixels (the weighted loss is not comparable
    across steps). Defaults: eps 8/255, 20 steps of 2/255, uniform random start.

    ``loss`` selects the objective: ``"segpgd"`` (above, the paper's) or one of SEA's losses
    (:func:`~ssl_robust.losses.sea_loss`: ``"ce"``, ``"masked_ce"``, ``"js"``,
    ``"masked_spherical"``, ``"balanced_ce"``), each with either ``schedule``. Success, the
    best-iterate score and the per-image damage (:meth:`damage`: 1 − pixel accuracy on the
    valid pixels; broken at pixel accuracy 0) do not depend on the loss.

    Args:
        model: maps images (B, C, H, W) in [0, 1] to logits (B, K, H, W) at the image
            resolution (``TaskModel(encoder, LinearSegmenter(...))`` or a
            :class:`~ssl_robust.adaptors.SlidingWindow`).
        ignore_index: mask label of pixels to ignore (same as in training and MeanIoU).
        normalize: ``"valid"`` (divide by the number of valid pixels) or ``"hw"`` (by H·W).
        success_threshold: per-image success when the correct share is below this, in [0, 1].
        loss: the objective, one of ``"segpgd"``, ``"ce"``, ``"masked_ce"``, ``"js"``,
            ``"masked_spherical"``, ``"balanced_ce"``.
        **kwargs: the options of :class:`~ssl_robust.attacks.Attack`.

    Shape:
        - images: (B, C, H, W) in [0, 1]; target: masks (B, H, W) int64 (required).

    Raises:
        SSLRobustTypeError: missing or float masks, unknown options.
        SSLRobustValueError: mask shape not matching the images, labels out of range that are
            not ``ignore_index``, a model not returning (B, K, H, W) logits.

    Example:
        >>> import torch
        >>> from ssl_robust.attacks import SegPGD
        >>> model = torch.nn.Conv2d(3, 4, kernel_size=3, padding=1)
        >>> x, masks = torch.rand(2, 3, 8, 8), torch.randint(0, 4, (2, 8, 8))
        >>> res = SegPGD(model, steps=5, generator=torch.Generator().manual_seed(0)).run(x, masks)
        >>> bool((res.adversarial - x).abs().max() <= 8 / 255 + 1e-6), res.success.shape
        (True, torch.Size([2]))
    """

    task: ClassVar[str | None] = "segmentation"

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Any],
        *,
        ignore_index: int = 255,
        normalize: Literal["valid", "hw"] = "valid",
        success_threshold: float = 0.01,
        loss: Literal[
            "segpgd", "ce", "masked_ce", "js", "masked_spherical", "balanced_ce"
        ] = "segpgd",
        **kwargs: Unpack[AttackOptions],
    ) -> None:
        super().__init__(model, **kwargs)
        self.ignore_index = _checks.check_ignore_index(ignore_index)
        self.normalize = _checks.check_choice("normalize", normalize, ("valid", "hw"))
        thr = _checks.check_positive_float("success_threshold", success_threshold, allow_zero=True)
        if thr > 1:
            raise _checks.SSLRobustValueError(f"success_threshold must be in [0, 1]; got {thr}")
        self.success_threshold = thr
        self.loss_name = _checks.check_choice("loss", loss, SEGMENTATION_LOSSES)

    def prepare_target(self, images: Tensor, target: Any) -> tuple[Tensor, Tensor, Tensor]:
        if target is None:
            raise _checks.SSLRobustTypeError(
                "SegPGD needs masks: call attack(images, masks) with masks of shape "
                f"({images.shape[0]}, {images.shape[2]}, {images.shape[3]})"
            )
        masks = _checks.check_masks(
            target,
            batch=images.shape[0],
            size=(images.shape[2], images.shape[3]),
            device=images.device,
        )
        valid = masks != self.ignore_index
        return masks, valid, masks.masked_fill(~valid, 0)

    def check_output(self, output: Any, target: tuple[Tensor, Tensor, Tensor]) -> None:
        masks = target[0]
        if (
            isinstance(output, EncoderOutput)
            or not isinstance(output, Tensor)
            or (output.ndim != 4 or output.shape[-2:] != masks.shape[-2:])
        ):
            raise _checks.SSLRobustValueError(
                f"SegPGD needs a model that returns logits (B, K, {masks.shape[-2]}, "
                f"{masks.shape[-1]}) at the mask resolution; got {_checks._shape(output)} — "
                "use TaskModel(encoder, LinearSegmenter(...))"
            )
        _checks.check_mask_range(masks, output.shape[1], ignore_index=self.ignore_index)

    def _loss_and_share(
        self, output: Tensor, target: tuple[Tensor, Tensor, Tensor], step: int
    ) -> tuple[Tensor, Tensor]:
        """The loss and the share of correct valid pixels per image, from one pass."""
        masks, valid, safe = target
        if self.loss_name == "segpgd":
            return _segpgd_loss(
                output,
                masks,
                step=step,
                steps=self.steps,
                ignore_index=self.ignore_index,
                normalize=self.normalize,
                valid=valid,
                safe_target=safe,
            )
        per_pixel = _pixel_loss(self.loss_name, output, safe, valid)
        return _reduce(per_pixel, valid, self.normalize), self.correct_share(output, target)

    def evaluate(
        self, output: Tensor, target: tuple[Tensor, Tensor, Tensor], step: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        loss, share = self._loss_and_share(output, target, step)
        has_valid = target[1].flatten(1).any(1)
        return loss, (share < self.success_threshold) & has_valid, -share

    def loss(self, output: Tensor, target: tuple[Tensor, Tensor, Tensor], step: int) -> Tensor:
        return self._loss_and_share(output, target, step)[0]

    def correct_share(self, output: Tensor, target: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """(B,) share of the valid pixels classified correctly (0 when none is valid)."""
        _, valid, safe = target
        correct = _correct(output, safe, valid)
        return correct.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)

    def success(self, output: Tensor, target: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        has_valid = target[1].flatten(1).any(1)
        return (self.correct_share(output, target) < self.success_threshold) & has_valid

    def score(self, output: Tensor, target: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        return -self.correct_share(output, target)

    def damage(
        self, output: Tensor, target: tuple[Tensor, Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """``(1 − pixel accuracy, pixel accuracy == 0)`` per image, on the valid pixels."""
        share = self.correct_share(output, target)
        return 1 - share, share == 0

    def extra_repr(self) -> str:
        return super().extra_repr() + (
            f", ignore_index={self.ignore_index}, normalize={self.normalize!r}, "
            f"success_threshold={self.success_threshold:.4g}, loss={self.loss_name!r}"
        )

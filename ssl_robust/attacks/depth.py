"""DepthPGD: PGD on the depth loss of a depth model (paper §3.2, App. C.1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from typing_extensions import Unpack

from .. import _checks
from ..encoders.base import EncoderOutput
from ..losses.depth import _depth_loss, _l1_log, _rmse
from .base import Attack, AttackOptions

__all__ = ["DepthPGD"]


class DepthPGD(Attack):
    r"""PGD maximizing the depth loss :math:`L_{\text{pixel}} + \tfrac12 L_{\text{grad}}`.

    The loss is :func:`~ssl_robust.losses.depth_loss` (scale-invariant log loss with α=1,
    ρ=0.85, plus half the 4-scale gradient matching loss), per image over the valid pixels
    ``min_depth < target <= max_depth`` — the same pixels :class:`~ssl_robust.metrics.
    DepthMetrics` scores. No success criterion: ``select="best"`` keeps the highest-loss
    iterate. Defaults: eps 8/255, 20 steps of 2/255, uniform random start.

    ``loss="l1_log"`` maximizes :func:`~ssl_robust.losses.l1_log_loss` (mean absolute log-depth
    error over the valid pixels) instead; it is not scale-invariant, so it also pays to shift
    the whole map. The per-image damage (:meth:`damage`, for
    :class:`~ssl_robust.attacks.Ensemble`) is the RMSE over the valid pixels, whatever the loss.

    Args:
        model: maps images (B, C, H, W) in [0, 1] to depth (B, 1, H, W) or (B, H, W) at the
            image resolution, e.g. ``TaskModel(encoder, LinearDepther(...))``.
        min_depth: valid ground truth is above this (metres, >= 0; 0 gives ``target > 0``).
        max_depth: valid ground truth is at most this (metres).
        loss: ``"silog_grad"`` (the paper's SI-log + ½·gradient matching) or ``"l1_log"``.
        **kwargs: the options of :class:`~ssl_robust.attacks.Attack`.

    Shape:
        - images: (B, C, H, W) in [0, 1]; target: depth (B, H, W) or (B, 1, H, W) (required).

    Raises:
        SSLRobustValueError: depth shape not matching the images, negative depth,
            min_depth >= max_depth, a model not returning a depth map.
        SSLRobustTypeError: missing or integer depth, unknown options.

    Example:
        >>> import torch
        >>> from ssl_robust.attacks import DepthPGD
        >>> net = torch.nn.Conv2d(3, 1, kernel_size=3, padding=1)
        >>> model = lambda x: torch.nn.functional.softplus(net(x)) + 0.1
        >>> x, depth = torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8) + 0.5
        >>> res = DepthPGD(model, steps=5, generator=torch.Generator().manual_seed(0)).run(x, depth)
        >>> res.loss.shape, res.success is None
        (torch.Size([2]), True)
    """

    task: ClassVar[str | None] = "depth"

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Any],
        *,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        loss: Literal["silog_grad", "l1_log"] = "silog_grad",
        **kwargs: Unpack[AttackOptions],
    ) -> None:
        super().__init__(model, **kwargs)
        self.min_depth, self.max_depth = _checks.check_depth_range(min_depth, max_depth)
        self.loss_name = _checks.check_choice("loss", loss, ("silog_grad", "l1_log"))

    def prepare_target(self, images: Tensor, target: Any) -> tuple[Tensor, Tensor]:
        if target is None:
            raise _checks.SSLRobustTypeError(
                "DepthPGD needs ground-truth depth: call attack(images, depth) with depth of "
                f"shape ({images.shape[0]}, {images.shape[2]}, {images.shape[3]})"
            )
        depth = _checks.check_depth_map(
            target, batch=images.shape[0], size=(images.shape[2], images.shape[3])
        ).to(images.device)
        mask = (depth > self.min_depth) & (depth <= self.max_depth)
        return depth, mask

    def check_output(self, output: Any, target: tuple[Tensor, Tensor]) -> None:
        size = tuple(target[0].shape[-2:])
        ok = (
            isinstance(output, Tensor)
            and not isinstance(output, EncoderOutput)
            and (
                (output.ndim == 3 or (output.ndim == 4 and output.shape[1] == 1))
                and tuple(output.shape[-2:]) == size
            )
        )
        if not ok:
            raise _checks.SSLRobustValueError(
                f"DepthPGD needs a model that returns depth (B, 1, {size[0]}, {size[1]}) or "
                f"(B, {size[0]}, {size[1]}); got {_checks._shape(output)} — use "
                "TaskModel(encoder, LinearDepther(...))"
            )

    def loss(self, output: Tensor, target: tuple[Tensor, Tensor], step: int) -> Tensor:
        pred = output[:, 0] if output.ndim == 4 else output
        if self.loss_name == "l1_log":
            return _l1_log(pred, target[0], target[1])
        return _depth_loss(pred, target[0], target[1])

    def damage(self, output: Tensor, target: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """``(RMSE over the valid pixels, never broken)`` per image."""
        pred = output[:, 0] if output.ndim == 4 else output
        rmse = _rmse(pred, target[0], target[1])
        return rmse, torch.zeros_like(rmse, dtype=torch.bool)

    def extra_repr(self) -> str:
        return super().extra_repr() + (
            f", min_depth={self.min_depth:.4g}, max_depth={self.max_depth:.4g}, "
            f"loss={self.loss_name!r}"
        )

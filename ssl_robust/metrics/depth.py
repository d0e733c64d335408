"""Depth metrics: per-image RMSE, AbsRel and δ<1.25, averaged over images."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .. import _checks
from .base import Metric

__all__ = ["DepthMetrics"]


class DepthMetrics(Metric[dict[str, Tensor]]):
    r"""RMSE, AbsRel and δ1 of depth predictions, per image over its valid pixels.

    Valid pixels are those with ``min_depth < target <= max_depth``; the mask depends on the
    target only, so clean and attacked predictions of the same images are scored on the same
    pixels. Per image: :math:`\mathrm{RMSE} = \sqrt{\mathrm{mean}(\hat d - d)^2}`,
    :math:`\mathrm{AbsRel} = \mathrm{mean}(|\hat d - d| / d)`,
    :math:`\delta_1 = \mathrm{mean}(\max(\hat d/d, d/\hat d) < 1.25)`; ``compute()`` averages
    each over the images seen (images without a valid pixel are skipped) and, under an
    initialized ``torch.distributed`` group, over all ranks. It returns a dict of 0-d float64
    tensors ``{"rmse", "abs_rel", "delta1"}``; ``m(pred, target)`` returns the same for that
    batch alone and accumulates it. Directions differ per key, so ``higher_is_better`` is
    ``None`` and :attr:`higher_is_better_by_key` says it per key.

    Args:
        min_depth: lower bound (exclusive) of valid ground truth, metres.
        max_depth: upper bound (inclusive) of valid ground truth, metres.
        sync_on_compute: sum over ``torch.distributed`` ranks in ``compute()`` (see
            :class:`~ssl_robust.metrics.Metric`); ``False`` computes locally.

    Raises:
        SSLRobustValueError: min_depth >= max_depth, mismatched shapes, negative target depth.

    Example:
        >>> import torch
        >>> m = DepthMetrics()
        >>> t = torch.full((1, 2, 2), 2.0)
        >>> m.update(t + 1.0, t)
        >>> {k: round(v.item(), 3) for k, v in m.compute().items()}
        {'rmse': 1.0, 'abs_rel': 0.5, 'delta1': 0.0}
    """

    higher_is_better = None
    higher_is_better_by_key: ClassVar[dict[str, bool]] = {
        "rmse": False,
        "abs_rel": False,
        "delta1": True,
    }

    def __init__(
        self, min_depth: float = 1e-3, max_depth: float = 10.0, *, sync_on_compute: bool = True
    ) -> None:
        super().__init__(sync_on_compute=sync_on_compute)
        self.min_depth, self.max_depth = _checks.check_depth_range(min_depth, max_depth)
        for name in ("rmse", "abs_rel", "delta1"):
            self.add_state(name, torch.zeros((), dtype=torch.float64))
        self.add_state("images", torch.zeros((), dtype=torch.long))

    def valid_mask(self, target: Tensor) -> Tensor:
        """The bool mask of valid pixels for a (B, H, W) target."""
        return (target > self.min_depth) & (target <= self.max_depth)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Accumulate a batch: pred and target depth (B, H, W) or (B, 1, H, W), metres."""
        if not isinstance(pred, Tensor):
            raise _checks.SSLRobustTypeError(f"pred must be a tensor; got {type(pred).__name__}")
        p = _checks.check_depth_map(pred, name="pred", check_negative=False)
        t = _checks.check_depth_map(
            target, batch=p.shape[0], size=(int(p.shape[1]), int(p.shape[2])), name="target"
        ).to(p.device)
        p, t = p.detach().double(), t.double()
        m = self.valid_mask(t)
        n = m.flatten(1).sum(1)
        has = n > 0
        denom = n.clamp_min(1).double()
        t_safe = torch.where(m, t, torch.ones_like(t))
        p_safe = torch.where(m, p, torch.ones_like(p))
        err = (p_safe - t_safe) * m
        rmse = (err.pow(2).flatten(1).sum(1) / denom).sqrt()
        abs_rel = (err.abs() / t_safe).flatten(1).sum(1) / denom
        ratio = torch.maximum(p_safe / t_safe, t_safe / p_safe.clamp_min(1e-12))
        delta1 = ((ratio < 1.25) & m).flatten(1).sum(1) / denom
        self.accumulate("rmse", rmse[has].sum())
        self.accumulate("abs_rel", abs_rel[has].sum())
        self.accumulate("delta1", delta1[has].sum())
        self.accumulate("images", has.sum())

    def _compute(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        n = state["images"].double()
        return {k: state[k] / n for k in ("rmse", "abs_rel", "delta1")}

    def extra_repr(self) -> str:
        return f"min_depth={self.min_depth:.4g}, max_depth={self.max_depth:.4g}"

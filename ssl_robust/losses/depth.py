"""Depth losses: scale-invariant log loss and multi-scale gradient matching (paper App. C.1).

All take predicted and ground-truth depth as (B, H, W) or (B, 1, H, W), and a bool mask of
valid pixels (default ``target > 0``); they return one value per image, shape (B,).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks

__all__ = ["depth_loss", "gradient_matching_loss", "l1_log_loss", "scale_invariant_log_loss"]

_TINY = 1e-12  # depths are clamped to at least this before the log (avoids log 0)


def _prepare(pred: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Check and bring pred, target and mask to (B, H, W); float32 at least."""
    if not isinstance(pred, Tensor):
        raise _checks.SSLRobustTypeError(f"pred must be a tensor; got {type(pred).__name__}")
    p = _checks.check_depth_map(pred, name="pred", check_negative=False)
    t = _checks.check_depth_map(
        target, batch=p.shape[0], size=(int(p.shape[1]), int(p.shape[2])), name="target"
    )
    if mask is None:
        m = t > 0
    else:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise _checks.SSLRobustTypeError(
                "mask must be a bool tensor of valid pixels; got "
                + (str(mask.dtype) if isinstance(mask, Tensor) else type(mask).__name__)
            )
        m = mask[:, 0] if mask.ndim == 4 and mask.shape[1] == 1 else mask
        if m.shape != t.shape:
            raise _checks.SSLRobustValueError(
                f"mask must have the depth's shape {tuple(t.shape)}; got {tuple(mask.shape)}"
            )
    return p, t.to(p.device), m.to(p.device)


def _log_diff(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """g = log pred − log target on the mask, 0 elsewhere (finite gradients everywhere)."""
    if pred.dtype.itemsize < 4:
        pred = pred.float()
    target = target.to(pred.dtype)
    one = torch.ones((), dtype=pred.dtype, device=pred.device)
    p = torch.where(mask, pred, one).clamp_min(_TINY)
    t = torch.where(mask, target, one).clamp_min(_TINY)
    return (p.log() - t.log()) * mask


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt with gradient 0 (not inf) at 0 and negative rounding noise mapped to 0."""
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def _si_log(g: Tensor, mask: Tensor, alpha: float, rho: float) -> Tensor:
    n = mask.flatten(1).sum(1).clamp_min(1).to(g.dtype)
    mean_g = g.flatten(1).sum(1) / n
    mean_g2 = g.pow(2).flatten(1).sum(1) / n
    return alpha * _safe_sqrt(mean_g2 - rho * mean_g.pow(2))


def _grad_match(g: Tensor, mask: Tensor, scales: int) -> Tensor:
    m = mask.to(g.dtype)
    total = g.new_zeros(g.shape[0])
    for k in range(scales):
        s = 2**k
        r, mk = g[:, ::s, ::s], m[:, ::s, ::s]
        gx = (r[:, :, 2:] - r[:, :, :-2]).abs() * mk[:, :, 2:] * mk[:, :, :-2]
        gy = (r[:, 2:, :] - r[:, :-2, :]).abs() * mk[:, 2:, :] * mk[:, :-2, :]
        total = total + (gx.flatten(1).sum(1) + gy.flatten(1).sum(1)) / mk.flatten(1).sum(
            1
        ).clamp_min(1)
    return total


def scale_invariant_log_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    alpha: float = 1.0,
    rho: float = 0.85,
) -> Tensor:
    r"""Scale-invariant log loss (Eigen et al.; AdaBins form, paper eq. 4).

    .. math:: L = \alpha\sqrt{\mathrm{mean}_M(g^2) - \rho\,\mathrm{mean}_M(g)^2},
        \qquad g = \log\hat d - \log d

    over the valid pixels M of each image. With ρ = 0.85 this is
    :math:`\sqrt{\mathrm{var}(g) + 0.15\,\mathrm{mean}(g)^2}`. The square root has gradient 0
    where its argument is 0 (e.g. pred == target), and an image with an empty mask gets 0.
    Depths are clamped to at least 1e-12 before the log.

    Args:
        pred: predicted depth (B, H, W) or (B, 1, H, W), > 0 on the mask.
        target: ground-truth depth, same shape, >= 0.
        mask: bool (B, H, W) valid pixels; default ``target > 0``.
        alpha: scale α (> 0).
        rho: variance weight ρ in [0, 1].

    Returns:
        (B,) per-image losses.

    Example:
        >>> import torch
        >>> t = torch.rand(2, 8, 8) + 0.5
        >>> scale_invariant_log_loss(2 * t, t)  # a global scale costs sqrt(0.15) * log 2
        tensor([0.2685, 0.2685])
    """
    _checks.check_positive_float("alpha", alpha)
    rho = _checks.check_positive_float("rho", rho, allow_zero=True)
    if rho > 1:
        raise _checks.SSLRobustValueError(f"rho must be in [0, 1]; got {rho:.6g}")
    p, t, m = _prepare(pred, target, mask)
    return _si_log(_log_diff(p, t, m), m, alpha, rho)


def gradient_matching_loss(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, *, scales: int = 4
) -> Tensor:
    r"""Multi-scale gradient matching loss on the log-depth difference (Li & Snavely, 2018).

    With :math:`R = (\log\hat d - \log d)\cdot M`, for each scale :math:`k < K`,
    :math:`s = 2^k`, :math:`R_k = R[::s, ::s]`, :math:`M_k = M[::s, ::s]`:

    .. math:: L = \sum_k \frac{\sum |R_k[:, 2:] - R_k[:, :-2]|\,M_k[:, 2:]M_k[:, :-2]
        + \sum |R_k[2:, :] - R_k[:-2, :]|\,M_k[2:, :]M_k[:-2, :]}{\max(\sum M_k, 1)}

    computed per image on its (H, W) map.

    Args:
        pred: predicted depth (B, H, W) or (B, 1, H, W).
        target: ground-truth depth, same shape.
        mask: bool valid pixels; default ``target > 0``.
        scales: number of scales K (>= 1).

    Returns:
        (B,) per-image losses.

    Example:
        >>> import torch
        >>> t = torch.rand(2, 8, 8) + 0.5
        >>> bool((gradient_matching_loss(3 * t, t) < 1e-5).all())  # a global scale: no gradient
        True
    """
    scales = _checks.check_int("scales", scales, minimum=1)
    p, t, m = _prepare(pred, target, mask)
    return _grad_match(_log_diff(p, t, m), m, scales)


def _depth_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Unchecked depth loss on (B, H, W) tensors."""
    g = _log_diff(pred, target, mask)
    return _si_log(g, mask, 1.0, 0.85) + 0.5 * _grad_match(g, mask, 4)


def depth_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""The depth training and DepthPGD objective (paper App. C.1):
    :math:`L = L_{\text{pixel}} + \tfrac12 L_{\text{grad}}`.

    ``scale_invariant_log_loss(alpha=1, rho=0.85) + 0.5 * gradient_matching_loss(scales=4)``,
    per image.

    Args:
        pred: predicted depth (B, H, W) or (B, 1, H, W).
        target: ground-truth depth, same shape.
        mask: bool valid pixels; default ``target > 0``.

    Returns:
        (B,) per-image losses.

    Example:
        >>> import torch
        >>> t = torch.rand(2, 8, 8) + 0.5
        >>> depth_loss(t, t)
        tensor([0., 0.])
    """
    p, t, m = _prepare(pred, target, mask)
    return _depth_loss(p, t, m)


def _l1_log(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Unchecked mean |log pred − log target| over the mask, per image."""
    g = _log_diff(pred, target, mask)
    return g.abs().flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1).to(g.dtype)


def l1_log_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Mean absolute log-depth error over the valid pixels, per image.

    .. math:: L = \frac{1}{|M|}\sum_{M} \lvert \log\hat d - \log d \rvert

    A second depth attack objective beside :func:`depth_loss`: it is not scale-invariant, so it
    also rewards shifting the whole depth map. An image with an empty mask gets 0.

    Args:
        pred: predicted depth (B, H, W) or (B, 1, H, W).
        target: ground-truth depth, same shape.
        mask: bool valid pixels; default ``target > 0``.

    Returns:
        (B,) per-image losses.

    Example:
        >>> import torch
        >>> t = torch.rand(2, 8, 8) + 0.5
        >>> l1_log_loss(2 * t, t)  # log 2 everywhere
        tensor([0.6931, 0.6931])
    """
    p, t, m = _prepare(pred, target, mask)
    return _l1_log(p, t, m)


def _rmse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Unchecked per-image RMSE over the mask (0 for an empty mask)."""
    p = pred.float() if pred.dtype.itemsize < 4 else pred
    sq = (p - target.to(p.dtype)).pow(2) * mask
    return (sq.flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1).to(p.dtype)).sqrt()

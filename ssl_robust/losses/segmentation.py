"""The SegPGD loss (Gu et al., 2022): cross-entropy re-weighted between right and wrong pixels."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _checks

__all__ = ["segpgd_loss"]


def _upcast(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _correct(logits: Tensor, safe_target: Tensor, valid: Tensor) -> Tensor:
    """Valid pixels whose label has the largest logit (argmax == label, up to exact ties).

    Computed as ``logit[label] >= max(logits)``: the same set as ``argmax == label`` except for
    exact ties, and much cheaper than ``argmax`` over the channel dimension on CPU.
    """
    z = logits.detach()
    return (z.gather(1, safe_target.unsqueeze(1)).squeeze(1) >= z.amax(1)) & valid


def _segpgd_loss(
    logits: Tensor,
    target: Tensor,
    *,
    step: int,
    steps: int,
    ignore_index: int,
    normalize: str,
    valid: Tensor | None = None,
    safe_target: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Unchecked SegPGD loss; also returns the share of correct valid pixels per image.

    ``valid`` (target != ignore_index) and ``safe_target`` (target with ignored pixels set to
    0) may be passed precomputed.
    """
    logits = _upcast(logits)
    if valid is None:
        valid = target != ignore_index
    if safe_target is None:
        safe_target = target.masked_fill(~valid, 0)
    ce = F.cross_entropy(logits, safe_target, reduction="none").flatten(1)
    correct = _correct(logits, safe_target, valid).flatten(1)
    valid_f = valid.flatten(1).to(ce.dtype)
    lam = step / (2 * max(steps, 1))
    weight = torch.where(correct, 1.0 - lam, lam * valid_f)  # correct implies valid
    n_valid = valid_f.sum(1).clamp_min(1)
    n = n_valid if normalize == "valid" else torch.full_like(n_valid, valid_f.shape[1])
    loss = torch.linalg.vecdot(weight, ce) / n
    share = correct.sum(1).to(ce.dtype) / n_valid
    return loss, share


def segpgd_loss(
    logits: Tensor,
    target: Tensor,
    *,
    step: int,
    steps: int,
    ignore_index: int = 255,
    normalize: Literal["valid", "hw"] = "valid",
) -> Tensor:
    r"""The SegPGD objective at attack step ``step`` of ``steps`` (Gu et al., 2022; paper eq. 1).

    .. math::
        L = \frac{1}{N}\Big((1-\lambda_t)\sum_{j\in P^T} \mathrm{CE}_j
            + \lambda_t \sum_{k\in P^F} \mathrm{CE}_k\Big), \qquad \lambda_t = \frac{t}{2T}

    where :math:`P^T` / :math:`P^F` are the valid pixels whose argmax is right / wrong, and N is
    the number of valid (not ``ignore_index``) pixels (``normalize="valid"``) or H·W
    (``normalize="hw"``, the paper's eq. 1). The cross-entropy is taken on the logits. Images
    with no valid pixel get loss 0 (no NaN).

    Args:
        logits: (B, C, H, W) class logits at the mask resolution.
        target: (B, H, W) integer labels in [0, C) or ``ignore_index``.
        step: attack step t (0-based; t = T is allowed and gives λ = ½).
        steps: total number of steps T (>= 1; 0 is treated as 1).
        ignore_index: label of pixels that count nowhere.
        normalize: ``"valid"`` or ``"hw"``.

    Shape:
        - Output: (B,).

    Raises:
        SSLRobustValueError: mismatched shapes, labels out of range, bad options.
        SSLRobustTypeError: non-integer target.

    Example:
        >>> import torch
        >>> logits = torch.randn(2, 3, 4, 4)
        >>> target = torch.randint(0, 3, (2, 4, 4))
        >>> segpgd_loss(logits, target, step=0, steps=10).shape
        torch.Size([2])
    """
    if not isinstance(logits, Tensor) or logits.ndim != 4 or not logits.is_floating_point():
        raise _checks.SSLRobustValueError(
            f"logits must be a float tensor (B, C, H, W); got {_checks._shape(logits)}"
        )
    b, c, h, w = logits.shape
    target = _checks.check_masks(target, batch=b, size=(h, w), name="target", device=logits.device)
    _checks.check_int("steps", steps, minimum=0)
    _checks.check_int("step", step, minimum=0)
    if step > max(steps, 1):
        raise _checks.SSLRobustValueError(f"step must be in [0, steps={steps}]; got {step}")
    _checks.check_choice("normalize", normalize, ("valid", "hw"))
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise _checks.SSLRobustTypeError(f"ignore_index must be an int; got {ignore_index!r}")
    _checks.check_mask_range(target, c, ignore_index=ignore_index, name="target")
    loss, _ = _segpgd_loss(
        logits, target, step=step, steps=steps, ignore_index=ignore_index, normalize=normalize
    )
    return loss

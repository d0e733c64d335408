"""Segmentation attack losses: SegPGD's (Gu et al., 2022), cross-entropy re-weighted between
right and wrong pixels, and SEA's (Croce, Singh & Hein, 2024): masked CE, Jensen–Shannon,
masked spherical, class-balanced CE."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _checks

__all__ = ["SEGMENTATION_LOSSES", "sea_loss", "segpgd_loss"]


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
    _checks.check_int("steps", steps, minimum=0)
    _checks.check_int("step", step, minimum=0)
    if step > max(steps, 1):
        raise _checks.SSLRobustValueError(f"step must be in [0, steps={steps}]; got {step}")
    logits, safe, valid = _checked(logits, target, ignore_index, normalize)
    loss, _ = _segpgd_loss(
        logits,
        safe,
        step=step,
        steps=steps,
        ignore_index=ignore_index,
        normalize=normalize,
        valid=valid,
        safe_target=safe,
    )
    return loss


#: The segmentation attack losses: SegPGD's (the paper's) and SEA's (Croce, Singh & Hein, 2024).
SEGMENTATION_LOSSES = ("segpgd", "ce", "masked_ce", "js", "masked_spherical", "balanced_ce")

_LN2 = math.log(2.0)


def _pixel_loss(name: str, logits: Tensor, safe_target: Tensor, valid: Tensor) -> Tensor:
    """Unchecked per-pixel loss (B, H, W) of a SEA loss; 0 on ignored pixels."""
    z = _upcast(logits)
    logp_y = F.log_softmax(z, dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
    if name == "ce":
        per = -logp_y
    elif name == "masked_ce":
        per = -logp_y * _correct(z, safe_target, valid)
    elif name == "js":
        # JS(softmax(z) || onehot(y)) depends on p_y only:
        # ½·(2·ln 2 + p_y·log p_y − (1 + p_y)·log(1 + p_y)), from 0 (p_y = 1) to ln 2 (p_y = 0).
        p_y = logp_y.exp()
        per = 0.5 * (2 * _LN2 + p_y * logp_y - (1 + p_y) * torch.log1p(p_y))
    elif name == "masked_spherical":
        z_y = z.gather(1, safe_target.unsqueeze(1)).squeeze(1)
        norm = torch.linalg.vector_norm(z, dim=1).clamp_min(1e-12)
        per = -(z_y / norm) * _correct(z, safe_target, valid)
    elif name == "balanced_ce":
        flat, weight = safe_target.flatten(1), valid.flatten(1).to(z.dtype)
        counts = z.new_zeros(z.shape[:2]).scatter_add_(1, flat, weight)  # valid pixels per class
        n_valid = valid.flatten(1).sum(1).clamp_min(1).to(z.dtype)
        share = counts.gather(1, flat).view_as(logp_y) / n_valid.view(-1, 1, 1)
        per = -logp_y * (1 - share)
    else:  # pragma: no cover - names are checked at the public entry points
        raise _checks.SSLRobustValueError(f"unknown segmentation loss {name!r}")
    return per * valid


def _reduce(per_pixel: Tensor, valid: Tensor, normalize: str) -> Tensor:
    """Sum over the pixels of each image divided by the valid pixels (or H·W)."""
    total = per_pixel.flatten(1).sum(1)
    if normalize == "valid":
        return total / valid.flatten(1).sum(1).clamp_min(1).to(total.dtype)
    return total / valid[0].numel()


def _checked(
    logits: object, target: object, ignore_index: object, normalize: str
) -> tuple[Tensor, Tensor, Tensor]:
    """The checks of the public losses: ``(logits, safe target, valid pixels)``."""
    logits = _checks.check_logits(logits, dense=True)
    b, c, h, w = logits.shape
    target = _checks.check_masks(target, batch=b, size=(h, w), name="target", device=logits.device)
    _checks.check_choice("normalize", normalize, ("valid", "hw"))
    ignore_index = _checks.check_ignore_index(ignore_index)
    _checks.check_mask_range(target, c, ignore_index=ignore_index, name="target")
    valid = target != ignore_index
    return logits, target.masked_fill(~valid, 0), valid


def sea_loss(
    logits: Tensor,
    target: Tensor,
    *,
    loss: Literal["ce", "masked_ce", "js", "masked_spherical", "balanced_ce"],
    ignore_index: int = 255,
    normalize: Literal["valid", "hw"] = "valid",
) -> Tensor:
    r"""The segmentation attack losses of SEA (Croce, Singh & Hein, ECCV 2024), per image.

    Per valid pixel, with :math:`p = \mathrm{softmax}(z)`, label y and
    :math:`c = 1[\arg\max z = y]` ("correct"; ``ignore_index`` pixels count nowhere):

    - ``"ce"``: :math:`-\log p_y`.
    - ``"masked_ce"``: :math:`-c\,\log p_y` (only pixels still classified correctly).
    - ``"js"``: Jensen–Shannon divergence :math:`\tfrac12\mathrm{KL}(p\,\|\,m)
      + \tfrac12\mathrm{KL}(e_y\,\|\,m)`, :math:`m = (p + e_y)/2`, between the softmax and the
      one-hot label, in [0, ln 2].
    - ``"masked_spherical"``: :math:`-c\,z_y / \lVert z \rVert_2` (the masked spherical loss on
      the logits, as in the SEA code: the normalized logit of the label on correct pixels).
    - ``"balanced_ce"``: :math:`-(1 - n_y / N)\log p_y` with :math:`n_y` the valid pixels of
      class y in the image (class-balanced cross-entropy).

    The per-pixel values are summed and divided by the number N of valid pixels
    (``normalize="valid"``) or by H·W (``"hw"``); an image without valid pixel gets 0.

    Args:
        logits: (B, C, H, W) class logits at the mask resolution.
        target: (B, H, W) integer labels in [0, C) or ``ignore_index``.
        loss: which loss (see above).
        ignore_index: label of pixels that count nowhere.
        normalize: ``"valid"`` or ``"hw"``.

    Returns:
        (B,) per-image losses to maximize.

    Raises:
        SSLRobustValueError: unknown loss (with the valid ones), mismatched shapes, labels out
            of range.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[[4.0]], [[0.0]]]])  # one pixel, 2 classes, label 0
        >>> round(float(sea_loss(logits, torch.tensor([[[1]]]), loss="js")), 4)  # p_y small
        0.6479
    """
    name = _checks.check_choice("loss", loss, SEGMENTATION_LOSSES[1:])
    z, safe, valid = _checked(logits, target, ignore_index, normalize)
    return _reduce(_pixel_loss(name, z, safe, valid), valid, normalize)

"""Batched random resized crops and flips on image tensors, driven by an explicit generator."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _checks

__all__ = ["augment_with_targets", "random_resized_crop_flip"]


def random_resized_crop_flip(
    images: Tensor,
    *,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    vflip: float = 0.5,
) -> Tensor:
    """Random resized crop and horizontal/vertical flips, one draw per image, in one op.

    Per image: an area fraction ``s ~ U(scale)`` and an aspect ratio ``r`` log-uniform in
    ``ratio`` give a crop of width ``sqrt(s·r)`` and height ``sqrt(s/r)`` (fractions of the
    image sides, at most 1), placed uniformly inside the image, flipped left-right with
    probability ``hflip`` and upside-down with probability ``vflip``, and resampled
    (bilinear) to the input size. All draws come from ``generator`` (a CPU generator works for
    images on any device); the global RNG is never used. DeACL's training augmentation
    (paper Appendix C.2).

    Args:
        images: (B, C, H, W) images in [0, 1].
        generator: the random source.
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio (width / height, relative to the image sides).
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.

    Shape:
        - images: (B, C, H, W); output: the same shape, dtype and device, values in [0, 1].

    Example:
        >>> import torch
        >>> x = torch.rand(2, 3, 8, 8)
        >>> y = random_resized_crop_flip(x, generator=torch.Generator().manual_seed(0))
        >>> y.shape == x.shape and bool(((y >= 0) & (y <= 1)).all())
        True
    """
    _checks.check_image_tensor(images)
    _checks.check_generator(generator)
    theta = _crop_flip_theta(images.shape[0], generator, scale, ratio, hflip, vflip)
    return _resample(images, theta, "bilinear")


def _crop_flip_theta(
    b: int,
    generator: torch.Generator,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    hflip: float,
    vflip: float,
) -> Tensor:
    """The (B, 2, 3) float64 affine grids of one crop + flips per image (6 draws per image)."""
    gen_device = generator.device
    u = torch.rand(b, 6, generator=generator, device=gen_device, dtype=torch.float64).cpu()
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    # Crop centre in normalized coordinates [-1, 1], so the crop stays inside the image.
    cx = (1 - w) * (2 * u[:, 2] - 1)
    cy = (1 - h) * (2 * u[:, 3] - 1)
    fx = torch.where(u[:, 4] < hflip, -1.0, 1.0).to(torch.float64)
    fy = torch.where(u[:, 5] < vflip, -1.0, 1.0).to(torch.float64)
    zero = torch.zeros_like(w)
    return torch.stack((torch.stack((w * fx, zero, cx), 1), torch.stack((zero, h * fy, cy), 1)), 1)


def _resample(images: Tensor, theta: Tensor, mode: str) -> Tensor:
    work = images if images.dtype in (torch.float32, torch.float64) else images.float()
    theta = theta.to(device=images.device, dtype=work.dtype)
    grid = F.affine_grid(theta, list(work.shape), align_corners=False)
    out = F.grid_sample(work, grid, mode=mode, padding_mode="border", align_corners=False)
    if mode == "nearest":
        return out.to(images.dtype)
    return out.clamp_(0, 1).to(images.dtype)


def augment_with_targets(
    images: Tensor, targets: Mapping[str, Tensor], *, generator: torch.Generator
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`random_resized_crop_flip` of the images, and the same crop and flips of the
    per-pixel targets (masks, depth maps: nearest-neighbour, so labels stay labels); per-image
    targets (labels) are passed through. Draws exactly what ``random_resized_crop_flip`` draws.

    Example:
        >>> import torch
        >>> x, m = torch.rand(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
        >>> y, t = augment_with_targets(x, {"mask": m}, generator=torch.Generator().manual_seed(0))
        >>> t["mask"].shape, t["mask"].dtype, set(t["mask"].unique().tolist()) <= {0, 1, 2}
        (torch.Size([2, 8, 8]), torch.int64, True)
    """
    _checks.check_image_tensor(images)
    _checks.check_generator(generator)
    theta = _crop_flip_theta(images.shape[0], generator, (0.08, 1.0), (3 / 4, 4 / 3), 0.5, 0.5)
    out = _resample(images, theta, "bilinear")
    hw = tuple(images.shape[-2:])
    moved: dict[str, Tensor] = {}
    for key, target in targets.items():
        if target.ndim >= 3 and tuple(target.shape[-2:]) == hw:
            flat = target.reshape(target.shape[0], -1, *hw)
            work = flat.double() if not flat.is_floating_point() else flat
            warped = _resample(work, theta, "nearest").to(target.dtype)
            moved[key] = warped.reshape(target.shape)
        else:
            moved[key] = target
    return out, moved

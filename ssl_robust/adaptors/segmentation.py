"""Linear segmentation head and batched sliding-window inference (paper §4.1)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from ..encoders.base import EncoderOutput
from .base import Adaptor

__all__ = ["LinearSegmenter", "SlidingWindow", "sliding_window_inference"]


def _check_patches(features: EncoderOutput, embed_dim: int, where: str) -> None:
    p = features.patches
    if p.ndim != 3 or p.shape[2] != embed_dim:
        raise _checks.SSLRobustValueError(
            f"{where} expects patch tokens of shape (B, N, {embed_dim}); got {tuple(p.shape)}"
        )


class LinearSegmenter(Adaptor):
    """BatchNorm + 1×1 convolution on the patch map, logits upsampled to the input size.

    The DINOv2 linear segmentation protocol: the patch tokens (B, N, D) are laid out as a
    (B, D, h, w) map, batch-normalized, mapped to class logits by a 1×1 convolution and
    bilinearly upsampled (``align_corners=False``) to the image size, so the output is aligned
    pixel by pixel with the masks that losses, attacks and metrics see.

    Args:
        embed_dim: width D of the patch tokens.
        num_classes: number of classes C (>= 1).

    Shape:
        - Input: EncoderOutput with patches (B, h*w, D); ``size`` = (H, W) of the images.
        - Output: logits (B, C, H, W).

    Example:
        >>> import torch
        >>> from ssl_robust.encoders import EncoderOutput
        >>> head = LinearSegmenter(8, 3).eval()
        >>> feats = EncoderOutput(torch.randn(2, 8), torch.randn(2, 6, 8), (2, 3))
        >>> head(feats, (16, 24)).shape
        torch.Size([2, 3, 16, 24])
    """

    task = "segmentation"

    def __init__(self, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.embed_dim = _checks.check_int("embed_dim", embed_dim, minimum=1)
        self.num_classes = _checks.check_int("num_classes", num_classes, minimum=1)
        self.bn = nn.BatchNorm2d(embed_dim)
        self.conv = nn.Conv2d(embed_dim, num_classes, kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, features: EncoderOutput, size: tuple[int, int]) -> Tensor:
        _check_patches(features, self.embed_dim, "LinearSegmenter")
        logits = self.conv(self.bn(features.patch_map()))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_classes={self.num_classes}"


def _starts(length: int, window: int, stride: int) -> Tensor:
    n = -(-(length - window) // stride) + 1  # ceil((length - window) / stride) + 1
    return (torch.arange(n) * stride).clamp(max=length - window)


def sliding_window_inference(
    model: nn.Module | Any,
    images: Tensor,
    *,
    window: int | tuple[int, int],
    stride: int | tuple[int, int],
) -> Tensor:
    """Run a dense model on overlapping windows and average the outputs where they overlap.

    Windows start every ``stride`` pixels, the last one flush with the bottom/right border, so
    every pixel is covered. Images smaller than the window are padded at the bottom/right with
    zeros (black) and the output is cropped back. All windows of all images go through the
    model in ONE forward pass, and the overlap averaging is a single ``index_add`` (no Python
    loop over images or windows), so the whole function is differentiable and attackable.

    Args:
        model: maps (N, C, wh, ww) images to (N, K, wh, ww) or (N, wh, ww) dense outputs
            (e.g. a segmentation or depth :class:`~ssl_robust.adaptors.TaskModel`).
        images: (B, C, H, W) images in [0, 1].
        window: window size, an int or (height, width).
        stride: step between windows, an int or (height, width); at most the window size.

    Returns:
        (B, K, H, W) (or (B, H, W) when the model returns 3-D outputs), averaged over windows.

    Raises:
        SSLRobustValueError: stride larger than the window (uncovered pixels), sizes < 1.

    Example:
        >>> import torch
        >>> model = torch.nn.Conv2d(3, 2, kernel_size=1)
        >>> x = torch.rand(2, 3, 20, 13)
        >>> out = sliding_window_inference(model, x, window=8, stride=6)
        >>> torch.allclose(out, model(x), atol=1e-6)  # a pointwise model: windows change nothing
        True
    """
    _checks.check_image_tensor(images)
    wh, ww = _checks.check_pair("window", window)
    sh, sw = _checks.check_pair("stride", stride)
    if sh > wh or sw > ww:
        raise _checks.SSLRobustValueError(
            f"stride must not exceed the window (pixels between windows would get no "
            f"prediction); got window=({wh}, {ww}), stride=({sh}, {sw})"
        )
    b, _, h, w = images.shape
    ph, pw = max(h, wh), max(w, ww)
    x = F.pad(images, (0, pw - w, 0, ph - h)) if (ph, pw) != (h, w) else images
    dev = images.device
    rows = (_starts(ph, wh, sh)[:, None] + torch.arange(wh)).to(dev)  # (ny, wh)
    cols = (_starts(pw, ww, sw)[:, None] + torch.arange(ww)).to(dev)  # (nx, ww)
    ny, nx = rows.shape[0], cols.shape[0]
    r_idx, c_idx = rows[:, None, :, None], cols[None, :, None, :]  # (ny, nx, wh, ww)
    windows = x[:, :, r_idx, c_idx]  # (B, C, ny, nx, wh, ww)
    windows = windows.permute(0, 2, 3, 1, 4, 5).reshape(b * ny * nx, -1, wh, ww)
    out = model(windows)
    if not isinstance(out, Tensor) or out.ndim not in (3, 4) or out.shape[-2:] != (wh, ww):
        raise _checks.SSLRobustValueError(
            f"sliding-window inference needs a model returning (N, K, {wh}, {ww}) or "
            f"(N, {wh}, {ww}) for windows of {wh}×{ww}; got {_checks._shape(out)}"
        )
    squeeze = out.ndim == 3
    k = 1 if squeeze else out.shape[1]
    # (pixel-in-window, image·channel) rows: index_add along dim 0 adds whole contiguous rows
    out = out.reshape(b, ny, nx, k, wh, ww).permute(1, 2, 4, 5, 0, 3).reshape(-1, b * k)
    lin = (r_idx * pw + c_idx).expand(ny, nx, wh, ww).reshape(-1)
    acc = out.new_zeros(ph * pw, b * k).index_add(0, lin, out)
    count = torch.bincount(lin, minlength=ph * pw).to(out.dtype)
    res = (acc / count[:, None]).t().reshape(b, k, ph, pw)[:, :, :h, :w]
    return res[:, 0] if squeeze else res


class SlidingWindow(nn.Module):
    """A dense model evaluated by :func:`sliding_window_inference`, as an ``nn.Module``.

    Wrap a segmentation (or depth) :class:`~ssl_robust.adaptors.TaskModel` trained on crops
    of ``window`` pixels to run it on larger images; the wrapper is itself a model that
    metrics and attacks (SegPGD, DepthPGD) accept.

    Args:
        model: the dense model (images (N, C, wh, ww) → (N, K, wh, ww) or (N, wh, ww)).
        window: window size, an int or (height, width), usually the training crop.
        stride: step between windows (at most ``window``); e.g. ``window // 2``.

    Example:
        >>> import torch
        >>> sw = SlidingWindow(torch.nn.Conv2d(3, 4, 1), window=8, stride=4)
        >>> sw(torch.rand(1, 3, 12, 30)).shape
        torch.Size([1, 4, 12, 30])
    """

    def __init__(
        self, model: nn.Module, *, window: int | tuple[int, int], stride: int | tuple[int, int]
    ) -> None:
        super().__init__()
        self.window = _checks.check_pair("window", window)
        self.stride = _checks.check_pair("stride", stride)
        if self.stride[0] > self.window[0] or self.stride[1] > self.window[1]:
            raise _checks.SSLRobustValueError(
                f"stride must not exceed the window; got window={self.window}, stride={self.stride}"
            )
        patch = getattr(getattr(model, "encoder", None), "patch_size", None)
        if isinstance(patch, int) and (self.window[0] % patch or self.window[1] % patch):
            raise _checks.SSLRobustValueError(
                f"window must be a multiple of the encoder's patch size {patch}; got {self.window}"
            )
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return sliding_window_inference(self.model, images, window=self.window, stride=self.stride)

    def extra_repr(self) -> str:
        return f"window={self.window}, stride={self.stride}"

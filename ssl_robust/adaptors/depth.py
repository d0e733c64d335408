"""Linear depth head (DINOv2 "linear" protocol, paper §4.1) and a view of encoder features."""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from ..encoders.base import Encoder, EncoderOutput
from .base import Adaptor

__all__ = ["LinearDepther", "feature_view"]

E = TypeVar("E", bound=Encoder)


class LinearDepther(Adaptor):
    r"""Depth by classification over bins, from CLS-augmented patch tokens (DINOv2 linear).

    Each patch token is concatenated with the CLS token (2·D channels), the map is upsampled
    bilinearly ×4, a 1×1 convolution gives ``bins`` logits per pixel and

    .. math:: p = \frac{\mathrm{relu}(z) + 0.1}{\sum_{\text{bins}} (\mathrm{relu}(z) + 0.1)},
        \qquad \hat d = \sum_k p_k\, c_k, \quad c = \mathrm{linspace}(d_{\min}, d_{\max}, K)

    and the depth map is resized bilinearly to the input size. The 1×1 convolution is applied
    before the ×4 upsampling, which is the same function (both are linear per pixel and the
    bilinear weights sum to one) at a fraction of the cost. The prediction always lies in
    [min_depth, max_depth].

    Args:
        embed_dim: width D of the encoder tokens (the convolution sees 2·D channels).
        min_depth: first bin centre, metres (>= 0).
        max_depth: last bin centre, metres (> min_depth).
        bins: number of bins K (>= 2).

    Shape:
        - Input: EncoderOutput with cls (B, D) and patches (B, h*w, D); ``size`` = (H, W).
        - Output: depth (B, 1, H, W) in metres.

    Example:
        >>> import torch
        >>> from ssl_robust.encoders import EncoderOutput
        >>> head = LinearDepther(8, bins=16)
        >>> feats = EncoderOutput(torch.randn(2, 8), torch.randn(2, 4, 8), (2, 2))
        >>> d = head(feats, (32, 32))
        >>> d.shape, bool((d >= 1e-3).all() and (d <= 10).all())
        (torch.Size([2, 1, 32, 32]), True)
    """

    task = "depth"

    def __init__(
        self,
        embed_dim: int,
        *,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        bins: int = 256,
    ) -> None:
        super().__init__()
        self.embed_dim = _checks.check_int("embed_dim", embed_dim, minimum=1)
        self.min_depth, self.max_depth = _checks.check_depth_range(min_depth, max_depth)
        self.bins = _checks.check_int("bins", bins, minimum=2)
        self.conv = nn.Conv2d(2 * embed_dim, bins, kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        centres = torch.linspace(self.min_depth, self.max_depth, bins)
        self.register_buffer("centres", centres, persistent=False)

    def forward(self, features: EncoderOutput, size: tuple[int, int]) -> Tensor:
        p = features.patches
        if p.ndim != 3 or p.shape[2] != self.embed_dim or features.cls.shape[-1] != self.embed_dim:
            raise _checks.SSLRobustValueError(
                f"LinearDepther expects cls (B, {self.embed_dim}) and patches (B, N, "
                f"{self.embed_dim}); got {tuple(features.cls.shape)} and {tuple(p.shape)}"
            )
        pmap = features.patch_map()
        cls = features.cls[:, :, None, None].expand_as(pmap)
        logits = self.conv(torch.cat((pmap, cls), dim=1))
        h, w = features.grid
        logits = F.interpolate(logits, size=(4 * h, 4 * w), mode="bilinear", align_corners=False)
        prob = F.relu(logits) + 0.1
        prob = prob / prob.sum(1, keepdim=True)
        depth = torch.einsum("bkhw,k->bhw", prob, self.centres.to(prob.dtype)).unsqueeze(1)
        return F.interpolate(depth, size=size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, min_depth={self.min_depth:.4g}, "
            f"max_depth={self.max_depth:.4g}, bins={self.bins}"
        )


def feature_view(encoder: E, *, output_layer: int = -1, output_norm: bool = True) -> E:
    """The same encoder (shared weights) returning tokens of another block, normed or not.

    Dense heads often read tokens other than the final normalized ones: the paper's depth head
    uses the last block's tokens WITHOUT the final LayerNorm, i.e.
    ``feature_view(vit, output_norm=False)``. The view is a shallow copy: it shares every
    parameter and submodule with ``encoder`` (training one trains the other), only the two
    options differ, and ``encoder`` itself is not changed. Equivalent to building the
    :class:`~ssl_robust.encoders.VisionTransformer` with ``output_layer=`` / ``output_norm=``.

    Args:
        encoder: an encoder with ``output_layer`` / ``output_norm`` options (the built-in
            VisionTransformer).
        output_layer: block whose tokens to return (negative counts from the end).
        output_norm: apply the final norm.

    Raises:
        SSLRobustTypeError: the encoder has no such options.
        SSLRobustValueError: output_layer out of range.

    Example:
        >>> from ssl_robust.encoders import VisionTransformer
        >>> vit = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2)
        >>> view = feature_view(vit, output_norm=False)
        >>> view.output_norm, vit.output_norm, view.blocks is vit.blocks
        (False, True, True)
    """
    if not isinstance(encoder, Encoder) or not hasattr(encoder, "output_layer"):
        raise _checks.SSLRobustTypeError(
            "feature_view needs an encoder with output_layer/output_norm options (the built-in "
            f"VisionTransformer); got {type(encoder).__name__}"
        )
    depth = int(getattr(encoder, "depth", 0))
    if (
        isinstance(output_layer, bool)
        or not isinstance(output_layer, int)
        or not (-depth <= output_layer < depth)
    ):
        raise _checks.SSLRobustValueError(
            f"output_layer must be an int in [{-depth}, {depth - 1}]; got {output_layer!r}"
        )
    view = copy.copy(encoder)
    object.__setattr__(view, "output_layer", output_layer)
    object.__setattr__(view, "output_norm", bool(output_norm))
    return view

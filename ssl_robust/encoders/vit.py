"""A Vision Transformer whose parameters load DINO v1 and DINOv2 checkpoints as they are.

Parameter names follow the official repositories (facebookresearch/dino and
facebookresearch/dinov2): ``cls_token``, ``pos_embed``, ``register_tokens``, ``mask_token``,
``patch_embed.proj``, ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1,
mlp.fc2, ls2.gamma}`` and ``norm``. The arithmetic is the official one: pre-norm blocks,
LayerNorm(eps=1e-6), exact GELU, optional LayerScale, bicubic position-embedding interpolation
with the 0.1 offset for other input sizes, register tokens inserted after the CLS token and
stripped from the output.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from .base import IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderOutput

__all__ = ["VisionTransformer"]


class PatchEmbed(nn.Module):
    """Non-overlapping patches through a strided convolution (``patch_embed.proj``)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.proj(x)
        return out.flatten(2).transpose(1, 2)


class LayerScale(nn.Module):
    """Per-channel scaling ``x * gamma`` (DINOv2's ``ls1``/``ls2``)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        proj: Tensor = self.proj(out.transpose(1, 2).reshape(b, n, c))
        return proj


class Mlp(nn.Module):
    """``fc1`` → GELU → ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class Block(nn.Module):
    """Pre-norm transformer block with optional LayerScale."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, layerscale: float | None
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.ls1: nn.Module = (
            LayerScale(dim, layerscale) if layerscale is not None else nn.Identity()
        )
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2: nn.Module = (
            LayerScale(dim, layerscale) if layerscale is not None else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        out: Tensor = x + self.ls2(self.mlp(self.norm2(x)))
        return out


class VisionTransformer(Encoder):
    """ViT encoder, state-dict compatible with the official DINO v1 and DINOv2 backbones.

    Args:
        img_size: training resolution; fixes the number of position embeddings
            ((img_size / patch_size)² + 1). Other sizes work by interpolation.
        patch_size: patch side in pixels (DINO: 8 or 16, DINOv2: 14).
        embed_dim: token width D.
        depth: number of transformer blocks.
        num_heads: attention heads (must divide ``embed_dim``).
        mlp_ratio: hidden width of the MLP relative to D.
        qkv_bias: bias in the ``qkv`` projection.
        num_register_tokens: DINOv2 "with registers" tokens, stripped from the output.
        layerscale: LayerScale init value (DINOv2: 1e-5), or None for no LayerScale (DINO v1).
        mask_token: create the (unused at inference) ``mask_token`` parameter DINOv2
            checkpoints carry.
        output_layer: which block's tokens to return (negative counts from the end; -1 = last).
        output_norm: apply the final ``norm`` to the returned tokens.
        n_last_blocks: concatenate the tokens of this many blocks, ending at ``output_layer``,
            along channels (DINOv2's ``get_intermediate_layers(n=4)`` / "linear4" protocol:
            each block's CLS and patch tokens, normed when ``output_norm``, earliest first).
            The encoder's ``embed_dim`` attribute is then ``n_last_blocks * embed_dim`` (the
            width heads are built with); ``token_dim`` stays the transformer width.
        pad: inputs whose size is not a multiple of ``patch_size``: ``"refuse"`` raises, ``"pad"``
            pads bottom and right (with zeros after normalization, i.e. the mean colour).
        mean: normalization mean (ImageNet by default).
        std: normalization std (ImageNet by default).
        interpolate_offset: position-embedding interpolation for other grids: an offset > 0
            interpolates with ``scale_factor = (h + offset) / m`` (DINO v1, DINOv2: 0.1); 0 uses
            the output size directly (DINOv2 with registers).
        interpolate_antialias: bicubic interpolation with antialiasing (DINOv2 with registers).

    Shape:
        - Input: (B, 3, H, W) images in [0, 1].
        - Output: :class:`EncoderOutput` with cls (B, D), patches (B, h*w, D), grid (h, w),
          h = ⌈H / patch_size⌉, w = ⌈W / patch_size⌉, D = ``n_last_blocks * embed_dim``.

    Example:
        >>> import torch
        >>> vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
        >>> out = vit(torch.rand(2, 3, 32, 48))
        >>> out.cls.shape, out.patches.shape, out.grid
        (torch.Size([2, 32]), torch.Size([2, 24, 32]), (4, 6))
        >>> linear4 = VisionTransformer(
        ...     img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, n_last_blocks=4
        ... )
        >>> linear4.embed_dim, linear4(torch.rand(2, 3, 32, 32)).patches.shape
        (128, torch.Size([2, 16, 128]))
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        num_register_tokens: int = 0,
        layerscale: float | None = None,
        mask_token: bool = False,
        output_layer: int = -1,
        output_norm: bool = True,
        n_last_blocks: int = 1,
        pad: Literal["refuse", "pad"] = "refuse",
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        interpolate_offset: float = 0.1,
        interpolate_antialias: bool = False,
    ) -> None:
        n_last_blocks = _checks.check_int("n_last_blocks", n_last_blocks, minimum=1)
        super().__init__(
            embed_dim=embed_dim * n_last_blocks, patch_size=patch_size, mean=mean, std=std
        )
        _checks.check_int("img_size", img_size, minimum=1)
        _checks.check_int("depth", depth, minimum=1)
        _checks.check_int("num_heads", num_heads, minimum=1)
        _checks.check_int("num_register_tokens", num_register_tokens, minimum=0)
        if embed_dim % num_heads:
            raise _checks.SSLRobustValueError(
                f"embed_dim must be divisible by num_heads; got embed_dim={embed_dim}, "
                f"num_heads={num_heads}"
            )
        if img_size % patch_size:
            raise _checks.SSLRobustValueError(
                f"img_size must be a multiple of patch_size; got {img_size} and {patch_size}"
            )
        if not -depth <= output_layer < depth:
            raise _checks.SSLRobustValueError(
                f"output_layer must be in [{-depth}, {depth - 1}] for depth={depth}; got "
                f"{output_layer}"
            )
        _check_block_span(output_layer, n_last_blocks, depth)
        self.pad = _checks.check_choice("pad", pad, ("refuse", "pad"))
        self.token_dim = embed_dim
        self.n_last_blocks = n_last_blocks
        self.img_size = img_size
        self.depth = depth
        self.num_heads = num_heads
        self.num_register_tokens = num_register_tokens
        self.output_layer = output_layer
        self.output_norm = bool(output_norm)
        self.interpolate_offset = _checks.check_positive_float(
            "interpolate_offset", interpolate_offset, allow_zero=True
        )
        self.interpolate_antialias = bool(interpolate_antialias)

        self.patch_embed = PatchEmbed(patch_size, self.in_chans, embed_dim)
        num_patches = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
            if num_register_tokens
            else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim)) if mask_token else None
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, layerscale) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, h: int, w: int, dtype: torch.dtype) -> Tensor:
        """Position embeddings for an h × w patch grid, interpolated bicubically as DINO does.

        With ``interpolate_offset > 0`` the scale factor is ``(h + offset) / m`` (the official
        kludge, offset 0.1); with 0 the target size is given directly. ``interpolate_antialias``
        selects torch's antialiased bicubic kernel (DINOv2 with registers).
        """
        n = self.pos_embed.shape[1] - 1
        m = int(math.sqrt(n))
        if h == w == m:
            return self.pos_embed.to(dtype)
        # at least float32 (half precision interpolates poorly), float64 stays float64
        pos = self.pos_embed.to(torch.promote_types(self.pos_embed.dtype, torch.float32))
        patch_pos = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        off = self.interpolate_offset
        if off:
            patch_pos = F.interpolate(
                patch_pos,
                scale_factor=((h + off) / m, (w + off) / m),
                mode="bicubic",
                align_corners=False,
                antialias=self.interpolate_antialias,
            )
        if patch_pos.shape[-2:] != (h, w):  # offset 0, or scale-factor rounding
            patch_pos = F.interpolate(
                patch_pos,
                size=(h, w),
                mode="bicubic",
                align_corners=False,
                antialias=self.interpolate_antialias,
            )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat((pos[:, :1], patch_pos), dim=1).to(dtype)

    def _tokens(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        h_in, w_in = x.shape[-2:]
        p = self.patch_size
        if h_in % p or w_in % p:
            if self.pad == "refuse":
                raise _checks.SSLRobustValueError(
                    f"image height and width must be multiples of the patch size {p}; got "
                    f"{h_in}×{w_in} — resize or crop the images, or build the encoder with "
                    "pad='pad'"
                )
            x = F.pad(x, (0, (-w_in) % p, 0, (-h_in) % p))
        h, w = x.shape[-2] // p, x.shape[-1] // p
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(x.shape[0], -1, -1).to(tokens.dtype), tokens), 1)
        tokens = tokens + self.interpolate_pos_encoding(h, w, tokens.dtype)
        if self.register_tokens is not None:
            regs = self.register_tokens.expand(x.shape[0], -1, -1).to(tokens.dtype)
            tokens = torch.cat((tokens[:, :1], regs, tokens[:, 1:]), dim=1)
        return tokens, (h, w)

    def forward_features(self, x: Tensor) -> EncoderOutput:
        tokens, grid = self._tokens(x)
        last = _check_block_span(self.output_layer, self.n_last_blocks, self.depth)
        kept = []
        for i, blk in enumerate(self.blocks[: last + 1]):
            tokens = blk(tokens)
            if i > last - self.n_last_blocks:
                kept.append(self.norm(tokens) if self.output_norm else tokens)
        tokens = kept[0] if len(kept) == 1 else torch.cat(kept, dim=-1)
        return EncoderOutput(
            cls=tokens[:, 0], patches=tokens[:, 1 + self.num_register_tokens :], grid=grid
        )

    def extra_repr(self) -> str:
        return (
            f"patch_size={self.patch_size}, embed_dim={self.embed_dim}, depth={self.depth}, "
            f"num_heads={self.num_heads}, registers={self.num_register_tokens}, "
            f"output_layer={self.output_layer}, output_norm={self.output_norm}, "
            f"n_last_blocks={self.n_last_blocks}"
        )


def _check_block_span(output_layer: int, n_last_blocks: int, depth: int) -> int:
    """Index of the last block used; refuses spans that start before the first block."""
    last = output_layer % depth
    if n_last_blocks > last + 1:
        raise _checks.SSLRobustValueError(
            f"n_last_blocks={n_last_blocks} blocks ending at output_layer={output_layer} need "
            f"at least {n_last_blocks} blocks up to it; the model has {last + 1} (depth={depth})"
        )
    return last

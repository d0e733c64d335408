"""Test-only reference ViTs written from the official DINO / DINOv2 arithmetic.

They share parameter names with the official models, so a state dict moves between them and
ssl_robust's VisionTransformer. They also stand in for torch.hub modules when testing ``wrap``:
``RefDinoV1`` exposes DINO v1's methods (``prepare_tokens``, ``get_intermediate_layers``,
``forward`` → normed CLS), ``RefDinoV2`` DINOv2's (``prepare_tokens_with_masks``,
``forward_features`` → dict, ``get_intermediate_layers``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Attn(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * hd**-0.5).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class _Gamma(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(d))


class _Mlp(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, ls: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = _Attn(d, heads)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = _Mlp(d)
        self.ls = ls
        if ls:
            self.ls1 = _Gamma(d)
            self.ls2 = _Gamma(d)

    def forward(self, x: Tensor) -> Tensor:
        a = self.attn(self.norm1(x))
        x = x + (a * self.ls1.gamma if self.ls else a)
        m = self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))
        return x + (m * self.ls2.gamma if self.ls else m)


class _PatchEmbed(nn.Module):
    def __init__(self, p: int, d: int) -> None:
        super().__init__()
        self.patch_size = p
        self.proj = nn.Conv2d(3, d, p, p)


class _RefViT(nn.Module):
    def __init__(
        self,
        *,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        layerscale: bool,
        mask_token: bool,
        num_register_tokens: int = 0,
        interpolate_offset: float = 0.1,
        interpolate_antialias: bool = False,
    ) -> None:
        super().__init__()
        d = embed_dim
        self.embed_dim = d
        self.patch_embed = _PatchEmbed(patch_size, d)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, (img_size // patch_size) ** 2 + 1, d))
        if num_register_tokens:
            self.register_tokens = nn.Parameter(torch.randn(1, num_register_tokens, d))
        if mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, d))
        self.num_register_tokens = num_register_tokens
        self.blocks = nn.ModuleList(_Block(d, num_heads, layerscale) for _ in range(depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.interpolate_offset = interpolate_offset
        self.interpolate_antialias = interpolate_antialias

    def _pos(self, x: Tensor, w: int, h: int) -> Tensor:
        # Official naming: the input is unpacked as (B, C, w, h), so "w" is the height.
        npatch = x.shape[1] - 1
        n = self.pos_embed.shape[1] - 1
        if npatch == n and w == h:
            return self.pos_embed
        m = int(math.sqrt(n))
        p = self.patch_embed.patch_size
        w0, h0 = w // p, h // p
        grid = self.pos_embed[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
        off = self.interpolate_offset
        kwargs: dict[str, object] = (
            {"scale_factor": ((w0 + off) / m, (h0 + off) / m)} if off else {"size": (w0, h0)}
        )
        grid = F.interpolate(
            grid,
            mode="bicubic",
            antialias=self.interpolate_antialias,
            **kwargs,  # type: ignore[arg-type]
        )
        assert grid.shape[-2:] == (w0, h0)
        grid = grid.permute(0, 2, 3, 1).reshape(1, w0 * h0, -1)
        return torch.cat((self.pos_embed[:, :1], grid), dim=1)

    def _prepare(self, x: Tensor) -> Tensor:
        _, _, w, h = x.shape
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat((self.cls_token.expand(t.shape[0], -1, -1), t), dim=1)
        t = t + self._pos(t, w, h)
        if self.num_register_tokens:
            regs = self.register_tokens.expand(t.shape[0], -1, -1)
            t = torch.cat((t[:, :1], regs, t[:, 1:]), dim=1)
        return t

    def all_blocks(self, x: Tensor) -> list[Tensor]:
        """Token sequence after each block (un-normed), registers included."""
        t = self._prepare(x)
        outs = []
        for blk in self.blocks:
            t = blk(t)
            outs.append(t)
        return outs


class RefDinoV1(_RefViT):
    """DINO v1-like module: ``forward`` returns the normed CLS token."""

    def prepare_tokens(self, x: Tensor) -> Tensor:
        return self._prepare(x)

    def get_intermediate_layers(self, x: Tensor, n: int = 1) -> list[Tensor]:
        return [self.norm(t) for t in self.all_blocks(x)[-n:]]

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.all_blocks(x)[-1])[:, 0]


class RefDinoV2(_RefViT):
    """DINOv2-like module: ``forward_features`` returns the official dict."""

    @property
    def patch_size(self) -> int:
        return self.patch_embed.patch_size

    def prepare_tokens_with_masks(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        return self._prepare(x)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        t = self.all_blocks(x)[-1]
        xn = self.norm(t)
        r = self.num_register_tokens
        return {
            "x_norm_clstoken": xn[:, 0],
            "x_norm_regtokens": xn[:, 1 : r + 1],
            "x_norm_patchtokens": xn[:, r + 1 :],
            "x_prenorm": t,
            "masks": None,  # type: ignore[dict-item]
        }

    def get_intermediate_layers(self, x: Tensor, n: int = 1) -> tuple[Tensor, ...]:
        r = self.num_register_tokens
        return tuple(self.norm(t)[:, 1 + r :] for t in self.all_blocks(x)[-n:])

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)["x_norm_clstoken"]


def dinov1_ref(seed: int = 0, **kw: object) -> RefDinoV1:
    torch.manual_seed(seed)
    opts: dict[str, object] = dict(
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=2,
        num_heads=2,
        layerscale=False,
        mask_token=False,
    )
    opts.update(kw)
    return RefDinoV1(**opts).eval()  # type: ignore[arg-type]


def dinov2_ref(seed: int = 0, **kw: object) -> RefDinoV2:
    torch.manual_seed(seed)
    opts: dict[str, object] = dict(
        img_size=28,
        patch_size=7,
        embed_dim=32,
        depth=2,
        num_heads=2,
        layerscale=True,
        mask_token=True,
    )
    opts.update(kw)
    model = RefDinoV2(**opts).eval()  # type: ignore[arg-type]
    with torch.no_grad():  # non-trivial LayerScale so that a missing gamma is noticed
        for blk in model.blocks:
            blk.ls1.gamma.uniform_(0.5, 1.5)
            blk.ls2.gamma.uniform_(0.5, 1.5)
    return model

"""Synthetic dense scenes and small fitted dense models shared by the dense-task tests."""

from __future__ import annotations

import functools

import torch

from ssl_robust.adaptors import LinearDepther, LinearSegmenter, TaskModel
from ssl_robust.encoders import VisionTransformer
from ssl_robust.losses import depth_loss

NUM_CLASSES = 3
COLOURS = torch.tensor([[0.45, 0.45, 0.45], [0.9, 0.15, 0.1], [0.1, 0.2, 0.9]])
DEPTHS = torch.tensor([6.0, 1.5, 3.0])


def scenes(
    n: int, size: int = 16, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coloured rectangles on a grey background: images (n,3,s,s), masks (n,s,s), depth (n,s,s)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for cls in (1, 2):
        lo = torch.randint(0, size // 2, (n, 2), generator=g)
        ext = torch.randint(size // 4, size // 2 + 1, (n, 2), generator=g)
        inside = (
            (yy >= lo[:, 0, None, None])
            & (yy < (lo[:, 0] + ext[:, 0])[:, None, None])
            & (xx >= lo[:, 1, None, None])
            & (xx < (lo[:, 1] + ext[:, 1])[:, None, None])
        )
        masks[inside] = cls
    images = COLOURS[masks].permute(0, 3, 1, 2)
    images = (images + 0.05 * torch.randn(images.shape, generator=g)).clamp(0, 1)
    depth = DEPTHS[masks] + 0.5 * yy / size
    return images, masks, depth


def encoder(seed: int = 0, size: int = 16) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(img_size=size, patch_size=4, embed_dim=32, depth=2, num_heads=2).eval()


def _fit_head(
    model: TaskModel, images: torch.Tensor, target: torch.Tensor, loss_fn, steps: int
) -> TaskModel:  # type: ignore[no-untyped-def]
    """Fit the head on cached features (fast; ``fit()`` itself is tested in test_fit.py)."""
    with torch.no_grad():
        feats = model.encoder(images)
    opt = torch.optim.Adam(model.adaptor.parameters(), lr=5e-2)
    model.adaptor.train()
    for _ in range(steps):
        loss = loss_fn(model.adaptor(feats, (images.shape[2], images.shape[3])), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@functools.cache
def fitted_segmenter() -> TaskModel:
    images, masks, _ = scenes(32, seed=1)
    model = TaskModel(encoder(), LinearSegmenter(32, NUM_CLASSES))
    return _fit_head(model, images, masks, torch.nn.functional.cross_entropy, 60)


@functools.cache
def fitted_depther() -> TaskModel:
    images, _, depth = scenes(32, seed=1)
    model = TaskModel(encoder(), LinearDepther(32, max_depth=8.0, bins=32))
    return _fit_head(model, images, depth, lambda p, t: depth_loss(p, t).mean(), 60)

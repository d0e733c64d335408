"""Shared fixtures: tiny models that keep the suite fast (no downloads, small images)."""

from __future__ import annotations

import pytest
import torch

from ssl_robust.adaptors import LinearClassifier, TaskModel
from ssl_robust.encoders import VisionTransformer


def tiny_vit(seed: int = 0, **kw: object) -> VisionTransformer:
    """A 2-block ViT on 16×16 images with 4×4 patches (16 patches), deterministic weights."""
    torch.manual_seed(seed)
    opts: dict[str, object] = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
    opts.update(kw)
    return VisionTransformer(**opts)  # type: ignore[arg-type]


@pytest.fixture
def vit() -> VisionTransformer:
    return tiny_vit().eval()


@pytest.fixture
def classifier(vit: VisionTransformer) -> TaskModel:
    torch.manual_seed(1)
    head = LinearClassifier(vit.embed_dim, 5)
    torch.nn.init.normal_(head.linear.weight, std=1.0)
    return TaskModel(vit, head).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def labels() -> torch.Tensor:
    return torch.tensor([0, 1, 2, 3, 4, 0])

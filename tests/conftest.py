"""Shared fixtures: tiny models that keep the suite fast (no downloads, small images)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

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


def shapes_entry(
    tasks: tuple[str, ...] = ("classification", "segmentation", "depth"), *, size: int = 16
) -> Any:
    """A benchmark dataset entry (``DatasetSpec``) of ``size`` 16-px ``shapes`` scenes named
    "shapes"."""
    from ssl_robust.bench.spec import DatasetSpec  # lazily: conftest loads for every test

    return DatasetSpec(
        name="shapes", dataset="shapes", tasks=tasks, image_size=16, options={"size": size}
    )


def linear_classifier(classes: int = 6, *, seed: int = 0) -> torch.nn.Sequential:
    """Logits of one linear layer on flattened (3, 8, 8) images: many attack steps stay fast."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, classes))


def tanh_linear_model(
    seed: int = 0, classes: int = 4, dtype: torch.dtype = torch.float64
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Bounded logits ``5 tanh(0.3 W x)`` of (3, 8, 8) images, float64 by default (exact checks
    of the attack loop); weights from their own generator."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(classes, 3 * 8 * 8, generator=g, dtype=dtype)

    def model(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x.flatten(1) @ w.T * 0.3) * 5

    return model


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run tiny models single-threaded (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    on a loaded 2-core machine intra-op threads spin against each other and make small ops
    10-100x slower. Restored after the module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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

"""Tiny trained models and deliberately broken versions of them (gradient masking, randomness,
probability outputs) for the Square, EOT and check_evaluation tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CLASSES = 4


def template_data(n: int, *, seed: int, classes: int = CLASSES) -> tuple[Tensor, Tensor]:
    """(3, 8, 8) images: a class template (fixed) plus noise, in [0, 1]; labels (n,)."""
    g = torch.Generator().manual_seed(1234)
    templates = torch.rand(classes, 3, 8, 8, generator=g)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = 0.5 + 0.35 * (templates[y] - 0.5) + 0.15 * torch.randn(n, 3, 8, 8, generator=g)
    return x.clamp(0, 1), y


_CACHE: dict[str, nn.Module] = {}


def trained_classifier() -> nn.Module:
    """A linear classifier trained on :func:`template_data` (clean accuracy ~1, not robust at
    eps 0.1): a properly trained, unmasked model. Cached per process; eval mode."""
    if "clf" not in _CACHE:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, CLASSES))
        x, y = template_data(512, seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(150):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        model.eval().requires_grad_(False)
        _CACHE["clf"] = model
    return _CACHE["clf"]


class _ZeroGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:  # type: ignore[override]
        return torch.zeros_like(grad)


class ZeroBackward(nn.Module):
    """The real model in the forward pass; the backward pass returns zero for the input."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(_ZeroGrad.apply(x))  # type: ignore[no-any-return]


class Quantized(nn.Module):
    """A rounding preprocessor (``levels`` grey levels) before the model: no gradient reaches
    the input (``round`` has zero derivative almost everywhere)."""

    def __init__(self, model: nn.Module, levels: int = 8) -> None:
        super().__init__()
        self.model, self.levels = model, levels
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(torch.round(x * (self.levels - 1)) / (self.levels - 1))  # type: ignore[no-any-return]


class Noisy(nn.Module):
    """Gaussian input noise of std ``sigma`` on every forward (global RNG): randomized."""

    def __init__(self, model: nn.Module, sigma: float = 0.3) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x + self.sigma * torch.randn_like(x))  # type: ignore[no-any-return]


class Softmax(nn.Module):
    """Probabilities instead of logits (saturated: logits scaled by ``scale`` first)."""

    def __init__(self, model: nn.Module, scale: float = 1.0) -> None:
        super().__init__()
        self.model, self.scale = model, scale
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.model(x) * self.scale, dim=1)


class TinySegmenter(nn.Module):
    """Per-pixel logits from the pixel's colour: class 1 where red > green, else 0 (trained
    weights given, 2 classes) at the image resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[1, 0] = 20.0
            self.conv.weight[1, 1] = -20.0
            self.conv.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)  # type: ignore[no-any-return]


def seg_data(n: int, *, seed: int) -> tuple[Tensor, Tensor]:
    """Images (n, 3, 8, 8) whose red/green difference is ±0.15 per pixel, and the masks."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g) * 0.4 + 0.3
    sign = torch.randint(0, 2, (n, 8, 8), generator=g)
    x[:, 0] = x[:, 1] + (sign.float() * 2 - 1) * 0.15
    return x.clamp(0, 1), sign.long()

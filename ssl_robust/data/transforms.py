"""Joint transforms: image, mask and depth of a :class:`Sample` move together.

Built on ``torchvision.transforms.v2.functional`` and ``tv_tensors``: the image is resized
bilinearly (with antialiasing), masks and depth maps with nearest neighbour (so no new class ids
and no depth blended across edges). Random transforms draw from their own ``torch.Generator``
(seeded by ``seed``; inside DataLoader workers the worker's seed is folded in), never from the
global RNG.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision import tv_tensors

from .. import _checks
from .base import Sample

__all__ = [
    "CenterCrop",
    "Compose",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "eval_transform",
    "train_transform",
]

_Fn = Callable[[Tensor], Tensor]


def _apply(sample: Sample, fn: Callable[[Tensor], Tensor]) -> Sample:
    """Apply ``fn`` to the image (as tv_tensors.Image) and mask/depth (as tv_tensors.Mask)."""
    out = Sample(image=fn(tv_tensors.Image(sample["image"])).as_subclass(Tensor))
    if "label" in sample:
        out["label"] = sample["label"]
    if "mask" in sample:
        out["mask"] = fn(tv_tensors.Mask(sample["mask"][None])).as_subclass(Tensor)[0]
    if "depth" in sample:
        out["depth"] = fn(tv_tensors.Mask(sample["depth"][None])).as_subclass(Tensor)[0]
    return out


def _size(size: int | Sequence[int]) -> list[int]:
    sides = [size, size] if isinstance(size, int) else list(size)
    if len(sides) != 2:
        raise _checks.SSLRobustValueError(f"size must be an int or (H, W); got {size!r}")
    return [_checks.check_int("size", s, minimum=1) for s in sides]


class Compose:
    """Apply joint transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample


class Resize:
    """Resize to ``size`` ((H, W), or the shorter side when an int and ``shorter=True``)."""

    def __init__(self, size: int | Sequence[int], *, shorter: bool = False) -> None:
        self.size = [size] if shorter and isinstance(size, int) else _size(size)

    def __call__(self, sample: Sample) -> Sample:
        return _apply(sample, lambda t: TF.resize(t, self.size, antialias=True))


class CenterCrop:
    """Central crop of ``size`` (padded with zeros / ignore when the input is smaller)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _size(size)

    def __call__(self, sample: Sample) -> Sample:
        return _pad_ignore(sample, self.size, lambda t: TF.center_crop(t, self.size))


def _pad_ignore(sample: Sample, size: list[int], fn: _Fn) -> Sample:
    h, w = sample["image"].shape[-2:]
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if ph or pw:
        padded = _apply(sample, lambda t: TF.pad(t, [0, 0, pw, ph], fill=0))
        if "mask" in sample:
            padded["mask"] = TF.pad(sample["mask"][None], [0, 0, pw, ph], fill=255)[0]
        sample = padded
    return _apply(sample, fn)


class _Random:
    def __init__(self, seed: int) -> None:
        self.seed = _checks.check_int("seed", seed, minimum=0)
        self._gen: torch.Generator | None = None
        self._worker: int | None = None

    def _rng(self) -> torch.Generator:
        info = torch.utils.data.get_worker_info()
        worker_seed = None if info is None else int(info.seed)
        if self._gen is None or worker_seed != self._worker:
            mixed = self.seed if worker_seed is None else (self.seed * 1_000_003 + worker_seed)
            self._gen = torch.Generator().manual_seed(mixed % (2**63))
            self._worker = worker_seed
        return self._gen


class RandomCrop(_Random):
    """Random crop of ``size`` (inputs smaller than ``size`` are padded first, masks with 255)."""

    def __init__(self, size: int | Sequence[int], *, seed: int = 0) -> None:
        super().__init__(seed)
        self.size = _size(size)

    def __call__(self, sample: Sample) -> Sample:
        h, w = sample["image"].shape[-2:]
        g = self._rng()
        top = int(torch.randint(max(h - self.size[0], 0) + 1, (), generator=g))
        left = int(torch.randint(max(w - self.size[1], 0) + 1, (), generator=g))
        return _pad_ignore(
            sample, self.size, lambda t: TF.crop(t, top, left, self.size[0], self.size[1])
        )


class RandomHorizontalFlip(_Random):
    """Mirror image, mask and depth together with probability ``p``."""

    def __init__(self, p: float = 0.5, *, seed: int = 0) -> None:
        super().__init__(seed)
        self.p = float(p)

    def __call__(self, sample: Sample) -> Sample:
        if float(torch.rand((), generator=self._rng())) < self.p:
            return _apply(sample, TF.horizontal_flip)
        return sample


def eval_transform(size: int | Sequence[int]) -> Compose:
    """Resize the shorter side to ``size`` then center-crop to ``size`` × ``size`` (or (H, W))."""
    sides = _size(size)
    return Compose([Resize(min(sides), shorter=True), CenterCrop(sides)])


def train_transform(size: int | Sequence[int], *, flip: bool = True, seed: int = 0) -> Compose:
    """Shorter side to ``size``, random crop, random horizontal flip (the paper's presets)."""
    sides = _size(size)
    steps: list[Callable[[Sample], Sample]] = [
        Resize(min(sides), shorter=True),
        RandomCrop(sides, seed=seed),
    ]
    if flip:
        steps.append(RandomHorizontalFlip(0.5, seed=seed + 1))
    return Compose(steps)

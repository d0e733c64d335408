"""Joint transforms on torchvision transforms v2: image, mask and depth move together.

Datasets return samples whose fields are ``tv_tensors`` (``Image``, ``Mask`` and
:class:`~ssl_robust.data.DepthMap`), so any torchvision v2 pipeline works on them as it is::

    from torchvision.transforms import v2
    t = v2.Compose([v2.RandomResizedCrop(224), v2.RandomHorizontalFlip()])
    ds = create_dataset("shapes", transform=t)

Images are resized bilinearly (antialiased), masks and depth with nearest neighbour (no new class
ids, no depth blended across edges); photometric transforms touch the image only.

This module adds only what torchvision lacks: :class:`PadIfSmaller` (pad bottom/right with the
ignore index for masks and 0 for depth), :class:`Seeded` (run any transform on its own seeded
random stream, not the global RNG) and the paper's presets :func:`eval_transform` and
:func:`train_transform`, which are ``v2.Compose`` pipelines of torchvision's own transforms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from .. import _checks
from .base import DepthMap, Sample, as_tv_tensors

__all__ = [
    "DepthMap",
    "PadIfSmaller",
    "Seeded",
    "as_tv_tensors",
    "eval_transform",
    "train_transform",
]


def _size(size: int | Sequence[int]) -> list[int]:
    sides = [size, size] if isinstance(size, int) else list(size)
    if len(sides) != 2:
        raise _checks.SSLRobustValueError(f"size must be an int or (H, W); got {size!r}")
    return [_checks.check_int("size", s, minimum=1) for s in sides]


class PadIfSmaller:
    """Pad a sample at the bottom and right up to ``size`` where it is smaller (never crops).

    Image and depth are padded with 0 (the mean colour after normalization is not 0, but 0 is
    what the crop presets have always used; depth 0 = invalid), masks with ``ignore_index``, so
    padded pixels count in no metric and no loss.

    Args:
        size: the minimum (H, W), or one int for both.
        ignore_index: the mask value of padded pixels.

    Example:
        >>> import torch
        >>> s = as_tv_tensors({"image": torch.rand(3, 2, 2), "mask": torch.zeros(2, 2).long()})
        >>> out = PadIfSmaller((2, 3))(s)
        >>> out["mask"].tolist()
        [[0, 0, 255], [0, 0, 255]]
    """

    def __init__(self, size: int | Sequence[int], *, ignore_index: int = 255) -> None:
        self.size = _size(size)
        self.ignore_index = _checks.check_int("ignore_index", ignore_index)

    def __call__(self, sample: Sample) -> Sample:
        h, w = sample["image"].shape[-2:]
        ph, pw = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if not (ph or pw):
            return sample
        fill = {
            tv_tensors.Image: 0.0,
            tv_tensors.Mask: float(self.ignore_index),
            DepthMap: 0.0,
            "others": 0.0,
        }
        out: Sample = v2.Pad([0, 0, pw, ph], fill=fill)(as_tv_tensors(sample))  # type: ignore[arg-type]
        return out

    def __repr__(self) -> str:
        return f"PadIfSmaller(size={self.size}, ignore_index={self.ignore_index})"


class Seeded:
    """Run a transform on its own random stream, seeded by ``seed``, not the global RNG.

    torchvision's random transforms draw from the global torch RNG. ``Seeded(t, seed=s)`` draws
    one seed per call from its own ``torch.Generator`` and runs ``t`` inside
    ``torch.random.fork_rng`` seeded with it: the same ``seed`` gives the same augmentation
    stream, and the caller's global RNG state is left exactly as it was. Inside DataLoader
    workers the worker's seed is folded in, so workers draw different streams.

    Args:
        transform: any callable (a v2 transform, a ``v2.Compose``, a function).
        seed: seed of the stream (>= 0).

    Example:
        >>> import torch
        >>> from torchvision.transforms import v2
        >>> x = torch.arange(4.0).view(1, 1, 4)
        >>> def stream(seed):
        ...     flip = Seeded(v2.RandomHorizontalFlip(), seed=seed)
        ...     return [flip(x)[0, 0, 0].item() for _ in range(6)]
        >>> state = torch.get_rng_state()
        >>> stream(0) == stream(0)
        True
        >>> torch.equal(state, torch.get_rng_state())  # the global RNG is untouched
        True
    """

    def __init__(self, transform: Callable[..., Any], *, seed: int = 0) -> None:
        if not callable(transform):
            raise _checks.SSLRobustTypeError(
                f"transform must be callable; got {type(transform).__name__}"
            )
        self.transform = transform
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

    def __call__(self, *inputs: Any) -> Any:
        seed = int(torch.randint(0, 2**62, (), generator=self._rng()))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(*inputs)

    def __repr__(self) -> str:
        return f"Seeded({self.transform!r}, seed={self.seed})"


def eval_transform(size: int | Sequence[int], *, ignore_index: int = 255) -> v2.Compose:
    """Shorter side to ``size``, then the central (H, W) crop (padded where smaller).

    Returns ``v2.Compose([as_tv_tensors, v2.Resize(min(H, W)), PadIfSmaller((H, W)),
    v2.CenterCrop((H, W))])``.

    Example:
        >>> import torch
        >>> s = {"image": torch.rand(3, 40, 60), "mask": torch.zeros(40, 60, dtype=torch.long)}
        >>> out = eval_transform(24)(s)
        >>> tuple(out["image"].shape), tuple(out["mask"].shape)
        ((3, 24, 24), (24, 24))
    """
    sides = _size(size)
    return v2.Compose(
        [
            as_tv_tensors,
            v2.Resize(min(sides), antialias=True),
            PadIfSmaller(sides, ignore_index=ignore_index),
            v2.CenterCrop(sides),
        ]
    )


def train_transform(
    size: int | Sequence[int], *, flip: bool = True, seed: int = 0, ignore_index: int = 255
) -> v2.Compose:
    """Shorter side to ``size``, random (H, W) crop, random horizontal flip (the paper's presets).

    Returns ``v2.Compose([as_tv_tensors, v2.Resize(min(H, W)), PadIfSmaller((H, W)),
    Seeded(v2.Compose([v2.RandomCrop((H, W)), v2.RandomHorizontalFlip()]), seed=seed)])``:
    the same ``seed`` gives the same augmentation stream; the global RNG is not used.
    """
    sides = _size(size)
    random: list[Callable[..., Any]] = [v2.RandomCrop(sides)]
    if flip:
        random.append(v2.RandomHorizontalFlip(0.5))
    return v2.Compose(
        [
            as_tv_tensors,
            v2.Resize(min(sides), antialias=True),
            PadIfSmaller(sides, ignore_index=ignore_index),
            Seeded(v2.Compose(random), seed=seed),
        ]
    )

"""Frozen-encoder features computed once for ``fit`` when no augmentation needs them anew.

With a frozen encoder and no random crop, a head-training epoch only needs the encoder's
features of each training image, or of its flipped versions when flips are on (at most four:
none, horizontal, vertical, both). :class:`FeatureCache` computes them once, in dataset order,
then replays every epoch from the loader's own batch sampler (the same shuffle, drawn from the
loader's generator) and the same flip draws as the image path, so training sees the same
batches and augmentations at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .. import _checks
from ..data.batches import unpack_batch
from ..encoders.base import EncoderOutput

__all__ = ["FeatureCache"]

Combo = tuple[bool, bool]


def _flip(x: Tensor, which: Tensor, dim: int) -> Tensor:
    return torch.where(which.view(-1, *([1] * (x.ndim - 1))), x.flip(dim), x)


class FeatureCache:
    """Features of every training sample (per flip combination) and the targets.

    Build with :meth:`build`, which returns None when the loader cannot be replayed (not a
    DataLoader over a map-style dataset) or the cache would exceed ``max_bytes``.
    """

    def __init__(
        self,
        loader: torch.utils.data.DataLoader[Any],
        feats: dict[Combo, tuple[Tensor, Tensor]],
        grid: tuple[int, int],
        targets: Tensor,
        size: tuple[int, int],
    ) -> None:
        self.loader, self.feats, self.grid = loader, feats, grid
        self.targets, self.size = targets, size

    @staticmethod
    def build(
        loader: object,
        encoder: nn.Module,
        *,
        target_key: str,
        prepare: Callable[[Tensor, Any], tuple[Tensor, Tensor]],
        flips: tuple[bool, bool],
        crop_hw: tuple[int, int],
        device: torch.device,
        max_bytes: int,
    ) -> FeatureCache | None:
        """Compute the cache, or return None when it does not apply (see the class)."""
        if not isinstance(loader, torch.utils.data.DataLoader) or isinstance(
            loader.dataset, torch.utils.data.IterableDataset
        ):
            return None
        n = len(loader.dataset)  # type: ignore[arg-type]
        combos = [
            (h, v) for h in (False, True)[: 1 + flips[0]] for v in (False, True)[: 1 + flips[1]]
        ]
        ordered = torch.utils.data.DataLoader(
            loader.dataset, batch_size=loader.batch_size or 64, collate_fn=loader.collate_fn
        )
        parts: dict[Combo, list[tuple[Tensor, Tensor]]] = {c: [] for c in combos}
        targets: list[Tensor] = []
        grid, size = (0, 0), (0, 0)
        with torch.no_grad():
            for batch in ordered:
                images, target = unpack_batch(batch, target=target_key, where="fit's loader")
                images, target = prepare(_checks.check_image_tensor(images), target)
                size = (int(images.shape[2]), int(images.shape[3]))
                if crop_hw[0] < size[0] or crop_hw[1] < size[1]:
                    return None  # random crops: features change every epoch
                for h, v in combos:
                    x = images.flip(-1) if h else images
                    out = encoder(x.flip(-2) if v else x)
                    parts[(h, v)].append((out.cls, out.patches))
                    grid = out.grid
                targets.append(target)
                per_sample = sum(t.numel() * t.element_size() for t in parts[combos[0]][0])
                if per_sample / images.shape[0] * n * len(combos) > max_bytes:
                    return None
        if not targets:
            return None
        feats = {
            c: (torch.cat([p[0] for p in v]), torch.cat([p[1] for p in v]))
            for c, v in parts.items()
        }
        return FeatureCache(loader, feats, grid, torch.cat(targets), size)

    def epoch(
        self, flips: tuple[bool, bool], generator: torch.Generator, device: torch.device
    ) -> Iterator[tuple[EncoderOutput, Tensor, tuple[int, int]]]:
        """One epoch of ``(features, target, image size)`` batches, replaying the loader."""
        indices: list[int] = list(range(len(self.targets)))
        index_loader: torch.utils.data.DataLoader[int] = torch.utils.data.DataLoader(
            indices,  # type: ignore[arg-type]
            batch_sampler=self.loader.batch_sampler,
            generator=self.loader.generator,
        )
        for idx in index_loader:
            b = int(idx.numel())
            which = {}
            for name, on in (("h", flips[0]), ("v", flips[1])):
                if on:
                    which[name] = (torch.rand(b, generator=generator) < 0.5).to(device)
            h = which.get("h", torch.zeros(b, dtype=torch.bool, device=device))
            v = which.get("v", torch.zeros(b, dtype=torch.bool, device=device))
            idx = idx.to(device)
            cls_ref, patch_ref = self.feats[(False, False)]
            cls = cls_ref.new_empty((b, *cls_ref.shape[1:]))
            patches = patch_ref.new_empty((b, *patch_ref.shape[1:]))
            for (ch, cv), (c_all, p_all) in self.feats.items():
                sel = ((h == ch) & (v == cv)).nonzero().flatten()
                cls[sel] = c_all[idx[sel]]
                patches[sel] = p_all[idx[sel]]
            target = self.targets[idx]
            if target.ndim >= 3:  # dense targets follow the flips of their images
                target = _flip(_flip(target, h, -1), v, -2)
            yield EncoderOutput(cls, patches, self.grid), target, self.size

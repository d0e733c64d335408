"""Data plumbing of the benchmark runner: datasets to tensors, atomic writes, ranks."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .. import _checks
from ..data import create_dataset, eval_transform
from ..data.base import DatasetInfo, SampleDataset
from .spec import DatasetSpec

__all__ = [
    "DeviceLoader",
    "EvalData",
    "ImagesOnly",
    "PairDataset",
    "atomic_save",
    "atomic_write_json",
    "barrier",
    "batches",
    "dataset_info",
    "load_tensors",
    "open_dataset",
    "open_images",
    "preset_batch",
    "progress_bar",
    "rank_world",
]


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    if rank_world()[1] > 1:
        dist.barrier()


def atomic_write_json(obj: object, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


def atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled or rank_world()[0] != 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ModuleNotFoundError:
        return None
    return tqdm(total=total, desc=desc, leave=False)


@dataclass
class EvalData:
    """An evaluation subset held in memory (this rank's shard)."""

    images: Tensor
    targets: dict[str, Tensor]
    info: DatasetInfo


def open_dataset(ds: DatasetSpec, split: str, *, subset: int | None, seed: int) -> SampleDataset:
    """The ``split`` of a spec's dataset at its image size (see :func:`open_images`)."""
    return open_images(
        ds.dataset,
        ds.root,
        split,
        image_size=ds.image_size,
        options=ds.options,
        subset=subset,
        seed=seed,
    )


def open_images(
    name: str,
    root: str | None,
    split: str,
    *,
    image_size: int,
    options: Mapping[str, Any],
    subset: int | None,
    seed: int,
) -> SampleDataset:
    """A registry dataset at a fixed size: ``shapes`` renders at it, the others are resized
    (shorter side) and centre-cropped to it, so samples batch together."""
    opts = dict(options)
    transform = None
    if name == "shapes":
        opts.setdefault("image_size", image_size)
    else:
        transform = eval_transform(image_size)
    return create_dataset(name, root, split, transform=transform, subset=subset, seed=seed, **opts)


def dataset_info(dataset: SampleDataset) -> DatasetInfo:
    info = getattr(dataset, "info", None)
    while info is None and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
        info = getattr(dataset, "info", None)
    if not isinstance(info, DatasetInfo):
        raise _checks.SSLRobustValueError("the dataset does not describe itself (no .info)")
    return info


def load_tensors(
    dataset: SampleDataset, indices: list[int], keys: tuple[str, ...]
) -> dict[str, Tensor]:
    samples = [dataset[i] for i in indices]
    out = {"image": torch.stack([s["image"] for s in samples]) if samples else torch.empty(0)}
    for key in keys:
        out[key] = torch.stack([s[key] for s in samples])  # type: ignore[literal-required]
    return out


def batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class PairDataset(torch.utils.data.Dataset[tuple[Tensor, Tensor]]):
    """(image, target) pairs of one task, for head training."""

    def __init__(self, dataset: SampleDataset, key: str) -> None:
        self.dataset, self.key = dataset, key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        s = self.dataset[i]
        return s["image"], s[self.key]  # type: ignore[literal-required]


def preset_batch(task: str) -> int:
    from ..adaptors.training import PRESETS

    return PRESETS[task].batch_size


class ImagesOnly(torch.utils.data.Dataset[Tensor]):
    def __init__(self, dataset: SampleDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Tensor:
        return self.dataset[i]["image"]


class DeviceLoader:
    """Re-iterable loader that moves (images, target) batches to a device."""

    def __init__(self, loader: torch.utils.data.DataLoader[Any], device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self.loader:
            yield x.to(self.device), y.to(self.device)

    def __len__(self) -> int:
        return len(self.loader)

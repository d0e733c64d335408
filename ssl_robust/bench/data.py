"""The benchmark's datasets: a spec entry's split at its image size, and its facts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchvision.transforms import v2

from .. import _checks
from ..data import as_tv_tensors, create_dataset, eval_transform
from ..data.base import DatasetInfo, Sample, SampleDataset
from .spec import DatasetSpec, check_dataset_options

__all__ = ["InMemory", "dataset_info", "open_dataset", "open_images"]


def open_dataset(
    ds: DatasetSpec, split: str, *, subset: int | None, seed: int, full: bool = False
) -> SampleDataset:
    """The ``split`` of a spec's dataset at its image size (see :func:`open_images`); with
    ``full``, whole images (shorter side resized, no crop)."""
    return open_images(
        ds.dataset,
        ds.root,
        split,
        image_size=ds.image_size,
        options=ds.options,
        subset=subset,
        seed=seed,
        full=full,
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
    full: bool = False,
) -> SampleDataset:
    """A registry dataset at a fixed size: ``shapes`` renders at it, the others are resized
    (shorter side) and centre-cropped to it, so samples batch together; with ``full`` they
    are only resized (shorter side to ``image_size``, aspect kept: whole images)."""
    check_dataset_options(options, f"the options of dataset {name!r}")
    opts = dict(options)
    transform: Any = None
    if name == "shapes":
        opts.setdefault("image_size", image_size)
    elif full:
        transform = v2.Compose([as_tv_tensors, v2.Resize(image_size, antialias=True)])
    else:
        transform = eval_transform(image_size)
    return create_dataset(name, root, split, transform=transform, subset=subset, seed=seed, **opts)


class InMemory(SampleDataset):
    """A dataset whose samples are kept once loaded (rendered ``shapes`` scenes, decoded
    images): every later epoch, head and encoder reads them from memory. For subsets that fit
    in memory; the runner uses it for the training subsets of the heads and the evaluation
    subset, which every encoder shares."""

    def __init__(self, dataset: SampleDataset) -> None:
        super().__init__(transform=None)
        self.dataset = dataset
        self.info = dataset_info(dataset)
        self._cache: dict[int, Sample] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def _load(self, index: int) -> Sample:
        if index not in self._cache:
            self._cache[index] = self.dataset[index]
        return self._cache[index]


def dataset_info(dataset: SampleDataset) -> DatasetInfo:
    """The :class:`~ssl_robust.data.DatasetInfo` of a dataset (looked up through subsets)."""
    info = getattr(dataset, "info", None)
    while info is None and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
        info = getattr(dataset, "info", None)
    if not isinstance(info, DatasetInfo):
        raise _checks.SSLRobustValueError("the dataset does not describe itself (no .info)")
    return info

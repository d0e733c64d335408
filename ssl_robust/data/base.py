"""What every ssl_robust dataset returns, and deterministic evaluation subsets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset
from typing_extensions import NotRequired, TypedDict

from .. import _checks

__all__ = [
    "DatasetInfo",
    "IndexedSubset",
    "Sample",
    "SampleDataset",
    "Task",
    "subset_indices",
]

Task = Literal["classification", "segmentation", "depth"]


class Sample(TypedDict):
    """One sample: the image plus the targets of the tasks the dataset has.

    Keys:
        image: (3, H, W) float32 in [0, 1].
        label: () int64 class index (classification).
        mask: (H, W) int64 class per pixel, ``ignore_index`` (255) where unlabelled.
        depth: (H, W) float32 depth in metres, 0 where invalid.
    """

    image: Tensor
    label: NotRequired[Tensor]
    mask: NotRequired[Tensor]
    depth: NotRequired[Tensor]


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset, for building heads and metrics.

    Attributes:
        name: registry name.
        tasks: the targets its samples carry.
        num_classes: classes of the ``label`` target (0 when there is none).
        seg_classes: classes of the ``mask`` target, ``ignore_index`` excluded (0 when none).
        ignore_index: mask value of unlabelled pixels.
        min_depth: smallest valid depth in metres (depth datasets).
        max_depth: largest valid depth in metres (depth datasets).
        class_names: names of the ``label`` classes (may be empty).
    """

    name: str
    tasks: tuple[Task, ...]
    num_classes: int = 0
    seg_classes: int = 0
    ignore_index: int = 255
    min_depth: float = 1e-3
    max_depth: float = 10.0
    class_names: tuple[str, ...] = field(default=())


class SampleDataset(Dataset[Sample]):
    """Base of the ssl_robust datasets: ``__getitem__`` returns a :class:`Sample` dict.

    Subclasses implement ``__len__`` and ``_load(index) -> Sample``; the optional ``transform``
    (a joint transform, see :mod:`ssl_robust.data.transforms`) is applied to the whole sample so
    image, mask and depth stay aligned.
    """

    info: DatasetInfo

    def __init__(self, *, transform: Callable[[Sample], Sample] | None = None) -> None:
        self.transform = transform

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, index: int) -> Sample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, int) or not -n <= index < n:
            raise IndexError(f"index {index!r} out of range for a dataset of {n} samples")
        sample = self._load(index % n)
        return self.transform(sample) if self.transform is not None else sample


def subset_indices(length: int, subset: int | None, *, seed: int = 0) -> list[int]:
    """The same evaluation subset for every attack: ``subset`` indices drawn without replacement.

    The draw depends only on ``(length, subset, seed)``, through its own generator, and is
    returned sorted, so two runs (or two attacks) evaluate exactly the same samples.

    Example:
        >>> subset_indices(10, 3, seed=0) == subset_indices(10, 3, seed=0)
        True
    """
    if subset is None:
        return list(range(length))
    _checks.check_int("subset", subset, minimum=1)
    if subset >= length:
        return list(range(length))
    g = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(length, generator=g)[:subset].tolist())


class IndexedSubset(SampleDataset):
    """A fixed list of indices of another :class:`SampleDataset` (keeps ``info``)."""

    def __init__(self, dataset: SampleDataset, indices: Sequence[int]) -> None:
        super().__init__(transform=None)
        self.dataset = dataset
        self.indices = list(indices)
        self.info = dataset.info

    def __len__(self) -> int:
        return len(self.indices)

    def _load(self, index: int) -> Sample:
        return self.dataset[self.indices[index]]

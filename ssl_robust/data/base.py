"""What every ssl_robust dataset returns, and deterministic evaluation subsets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from typing_extensions import NotRequired, TypedDict

from .. import _checks

__all__ = [
    "DatasetInfo",
    "DepthMap",
    "IndexedSubset",
    "Sample",
    "SampleDataset",
    "Task",
    "as_tv_tensors",
    "subset_indices",
]

#: A task name: a plain string ("classification", "segmentation", "depth" are built in;
#: :func:`ssl_robust.tasks.register_task` adds more).
Task = str


class Sample(TypedDict):
    """One sample: the image plus the targets of the tasks the dataset has.

    Datasets return the fields as torchvision ``tv_tensors`` (see :func:`as_tv_tensors`), so
    torchvision transforms v2 move image, mask and depth together.

    Keys:
        image: (3, H, W) float32 in [0, 1], a ``tv_tensors.Image``.
        label: () int64 class index (classification), a plain tensor.
        mask: (H, W) int64 class per pixel, ``ignore_index`` (255) where unlabelled, a
            ``tv_tensors.Mask``.
        depth: (H, W) float32 depth in metres, 0 where invalid, a :class:`DepthMap`.
    """

    image: Tensor
    label: NotRequired[Tensor]
    mask: NotRequired[Tensor]
    depth: NotRequired[Tensor]


class DepthMap(tv_tensors.Mask):  # type: ignore[misc]  # torchvision is untyped here
    """A depth map (H, W) in metres: a ``tv_tensors.Mask`` whose values are never rescaled.

    As a ``Mask`` subclass it follows every geometric transform of torchvision v2 with
    nearest-neighbour resampling (no depth blended across object edges), while photometric
    transforms and ``ToDtype(..., scale=True)`` leave it alone (they touch images only).
    Padding uses the fill given for ``DepthMap`` in a fill dict, else ``"others"``, else 0
    (invalid depth).
    """


def as_tv_tensors(sample: Sample) -> Sample:
    """The sample with ``image`` as ``tv_tensors.Image``, ``mask`` as ``tv_tensors.Mask`` and
    ``depth`` as :class:`DepthMap` (``label`` stays a plain tensor).

    torchvision v2 transforms a dict sample by type: without an ``Image`` it would treat the
    first plain tensor as the image and pass the others through, so mask and depth would not
    follow. Datasets call this before their transform; fields that already have the right
    type are kept as they are (no copy).

    Example:
        >>> import torch
        >>> from torchvision.transforms import v2
        >>> s = as_tv_tensors({"image": torch.rand(3, 4, 6), "depth": torch.rand(4, 6)})
        >>> type(s["image"]).__name__, type(s["depth"]).__name__
        ('Image', 'DepthMap')
        >>> out = v2.RandomHorizontalFlip(p=1.0)(s)
        >>> torch.equal(out["depth"], s["depth"].flip(-1))
        True
    """
    out: dict[str, Any] = dict(sample.items())
    for key, kind in (("image", tv_tensors.Image), ("mask", tv_tensors.Mask), ("depth", DepthMap)):
        value = out.get(key)
        if value is not None and type(value) is not kind:
            out[key] = kind(value.as_subclass(Tensor))
    return out  # type: ignore[return-value]


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

    Subclasses implement ``__len__`` and ``_load(index) -> Sample``. The sample is turned into
    tv_tensors (:func:`as_tv_tensors`) and the optional ``transform`` is applied to the whole
    dict: any torchvision transforms v2 pipeline (``v2.Compose([v2.RandomResizedCrop(224),
    v2.RandomHorizontalFlip()])``) or the presets of :mod:`ssl_robust.data.transforms` keep
    image, mask and depth aligned.
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
        sample = as_tv_tensors(self._load(index % n))
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

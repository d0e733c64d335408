"""Dataset registry: ``create_dataset(name, root, split, **kw)`` and ``list_datasets()``."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import _checks
from .base import IndexedSubset, Sample, SampleDataset, subset_indices
from .datasets import ADE20K, CIFAR, STL10, Cityscapes, VOCSegmentation
from .hf import HFDiskDataset
from .imagenet import ImageNet
from .nyu import NYUDepthV2
from .shapes import ShapesDataset

__all__ = ["create_dataset", "list_datasets"]

_Builder = Callable[..., SampleDataset]
_REGISTRY: dict[str, _Builder] = {
    "cifar10": lambda root, split, transform: CIFAR(root, split, classes=10, transform=transform),
    "cifar100": lambda root, split, transform: CIFAR(root, split, classes=100, transform=transform),
    "stl10": STL10,
    "imagenet": ImageNet,
    "voc2012": VOCSegmentation,
    "cityscapes": Cityscapes,
    "ade20k": ADE20K,
    "nyu_depth_v2": NYUDepthV2,
    "hf_disk": HFDiskDataset,
}
# Reader options passed through create_dataset(**kw), per name.
_OPTIONS: dict[str, tuple[str, ...]] = {
    "nyu_depth_v2": ("layout", "eigen_crop", "split_file"),
    "hf_disk": (  # not `name`: create_dataset's own first argument (HFDiskDataset(name=))
        "columns", "num_classes", "seg_classes", "ignore_index", "reduce_zero_label",
        "depth_scale", "min_depth", "max_depth",
    ),
}  # fmt: skip


def list_datasets() -> list[str]:
    """Names accepted by :func:`create_dataset`, sorted.

    Example:
        >>> "shapes" in list_datasets()
        True
    """
    return sorted([*_REGISTRY, "shapes"])


def create_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    *,
    transform: Callable[[Sample], Sample] | None = None,
    subset: int | None = None,
    seed: int = 0,
    **kw: Any,
) -> SampleDataset:
    """Open a dataset by name; samples are :class:`~ssl_robust.data.Sample` dicts.

    Args:
        name: one of :func:`list_datasets`.
        root: the dataset folder (see docs/data.md for each layout); ``None`` for ``shapes``.
        split: ``"train"`` or ``"val"`` (``"val"`` reads the test split of CIFAR, STL-10 and
            NYU-Depth v2; ``"test"`` is accepted where the dataset has one).
        transform: joint transform applied to each sample (see
            :mod:`ssl_robust.data.transforms`).
        subset: evaluate on this many samples, drawn once by ``seed`` (sorted indices): every
            attack sees exactly the same samples.
        seed: seed of the subset draw only (the ``shapes`` scenes have their own
            ``scene_seed``, so another subset draw shows the same scenes).
        **kw: ``shapes`` options: ``size``, ``image_size``, ``scene_seed`` (the scene
            generator's seed, default 0: :class:`~ssl_robust.data.shapes.ShapesDataset`'s
            ``seed``), ``max_objects``, ``home_colour``, ``contrast``; ``nyu_depth_v2``:
            ``layout``, ``eigen_crop``, ``split_file``; ``hf_disk``: ``columns``,
            ``num_classes``, ``seg_classes``, ... (see :class:`~ssl_robust.data.HFDiskDataset`).

    Raises:
        SSLRobustValueError: unknown name (listing the choices) or split.
        SSLRobustTypeError: unknown keyword options.
        FileNotFoundError: the data is not under ``root``; the message shows the layout.

    Example:
        >>> ds = create_dataset("shapes", split="val", size=8, image_size=32, subset=4)
        >>> len(ds), ds[0]["image"].shape
        (4, torch.Size([3, 32, 32]))
    """
    if name == "shapes":
        opts = ("size", "image_size", "scene_seed", "max_objects", "home_colour", "contrast")
        _checks.check_no_unknown(
            {k: v for k, v in kw.items() if k not in opts},
            (*opts, "transform", "subset", "seed"),
            where="create_dataset('shapes')",
        )
        scene_seed = _checks.check_int("scene_seed", kw.pop("scene_seed", 0), minimum=0)
        dataset: SampleDataset = ShapesDataset(
            split=split,  # type: ignore[arg-type]
            seed=scene_seed,
            transform=transform,
            **kw,
        )
    elif name in _REGISTRY:
        allowed = _OPTIONS.get(name, ())
        _checks.check_no_unknown(
            {k: v for k, v in kw.items() if k not in allowed},
            (*allowed, "transform", "subset", "seed"),
            where=f"create_dataset({name!r})",
        )
        if root is None:
            raise _checks.SSLRobustValueError(
                f"create_dataset({name!r}) needs root=, the folder that holds the data"
            )
        dataset = _REGISTRY[name](Path(root), split, transform=transform, **kw)
    else:
        close = difflib.get_close_matches(str(name), list_datasets(), n=1)
        hint = f" — did you mean {close[0]!r}?" if close else ""
        raise _checks.SSLRobustValueError(
            f"unknown dataset {name!r}{hint}; choose one of: {', '.join(list_datasets())}"
        )
    if subset is None:
        return dataset
    return IndexedSubset(dataset, subset_indices(len(dataset), subset, seed=seed))

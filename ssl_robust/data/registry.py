"""Dataset registry: ``create_dataset(name, root, split, **kw)`` and ``list_datasets()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _checks
from ..registry import Registry
from .base import IndexedSubset, Sample, SampleDataset, subset_indices
from .datasets import ADE20K, CIFAR, STL10, Cityscapes, VOCSegmentation
from .hf import HFDiskDataset
from .imagenet import ImageNet
from .nyu import NYUDepthV2
from .shapes import ShapesDataset

__all__ = [
    "DatasetEntry",
    "create_dataset",
    "dataset_entry",
    "dataset_origin",
    "list_datasets",
    "register_dataset",
]

_Builder = Callable[..., SampleDataset]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: how :func:`create_dataset` opens it.

    Attributes:
        name: registry name.
        build: ``(root, split, *, transform, seed, **options) -> SampleDataset``; ``root`` is a
            ``Path`` (or None when the dataset needs none). Samples are dicts with ``image``
            and the targets of the tasks in the dataset's ``info.tasks`` (any key, e.g.
            ``normals`` for a registered task whose ``target_key`` it is).
        needs_root: ``create_dataset`` refuses a missing ``root``.
        options: the extra keywords ``build`` accepts (others are refused by name).
        description: one line for ``ssl-robust list``.
    """

    name: str
    build: _Builder
    needs_root: bool = True
    options: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise _checks.SSLRobustValueError(
                f"DatasetEntry.name must be a non-empty string; got {self.name!r}"
            )
        if not callable(self.build):
            raise _checks.SSLRobustTypeError(
                f"DatasetEntry {self.name!r}: build must be callable; got "
                f"{type(self.build).__name__}"
            )
        object.__setattr__(self, "options", tuple(self.options))


_REGISTRY: Registry[DatasetEntry] = Registry(
    "dataset", entry_type=DatasetEntry, sort=True, choices="choose one of"
)


def register_dataset(
    entry: DatasetEntry | str,
    build: _Builder | None = None,
    *,
    needs_root: bool = True,
    options: tuple[str, ...] = (),
    description: str = "",
    overwrite: bool = False,
) -> DatasetEntry:
    """Register a dataset for :func:`create_dataset` and benchmark configs.

    Args:
        entry: a :class:`DatasetEntry`, or a name (then ``build`` is required).
        build: ``(root, split, *, transform, seed, **options) -> SampleDataset``.
        needs_root, options, description: as in :class:`DatasetEntry`.
        overwrite: replace a dataset of the same name registered by someone else.

    Raises:
        SSLRobustTypeError: neither a DatasetEntry nor a name with a builder.
        SSLRobustValueError: the name is taken (naming who registered it), unless
            ``overwrite=True``.

    Example:
        >>> from ssl_robust.data import ShapesDataset
        >>> _ = register_dataset(
        ...     "tiny_shapes", lambda root, split, *, transform=None, seed=0:
        ...     ShapesDataset(split=split, size=4, image_size=16, seed=seed),
        ...     needs_root=False)
        >>> len(create_dataset("tiny_shapes", split="val")), dataset_origin("tiny_shapes")
        (4, 'built-in')
        >>> _ = _REGISTRY.unregister("tiny_shapes")
    """
    if isinstance(entry, str):
        if build is None:
            raise _checks.SSLRobustTypeError(
                f"register_dataset({entry!r}) needs build=(root, split, *, transform, seed, "
                "**options) -> SampleDataset, or a DatasetEntry"
            )
        entry = DatasetEntry(entry, build, needs_root, tuple(options), description)
    return _REGISTRY.add(entry, overwrite=overwrite)


def _plain(cls: _Builder) -> _Builder:
    return lambda root, split, *, transform=None, seed=0: cls(root, split, transform=transform)


for _name, _build in (
    ("cifar10", lambda root, split, *, transform=None, seed=0: CIFAR(
        root, split, classes=10, transform=transform)),
    ("cifar100", lambda root, split, *, transform=None, seed=0: CIFAR(
        root, split, classes=100, transform=transform)),
    ("stl10", _plain(STL10)),
    ("imagenet", _plain(ImageNet)),
    ("voc2012", _plain(VOCSegmentation)),
    ("cityscapes", _plain(Cityscapes)),
    ("ade20k", _plain(ADE20K)),
):  # fmt: skip
    register_dataset(_name, _build)
register_dataset(
    "nyu_depth_v2",
    lambda root, split, *, transform=None, seed=0, **kw: NYUDepthV2(
        root, split, transform=transform, **kw
    ),
    options=("layout", "eigen_crop", "split_file"),
    description="NYU-Depth v2 in its distributed forms (HDF5, labeled .mat, split files, HF)",
)
register_dataset(
    "hf_disk",
    lambda root, split, *, transform=None, seed=0, **kw: HFDiskDataset(
        root, split, transform=transform, **kw
    ),
    options=(  # not `name`: create_dataset's own first argument (HFDiskDataset(name=))
        "columns", "num_classes", "seg_classes", "ignore_index", "reduce_zero_label",
        "depth_scale", "min_depth", "max_depth",
    ),
    description="any Hugging Face dataset saved with save_to_disk (column mapping)",
)  # fmt: skip
register_dataset(
    "shapes",
    # `seed` draws subsets only; the scene generator has its own `scene_seed`
    lambda root, split, *, transform=None, seed=0, scene_seed=0, **kw: ShapesDataset(
        split=split,
        seed=_checks.check_int("scene_seed", scene_seed, minimum=0),
        transform=transform,
        **kw,
    ),
    needs_root=False,
    options=("size", "image_size", "scene_seed", "max_objects", "home_colour", "contrast"),
    description="synthetic scenes with labels, masks and depth (no download)",
)


def list_datasets() -> list[str]:
    """Names accepted by :func:`create_dataset`, sorted.

    Example:
        >>> "shapes" in list_datasets()
        True
    """
    return _REGISTRY.names()


def dataset_entry(name: str) -> DatasetEntry:
    """The :class:`DatasetEntry` of ``name`` (unknown names list the registered ones)."""
    return _REGISTRY.get(name)


def dataset_origin(name: str) -> str:
    """Where a dataset comes from: ``"built-in"``, a plugin's distribution, or a package."""
    return _REGISTRY.origin(name)


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
        name: one of :func:`list_datasets` (built-in or registered with
            :func:`register_dataset`).
        root: the dataset folder (see docs/data.md for each layout); ``None`` for ``shapes``.
        split: ``"train"`` or ``"val"`` (``"val"`` reads the test split of CIFAR, STL-10 and
            NYU-Depth v2; ``"test"`` is accepted where the dataset has one).
        transform: joint transform applied to each sample (see
            :mod:`ssl_robust.data.transforms`).
        subset: evaluate on this many samples, drawn once by ``seed`` (sorted indices): every
            attack sees exactly the same samples.
        seed: seed of the subset draw (builders get it too; the ``shapes`` scenes have their
            own ``scene_seed``, so another subset draw shows the same scenes).
        **kw: ``shapes`` options: ``size``, ``image_size``, ``scene_seed`` (the scene
            generator's seed, default 0: :class:`~ssl_robust.data.shapes.ShapesDataset`'s
            ``seed``), ``max_objects``, ``home_colour``, ``contrast``; ``nyu_depth_v2``:
            ``layout``, ``eigen_crop``, ``split_file``;
            ``hf_disk``: ``columns``, ``num_classes``, ``seg_classes``, ... (see
            :class:`~ssl_robust.data.HFDiskDataset`).

    Raises:
        SSLRobustValueError: unknown name (listing the choices) or split.
        SSLRobustTypeError: unknown keyword options.
        FileNotFoundError: the data is not under ``root``; the message shows the layout.

    Example:
        >>> ds = create_dataset("shapes", split="val", size=8, image_size=32, subset=4)
        >>> len(ds), ds[0]["image"].shape
        (4, torch.Size([3, 32, 32]))
    """
    if not isinstance(name, str):
        raise _checks.SSLRobustTypeError(f"a dataset name is a string; got {name!r}")
    entry = dataset_entry(name)
    _checks.check_no_unknown(
        {k: v for k, v in kw.items() if k not in entry.options},
        (*entry.options, "transform", "subset", "seed"),
        where=f"create_dataset({name!r})" if entry.options else "create_dataset()",
    )
    if entry.needs_root and root is None:
        raise _checks.SSLRobustValueError(
            f"create_dataset({name!r}) needs root=, the folder that holds the data"
        )
    dataset = entry.build(
        None if root is None else Path(root), split, transform=transform, seed=seed, **kw
    )
    if not isinstance(dataset, SampleDataset):
        raise _checks.SSLRobustTypeError(
            f"the builder of dataset {name!r} returned {type(dataset).__name__}, not a "
            "SampleDataset"
        )
    if subset is None:
        return dataset
    return IndexedSubset(dataset, subset_indices(len(dataset), subset, seed=seed))

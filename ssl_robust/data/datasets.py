"""Readers of the paper's datasets in their usual on-disk layouts (no downloads).

CIFAR and STL-10 are read from their original files directly (torchvision's classes insist on
the md5 of the full release); VOC 2012 and Cityscapes go through torchvision's readers; ADE20K
has its own folder reader. ImageNet (:mod:`.imagenet`), NYU-Depth v2 (:mod:`.nyu`) and Hugging
Face datasets on disk (:mod:`.hf`) have their own modules. Every reader returns :class:`Sample`
dicts.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .. import _checks
from .base import DatasetInfo, Sample, SampleDataset

__all__ = [
    "ADE20K",
    "CIFAR",
    "STL10",
    "Cityscapes",
    "VOCSegmentation",
]

Transform = Callable[[Sample], Sample] | None


def _missing(name: str, root: Path, layout: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{name} not found under {str(root)!r}; expected this layout (no download is done):\n"
        f"{layout}"
    )


def _image_tensor(img: Image.Image) -> Tensor:
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def _split(split: str, choices: dict[str, str]) -> str:
    _checks.check_choice("split", split, tuple(choices))
    return choices[split]


# What the official CIFAR pickles hold (numpy arrays inside dicts and lists, written by
# Python 2 or 3); nothing else may be looked up, so an untrusted file never runs code.
_PICKLE_ALLOWED = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fh: object, path: Path) -> None:
        super().__init__(fh, encoding="latin1")  # type: ignore[arg-type]
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise _checks.SSLRobustValueError(
            f"{self.path}: refusing to unpickle {module}.{name}; a CIFAR file holds only numpy "
            "arrays, lists and dicts (is it the official file? a pickle can run code, so "
            "nothing else is loaded)"
        )


def restricted_pickle_load(path: Path) -> object:
    """Unpickle a CIFAR batch file allowing only numpy arrays and builtin containers.

    Raises:
        SSLRobustValueError: the file names anything else (e.g. ``os.system``), which is
            never imported or called.
    """
    with open(path, "rb") as fh:
        return _RestrictedUnpickler(fh, path).load()


class CIFAR(SampleDataset):
    """CIFAR-10 / CIFAR-100 from the python pickled batches (``cifar-10-batches-py``)."""

    def __init__(
        self, root: str | Path, split: str, *, classes: int = 10, transform: Transform = None
    ) -> None:
        super().__init__(transform=transform)
        root = Path(root)
        folder = "cifar-10-batches-py" if classes == 10 else "cifar-100-python"
        base = root / folder if (root / folder).is_dir() else root
        if classes == 10:
            names = ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])
            meta, key, label_key = "batches.meta", "label_names", "labels"
        else:
            names = (["train"], ["test"])
            meta, key, label_key = "meta", "fine_label_names", "fine_labels"
        part = _split(split, {"train": "train", "val": "test", "test": "test"})
        files = names[0] if part == "train" else names[1]
        layout = f"  {root}/{folder}/{{{', '.join(names[0] + names[1])}, {meta}}}"
        if not all((base / f).is_file() for f in files):
            raise _missing(f"CIFAR-{classes}", root, layout)
        data: list[np.ndarray] = []
        labels: list[int] = []
        for f in files:
            entry: dict[str, Any] = restricted_pickle_load(base / f)  # type: ignore[assignment]
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(int(v) for v in entry[label_key])
        self.data = torch.from_numpy(np.concatenate(data))
        self.labels = torch.tensor(labels, dtype=torch.int64)
        class_names: tuple[str, ...] = ()
        if (base / meta).is_file():
            names_of = restricted_pickle_load(base / meta)
            class_names = tuple(names_of.get(key, ()))  # type: ignore[attr-defined]
        self.info = DatasetInfo(
            name=f"cifar{classes}", tasks=("classification",), num_classes=classes,
            class_names=class_names,
        )  # fmt: skip

    def __len__(self) -> int:
        return int(self.labels.numel())

    def _load(self, index: int) -> Sample:
        return Sample(image=self.data[index].float() / 255.0, label=self.labels[index])


class STL10(SampleDataset):
    """STL-10 from the binary release (``stl10_binary/{train,test}_{X,y}.bin``)."""

    def __init__(self, root: str | Path, split: str, *, transform: Transform = None) -> None:
        super().__init__(transform=transform)
        root = Path(root)
        base = root / "stl10_binary" if (root / "stl10_binary").is_dir() else root
        part = _split(split, {"train": "train", "val": "test", "test": "test"})
        x_file, y_file = base / f"{part}_X.bin", base / f"{part}_y.bin"
        if not (x_file.is_file() and y_file.is_file()):
            raise _missing("STL-10", root, f"  {root}/stl10_binary/{{train,test}}_X.bin and _y.bin")
        raw = np.fromfile(x_file, dtype=np.uint8)
        # Stored column-major per channel: (N, 3, W, H) → transpose to (N, 3, H, W).
        self.data = torch.from_numpy(raw.reshape(-1, 3, 96, 96)).transpose(2, 3)
        self.labels = torch.from_numpy(np.fromfile(y_file, dtype=np.uint8).astype(np.int64)) - 1
        if self.labels.numel() != self.data.shape[0]:
            raise _checks.SSLRobustValueError(
                f"STL-10 {part}: {self.data.shape[0]} images but {self.labels.numel()} labels"
            )
        self.info = DatasetInfo(name="stl10", tasks=("classification",), num_classes=10)

    def __len__(self) -> int:
        return int(self.labels.numel())

    def _load(self, index: int) -> Sample:
        return Sample(image=self.data[index].float() / 255.0, label=self.labels[index])


class _PairFolder(SampleDataset):
    """Image/target file pairs; subclasses fill ``pairs`` and define ``_target``."""

    pairs: list[tuple[Path, Path]]

    def __len__(self) -> int:
        return len(self.pairs)

    def _read(self, index: int) -> tuple[Tensor, np.ndarray]:
        image_path, target_path = self.pairs[index]
        with Image.open(image_path) as img:
            image = _image_tensor(img)
        with Image.open(target_path) as tgt:
            target = np.asarray(tgt).copy()
        return image, target


class VOCSegmentation(_PairFolder):
    """PASCAL VOC 2012 segmentation via torchvision's reader (21 classes, 255 = boundary)."""

    def __init__(self, root: str | Path, split: str, *, transform: Transform = None) -> None:
        super().__init__(transform=transform)
        from torchvision.datasets import VOCSegmentation as TvVOC

        part = _split(split, {"train": "train", "val": "val", "trainval": "trainval"})
        try:
            tv = TvVOC(str(root), year="2012", image_set=part, download=False)
        except (RuntimeError, FileNotFoundError) as exc:
            raise _missing(
                "PASCAL VOC 2012", Path(root),
                f"  {root}/VOCdevkit/VOC2012/JPEGImages/<id>.jpg\n"
                f"  {root}/VOCdevkit/VOC2012/SegmentationClass/<id>.png\n"
                f"  {root}/VOCdevkit/VOC2012/ImageSets/Segmentation/{part}.txt",
            ) from exc  # fmt: skip
        self.pairs = [(Path(a), Path(b)) for a, b in zip(tv.images, tv.masks, strict=True)]
        self.info = DatasetInfo(name="voc2012", tasks=("segmentation",), seg_classes=21)

    def _load(self, index: int) -> Sample:
        image, target = self._read(index)
        return Sample(image=image, mask=torch.from_numpy(target.astype(np.int64)))


class Cityscapes(_PairFolder):
    """Cityscapes (fine) via torchvision's reader; label ids mapped to the 19 train ids."""

    def __init__(self, root: str | Path, split: str, *, transform: Transform = None) -> None:
        super().__init__(transform=transform)
        from torchvision.datasets import Cityscapes as TVCityscapes

        part = _split(split, {"train": "train", "val": "val", "test": "test"})
        try:
            tv = TVCityscapes(str(root), split=part, mode="fine", target_type="semantic")
        except (RuntimeError, FileNotFoundError) as exc:
            raise _missing(
                "Cityscapes", Path(root),
                f"  {root}/leftImg8bit/{part}/<city>/<name>_leftImg8bit.png\n"
                f"  {root}/gtFine/{part}/<city>/<name>_gtFine_labelIds.png",
            ) from exc  # fmt: skip
        self.pairs = [(Path(a), Path(b[0])) for a, b in zip(tv.images, tv.targets, strict=True)]
        lut = torch.full((256,), 255, dtype=torch.int64)
        for c in TVCityscapes.classes:
            if c.id >= 0 and 0 <= c.train_id < 255:
                lut[c.id] = c.train_id
        self.lut = lut
        self.info = DatasetInfo(name="cityscapes", tasks=("segmentation",), seg_classes=19)

    def _load(self, index: int) -> Sample:
        image, target = self._read(index)
        return Sample(image=image, mask=self.lut[torch.from_numpy(target.astype(np.int64))])


class ADE20K(_PairFolder):
    """ADE20K (SceneParsing, ``ADEChallengeData2016``), 150 classes.

    Label 0 ("other") becomes the ignore index 255 and classes shift by −1 (the DINOv2 /
    mmsegmentation ``reduce_zero_label`` protocol).
    """

    def __init__(self, root: str | Path, split: str, *, transform: Transform = None) -> None:
        super().__init__(transform=transform)
        root = Path(root)
        base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
        part = _split(split, {"train": "training", "val": "validation"})
        images, annotations = base / "images" / part, base / "annotations" / part
        if not (images.is_dir() and annotations.is_dir()):
            raise _missing(
                "ADE20K", root,
                f"  {root}/ADEChallengeData2016/images/{{training,validation}}/<name>.jpg\n"
                f"  {root}/ADEChallengeData2016/annotations/{{training,validation}}/<name>.png",
            )  # fmt: skip
        self.pairs = [
            (p, annotations / (p.stem + ".png"))
            for p in sorted(images.glob("*.jpg"))
            if (annotations / (p.stem + ".png")).is_file()
        ]
        self.info = DatasetInfo(name="ade20k", tasks=("segmentation",), seg_classes=150)

    def _load(self, index: int) -> Sample:
        image, target = self._read(index)
        mask = torch.from_numpy(target.astype(np.int64))
        mask = torch.where(mask == 0, 255, mask - 1)
        return Sample(image=image, mask=mask)

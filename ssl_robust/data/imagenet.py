"""ImageNet-1k: the class-folder layout, and the validation set as distributed (flat folder).

Accepted layouts under ``root`` (or under ``root/ILSVRC/Data/CLS-LOC``, the Kaggle tree):

- ``class-folders``: ``{train,val}/<wnid>/<image>.JPEG`` (torchvision's ``ImageFolder``).
- ``flat-val``: ``val/ILSVRC2012_val_<8 digits>.JPEG`` (the 50,000 images of
  ``ILSVRC2012_img_val.tar``) with its labels from either
  the devkit, ``ILSVRC2012_validation_ground_truth.txt`` (one ILSVRC2012_ID per line, line k for
  image k) + ``meta.mat`` (ILSVRC2012_ID → WNID), in the root or in
  ``ILSVRC2012_devkit_t12/data/``; or Kaggle's ``LOC_val_solution.csv`` (``ImageId,
  PredictionString``, the first token the WNID).

Label indices are those of the sorted WNIDs (as torchvision's ``ImageFolder`` and
``ImageNet``): the class folders of ``train`` when present, else ``LOC_synset_mapping.txt``,
else the 1000 leaf synsets of ``meta.mat``. Train and flat val share them.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from .. import _checks
from .base import DatasetInfo, Sample, SampleDataset
from .datasets import _image_tensor, _missing, _split

__all__ = ["IMAGENET_LAYOUTS", "ImageNet"]

Transform = Callable[[Sample], Sample] | None

#: The accepted layouts and what each looks like under ``root``.
IMAGENET_LAYOUTS: dict[str, str] = {
    "class-folders": "{train,val}/<class>/<image>.JPEG (class folders named by WNID)",
    "flat-val": "val/ILSVRC2012_val_<n>.JPEG + ILSVRC2012_validation_ground_truth.txt and "
    "meta.mat (devkit; in the root or ILSVRC2012_devkit_t12/data/) or LOC_val_solution.csv",
}
_EXTENSIONS = (".jpeg", ".jpg", ".png")
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d+)$")


def _base(root: Path) -> Path:
    kaggle = root / "ILSVRC" / "Data" / "CLS-LOC"
    return kaggle if kaggle.is_dir() else root


def _find(root: Path, name: str) -> Path | None:
    for folder in (root, root / "ILSVRC2012_devkit_t12" / "data", root / "devkit" / "data"):
        if (folder / name).is_file():
            return folder / name
    return None


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _EXTENSIONS)


def _meta_synsets(path: Path) -> dict[int, str]:
    """ILSVRC2012_ID → WNID of the 1000 leaf synsets in the devkit's ``meta.mat``."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - scipy is installed in CI
        raise ImportError(
            f"reading {path} (the ImageNet devkit) needs scipy: pip install scipy"
        ) from exc
    try:
        synsets = loadmat(path, squeeze_me=True)["synsets"]
    except (OSError, ValueError, KeyError) as exc:
        raise _checks.SSLRobustValueError(
            f"cannot read the synsets of {path}: {exc} — truncated or not the devkit's meta.mat"
        ) from exc
    return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}


def _class_list(root: Path, base: Path) -> list[str]:
    train = base / "train"
    if train.is_dir():
        classes = sorted(p.name for p in train.iterdir() if p.is_dir())
        if classes:
            return classes
    mapping = _find(root, "LOC_synset_mapping.txt")
    if mapping is not None:
        return sorted(line.split()[0] for line in mapping.read_text().splitlines() if line.strip())
    meta = _find(root, "meta.mat")
    if meta is not None:
        return sorted(_meta_synsets(meta).values())
    raise FileNotFoundError(
        f"ImageNet flat val under {str(root)!r}: no class list to number the labels; expected "
        "train/<wnid>/ folders, LOC_synset_mapping.txt or the devkit's meta.mat"
    )


def _val_labels(root: Path) -> tuple[dict[int, str], str]:
    """Image number → WNID of the flat validation images, and the source read."""
    truth = _find(root, "ILSVRC2012_validation_ground_truth.txt")
    if truth is not None:
        meta = _find(root, "meta.mat")
        if meta is None:
            raise FileNotFoundError(
                f"{truth} gives ILSVRC2012_IDs; meta.mat from the same devkit "
                "(ILSVRC2012_devkit_t12/data/meta.mat) is needed to map them to WNIDs"
            )
        ids = _meta_synsets(meta)
        labels: dict[int, str] = {}
        for n, line in enumerate(truth.read_text().split(), 1):
            if int(line) not in ids:
                raise _checks.SSLRobustValueError(
                    f"{truth}:{n}: ILSVRC2012_ID {line} is not a leaf synset of {meta}"
                )
            labels[n] = ids[int(line)]
        return labels, f"{truth} + {meta}"
    solution = _find(root, "LOC_val_solution.csv")
    if solution is not None:
        labels = {}
        with open(solution, newline="") as fh:
            for row in csv.DictReader(fh):
                match = _VAL_NAME.match(row.get("ImageId", ""))
                tokens = (row.get("PredictionString") or "").split()
                if match and tokens:
                    labels[int(match.group(1))] = tokens[0]
        return labels, str(solution)
    raise FileNotFoundError(
        f"ImageNet flat val under {str(root)!r}: no labels; expected "
        "ILSVRC2012_validation_ground_truth.txt + meta.mat (the devkit, in the root or "
        "ILSVRC2012_devkit_t12/data/) or LOC_val_solution.csv"
    )


class ImageNet(SampleDataset):
    """ImageNet-1k (or any class-per-folder data), and its flat validation folder.

    Layouts (see :data:`IMAGENET_LAYOUTS`): ``root/{train,val}/<class>/<image>.JPEG``, or
    ``root/val/ILSVRC2012_val_<n>.JPEG`` with the devkit's ground truth or
    ``LOC_val_solution.csv``; ``root`` may also be the Kaggle folder holding
    ``ILSVRC/Data/CLS-LOC``. Classes are the sorted WNIDs (folder names of ``train``), so both
    splits share the label indices. Images keep their size: give a transform (e.g.
    :func:`~ssl_robust.data.eval_transform`) to batch them.

    Raises:
        FileNotFoundError: no layout matched, or the flat val's labels or class list missing.
        SSLRobustValueError: images without a label (named, with the count), labels of
            unknown classes.
    """

    def __init__(self, root: str | Path, split: str, *, transform: Transform = None) -> None:
        super().__init__(transform=transform)
        root = Path(root)
        part = _split(split, {"train": "train", "val": "val"})
        base = _base(root)
        folder = base / part
        layouts = "\n".join(f"  {root}/{v}" for v in IMAGENET_LAYOUTS.values())
        if not folder.is_dir():
            raise _missing("ImageNet", root, layouts)
        class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
        flat = _images(folder) if part == "val" else []
        if flat and not class_dirs:
            self.samples, source, classes = self._flat(root, base, flat)
            self.layout = "flat-val"
            self.description = f"{folder}/ILSVRC2012_val_<n>.JPEG, labels from {source}"
        else:
            reference = base / "train" if (base / "train").is_dir() else folder
            classes = sorted(p.name for p in reference.iterdir() if p.is_dir())
            index = {c: i for i, c in enumerate(classes)}
            self.samples = [
                (path, index[d.name]) for d in class_dirs if d.name in index for path in _images(d)
            ]
            self.layout = "class-folders"
            self.description = f"{folder}/<wnid>/<image>.JPEG"
        if not self.samples:
            raise _missing("ImageNet", root, layouts)
        self.info = DatasetInfo(
            name="imagenet", tasks=("classification",), num_classes=len(classes),
            class_names=tuple(classes),
        )  # fmt: skip

    @staticmethod
    def _flat(
        root: Path, base: Path, images: list[Path]
    ) -> tuple[list[tuple[Path, int]], str, list[str]]:
        labels, source = _val_labels(root)
        classes = _class_list(root, base)
        index = {c: i for i, c in enumerate(classes)}
        samples: list[tuple[Path, int]] = []
        unlabelled: list[str] = []
        unknown: set[str] = set()
        for path in images:
            match = _VAL_NAME.match(path.stem)
            wnid = labels.get(int(match.group(1))) if match else None
            if wnid is None:
                unlabelled.append(path.name)
            elif wnid not in index:
                unknown.add(wnid)
            else:
                samples.append((path, index[wnid]))
        if unlabelled:
            raise _checks.SSLRobustValueError(
                f"{len(unlabelled)} image(s) of the flat val folder have no label in {source}: "
                f"{', '.join(unlabelled[:3])}" + (", …" if len(unlabelled) > 3 else "")
            )
        if unknown:
            raise _checks.SSLRobustValueError(
                f"{source} labels images with {len(unknown)} WNID(s) absent from the class list "
                f"({len(classes)} classes): {', '.join(sorted(unknown)[:3])}"
            )
        return samples, source, classes

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> Sample:
        path, label = self.samples[index]
        with Image.open(path) as img:
            image = _image_tensor(img)
        return Sample(image=image, label=torch.tensor(label, dtype=torch.int64))

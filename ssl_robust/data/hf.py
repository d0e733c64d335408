"""Hugging Face datasets saved to disk (``Dataset.save_to_disk``), read with a column mapping.

Nothing is downloaded: ``datasets.load_from_disk`` opens the Arrow files of a folder written by
``DatasetDict.save_to_disk`` (``dataset_dict.json`` + one folder per split) or a folder of
per-split ``Dataset.save_to_disk`` folders (``root/<split>/state.json``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import _checks
from .base import DatasetInfo, Sample, SampleDataset, Task
from .depth_io import depth_from_image

__all__ = ["HF_COLUMN_GUESSES", "HF_SPLITS", "HFDiskDataset"]

Transform = Callable[[Sample], Sample] | None

#: The column names tried for each role when ``columns`` does not name one.
HF_COLUMN_GUESSES: dict[str, tuple[str, ...]] = {
    "image": ("image", "img", "pixel_values", "rgb"),
    "label": ("label", "labels", "fine_label"),
    "mask": ("annotation", "semantic_map", "mask", "segmentation", "label"),
    "depth": ("depth_map", "depth", "depth_gt"),
}
#: The Hugging Face split names read for each ssl_robust split, in order of preference.
HF_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("validation", "val", "test"),
    "test": ("test",),
}
_HINT = "pip install 'ssl-robust[datasets]' (or pip install datasets)"
_ROLES = ("image", "label", "mask", "depth")


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(
            f"reading Hugging Face datasets saved to disk needs datasets: {_HINT}"
        ) from exc
    return datasets


def _open_split(root: Path, split: str) -> tuple[Any, str]:
    """The ``datasets.Dataset`` of ``split`` under ``root`` and the HF split name read."""
    datasets = _datasets()
    wanted = HF_SPLITS.get(split, (split,))
    try:
        if (root / "dataset_dict.json").is_file():
            dd = datasets.load_from_disk(str(root))
            present = sorted(dd)
            name = next((s for s in wanted if s in dd), None)
            if name is None:
                raise _checks.SSLRobustValueError(
                    f"{root}: the saved DatasetDict has splits {present}; split {split!r} reads "
                    f"one of {list(wanted)}"
                )
            return dd[name], name
        for name in wanted:
            if (root / name / "state.json").is_file():
                return datasets.load_from_disk(str(root / name)), name
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        if isinstance(exc, _checks.SSLRobustValueError):
            raise
        raise _checks.SSLRobustValueError(
            f"cannot open the Hugging Face dataset at {root}: {exc} — a truncated or "
            "incomplete save_to_disk folder? save it again"
        ) from exc
    folders: list[str] = []
    if root.is_dir():
        folders = sorted(p.name for p in root.iterdir() if (p / "state.json").is_file())
    if folders:
        raise _checks.SSLRobustValueError(
            f"{root} holds Dataset folders {folders}; split {split!r} reads one of {list(wanted)}"
        )
    if (root / "state.json").is_file():
        raise _checks.SSLRobustValueError(
            f"{root} holds a single Dataset without splits; train and val must differ: save a "
            "DatasetDict({'train': ..., 'validation': ...}) or one folder per split "
            f"({root}/train, {root}/validation)"
        )
    raise FileNotFoundError(
        f"no Hugging Face dataset saved to disk under {str(root)!r}: expected "
        f"{root}/dataset_dict.json (DatasetDict.save_to_disk) or {root}/<split>/state.json "
        f"(Dataset.save_to_disk per split; split {split!r} reads {list(wanted)})"
    )


def _kind(feature: Any) -> str:
    """'image' (Image or 2-D array), 'class' (ClassLabel), 'int', 'float' or 'other'."""
    datasets = _datasets()
    if isinstance(feature, (datasets.Image, datasets.Array2D, datasets.Array3D)):
        return "image"
    if isinstance(feature, datasets.ClassLabel):
        return "class"
    if isinstance(feature, datasets.Value):
        return "int" if "int" in feature.dtype else "float" if "float" in feature.dtype else "other"
    nested = tuple(
        t for t in (getattr(datasets, "Sequence", None), getattr(datasets, "List", None))
        if isinstance(t, type)
    )  # fmt: skip
    if isinstance(feature, (list, *nested)):
        return "image"  # nested lists: an array
    return "other"


def _guess_columns(features: Mapping[str, Any]) -> dict[str, str]:
    kinds = {c: _kind(f) for c, f in features.items()}
    out: dict[str, str] = {}
    for role, names in HF_COLUMN_GUESSES.items():
        for name in names:
            if name not in kinds or name in out.values():
                continue
            scalar = kinds[name] in ("class", "int")
            if (role == "label") == scalar:
                out[role] = name
                break
    return out


class HFDiskDataset(SampleDataset):
    """A Hugging Face dataset saved with ``save_to_disk``, as :class:`Sample` dicts.

    Args:
        root: the folder given to ``save_to_disk`` (a ``DatasetDict``) or one holding a
            ``Dataset`` folder per split.
        split: ``"train"``, ``"val"`` (reads ``validation``, else ``val``, else ``test``) or
            ``"test"``; any other name is read as it is.
        columns: role → column, roles ``image`` (required), ``label``, ``mask``, ``depth``.
            None: guessed from :data:`HF_COLUMN_GUESSES` (a scalar integer or ``ClassLabel``
            column is a label, an image or array column a mask or depth map).
        name: the dataset's name in :class:`DatasetInfo`.
        num_classes: classes of the label column (read from a ``ClassLabel`` when not given).
        seg_classes: classes of the mask column (required with a mask).
        ignore_index: the mask value of unlabelled pixels.
        reduce_zero_label: mask 0 → ``ignore_index`` and other classes − 1 (ADE20k's protocol).
        depth_scale: stored units per metre of integer depth maps (1000 for millimetres);
            float depth maps are read as metres.
        min_depth: smallest valid depth (metres).
        max_depth: largest valid depth (metres).
        transform: joint transform of each sample.

    Raises:
        SSLRobustValueError: a mapped or required column missing (the message lists the
            columns present and the mapping expected), an 8-bit depth map, a split absent.
        FileNotFoundError: no saved dataset under ``root``.
        ImportError: ``datasets`` is not installed (with the install hint).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        columns: Mapping[str, str] | None = None,
        name: str = "hf_disk",
        num_classes: int | None = None,
        seg_classes: int | None = None,
        ignore_index: int = 255,
        reduce_zero_label: bool = False,
        depth_scale: float | None = None,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        transform: Transform = None,
    ) -> None:
        super().__init__(transform=transform)
        root = Path(root)
        given = dict(columns or {})
        for role in given:
            _checks.check_choice("columns role", role, _ROLES)
        data, self.hf_split = _open_split(root, split)
        present = list(data.column_names)
        mapping = dict(given) if given else _guess_columns(data.features)
        missing = {r: c for r, c in mapping.items() if c not in present}
        if missing or "image" not in mapping or len(mapping) < 2:
            raise _checks.SSLRobustValueError(
                f"{root} ({self.hf_split}): columns present {present}; the mapping "
                f"{mapping or 'guessed nothing'} needs "
                + (f"the missing columns {missing}" if missing else "an image column and one "
                   "target (label, mask or depth)")
                + "; pass columns={'image': ..., 'depth': ...} (roles image, label, mask, depth)"
            )  # fmt: skip
        self.columns = mapping
        self.data = data.select_columns(list(dict.fromkeys(mapping.values())))
        self.depth_scale = depth_scale
        self.reduce_zero_label = bool(reduce_zero_label)
        self.ignore_index = _checks.check_ignore_index(ignore_index)
        tasks: list[Task] = []
        class_names: tuple[str, ...] = ()
        if "label" in mapping:
            feature = data.features[mapping["label"]]
            if num_classes is None and _kind(feature) == "class":
                num_classes, class_names = feature.num_classes, tuple(feature.names)
            if num_classes is None:
                raise _checks.SSLRobustValueError(
                    f"column {mapping['label']!r} is not a ClassLabel: give num_classes="
                )
            tasks.append("classification")
        if "mask" in mapping:
            if seg_classes is None:
                raise _checks.SSLRobustValueError(
                    f"a mask column ({mapping['mask']!r}) needs seg_classes= (150 for ADE20k, "
                    "19 for Cityscapes, 21 for VOC)"
                )
            tasks.append("segmentation")
        if "depth" in mapping:
            _checks.check_depth_range(min_depth, max_depth)
            tasks.append("depth")
        self.layout = "hf"
        self.description = f"{root} ({self.hf_split}, Hugging Face Arrow), columns {mapping}"
        self.info = DatasetInfo(
            name=name, tasks=tuple(tasks), num_classes=num_classes or 0,
            seg_classes=seg_classes or 0, ignore_index=self.ignore_index,
            min_depth=float(min_depth), max_depth=float(max_depth), class_names=class_names,
        )  # fmt: skip

    def __len__(self) -> int:
        return int(self.data.num_rows)

    def _image(self, value: Any) -> torch.Tensor:
        if isinstance(value, Image.Image):
            arr = np.asarray(value.convert("RGB"), dtype=np.uint8).copy()
            return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)
        arr = np.asarray(value)
        if arr.ndim == 3 and arr.shape[-1] == 3 and arr.shape[0] != 3:
            arr = arr.transpose(2, 0, 1)
        if arr.ndim != 3 or arr.shape[0] != 3:
            raise _checks.SSLRobustValueError(
                f"column {self.columns['image']!r}: expected an image or a (H, W, 3) / (3, H, W) "
                f"array; got shape {arr.shape}"
            )
        t = torch.from_numpy(np.ascontiguousarray(arr))
        return t.float().div_(255.0) if arr.dtype == np.uint8 else t.float()

    def _depth(self, value: Any, index: int) -> torch.Tensor:
        where = f"{self.columns['depth']!r} of row {index}"
        if isinstance(value, Image.Image):
            arr = depth_from_image(value, scale=self.depth_scale, where=where)
        else:
            raw = np.asarray(value)
            if raw.dtype.kind == "f":
                arr = raw.astype(np.float32)
            else:
                mode = "L" if raw.dtype == np.uint8 else "I"
                arr = depth_from_image(
                    Image.fromarray(raw.astype(np.int32)) if mode == "I" else Image.fromarray(raw),
                    scale=self.depth_scale, where=where,
                )  # fmt: skip
        if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
            arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:-1])
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))

    def _load(self, index: int) -> Sample:
        row = self.data[index]
        sample: dict[str, torch.Tensor] = {"image": self._image(row[self.columns["image"]])}
        if "label" in self.columns:
            sample["label"] = torch.tensor(int(row[self.columns["label"]]), dtype=torch.int64)
        if "mask" in self.columns:
            mask = torch.from_numpy(np.asarray(row[self.columns["mask"]]).astype(np.int64))
            if self.reduce_zero_label:
                mask = torch.where(mask == 0, self.ignore_index, mask - 1)
            sample["mask"] = mask
        if "depth" in self.columns:
            sample["depth"] = self._depth(row[self.columns["depth"]], index)
        return sample  # type: ignore[return-value]

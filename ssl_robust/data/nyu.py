"""NYU-Depth v2 in the forms it is distributed in, detected from the root (no downloads).

Accepted layouts (``NYU_LAYOUTS``), tried in this order:

- ``hf``: a Hugging Face ``save_to_disk`` folder (``sayakpaul/nyu_depth_v2``: columns
  ``image`` and ``depth_map``, float32 metres; splits ``train`` / ``validation``).
- ``labeled-mat``: the official ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5, arrays stored
  transposed; ``depths`` in metres) with ``splits.mat`` (``trainNdxs`` / ``testNdxs``, 1-based;
  795 train and 654 test images).
- ``fast-depth-h5``: ``nyudepthv2/{train,val}/<scene>/<n>.h5`` with keys ``rgb`` (3, H, W)
  uint8 and ``depth`` (H, W) float32 metres; ``val/official`` holds the 654 test images.
- ``file-list``: the BTS / DINOv2 depth-toolbox split files (``rgb depth focal`` per line)
  with 16-bit depth PNGs in millimetres (depth / 1000 = metres).
- ``png-pairs``: ``{train,test}/rgb/<name>.png|.jpg`` + ``{train,test}/depth/<name>.png``
  (16-bit PNG, millimetres).

Every form returns depth in metres, 0 where invalid. With ``eigen_crop=True`` (the default)
depth outside the Eigen crop of a 480×640 image (rows 45–470, columns 41–600, the region with
valid Kinect depth and no white border) is set to 0 (invalid), so it counts in no metric and no
loss; the image keeps its size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from .. import _checks
from .base import DatasetInfo, Sample, SampleDataset
from .datasets import _image_tensor, _split
from .depth_io import depth_from_image

__all__ = ["EIGEN_CROP", "NYU_LAYOUTS", "NYUDepthV2", "detect_nyu_layout"]

Transform = Callable[[Sample], Sample] | None
NYULayout = Literal["auto", "hf", "labeled-mat", "fast-depth-h5", "file-list", "png-pairs"]

#: The accepted layouts and what each looks like under ``root``.
NYU_LAYOUTS: dict[str, str] = {
    "hf": "a Hugging Face save_to_disk folder (dataset_dict.json; sayakpaul/nyu_depth_v2: "
    "columns image, depth_map in metres; splits train, validation)",
    "labeled-mat": "nyu_depth_v2_labeled.mat (MATLAB v7.3 / HDF5) + splits.mat (trainNdxs, "
    "testNdxs, 1-based)",
    "fast-depth-h5": "nyudepthv2/{train,val}/<scene>/<n>.h5 (keys rgb (3,H,W) uint8, depth "
    "(H,W) float32 metres; val/official = the 654 test images)",
    "file-list": "split files nyudepthv2_{train,test}_files_with_gt.txt (BTS) or "
    "nyu_{train,test}.txt (depth toolbox), 'rgb depth focal' per line, in the root, "
    "train_test_inputs/, splits/ or nyu/; depth 16-bit PNG in millimetres",
    "png-pairs": "{train,test}/rgb/<name>.png|.jpg and {train,test}/depth/<name>.png "
    "(uint16, millimetres, 0 = invalid)",
}

#: Eigen et al.'s evaluation crop of a 480×640 NYU image: (top, bottom, left, right), ends
#: exclusive.
EIGEN_CROP = (45, 471, 41, 601)

_SPLIT_FILES = {
    "train": ("nyudepthv2_train_files_with_gt.txt", "nyu_train.txt"),
    "test": ("nyudepthv2_test_files_with_gt.txt", "nyu_test.txt"),
}
_LIST_DIRS = (".", "train_test_inputs", "splits", "nyu")
_H5_HINT = "pip install 'ssl-robust[h5py]' (or pip install h5py)"


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:
        raise ImportError(f"reading NYU-Depth v2 HDF5 / .mat files needs h5py: {_H5_HINT}") from exc
    return h5py


def _read_depth_png(path: Path, scale: float = 1000.0) -> np.ndarray:
    with Image.open(path) as img:
        return depth_from_image(img, scale=scale, where=str(path))


def _is_hf(root: Path) -> bool:
    return (root / "dataset_dict.json").is_file() or (root / "state.json").is_file()


def _h5_base(root: Path) -> Path | None:
    for base in (root / "nyudepthv2", root):
        for part in ("val", "train"):
            folder = base / part
            if folder.is_dir() and next(folder.glob("*/*.h5"), None) is not None:
                return base
    return None


def _split_file(root: Path, part: str) -> Path | None:
    for folder in _LIST_DIRS:
        for name in _SPLIT_FILES[part]:
            if (root / folder / name).is_file():
                return (root / folder / name).resolve()
    return None


def detect_nyu_layout(root: str | Path) -> str:
    """The NYU-Depth v2 layout found under ``root`` (a key of :data:`NYU_LAYOUTS`).

    Raises:
        FileNotFoundError: no layout matched; the message lists every layout looked for.

    Example:
        >>> try:
        ...     detect_nyu_layout("/nonexistent/nyu")
        ... except FileNotFoundError as err:
        ...     print(str(err).splitlines()[1].strip()[:30])
        - hf: a Hugging Face save_to_d
    """
    root = Path(root)
    if root.is_dir():
        if _is_hf(root):
            return "hf"
        if (root / "nyu_depth_v2_labeled.mat").is_file():
            return "labeled-mat"
        if _h5_base(root) is not None:
            return "fast-depth-h5"
        if _split_file(root, "train") or _split_file(root, "test"):
            return "file-list"
        if any((root / p / "rgb").is_dir() for p in ("train", "test")):
            return "png-pairs"
    looked = "\n".join(f"  - {k}: {v}" for k, v in NYU_LAYOUTS.items())
    raise FileNotFoundError(
        f"NYU-Depth v2 not found under {str(root)!r}: no accepted layout matched (no download "
        f"is done); looked for:\n{looked}\n"
        f"check a folder with: ssl-robust data check nyu_depth_v2 {root}"
    )


def _eigen_mask(depth: np.ndarray) -> np.ndarray:
    if depth.shape != (480, 640):
        return depth
    top, bottom, left, right = EIGEN_CROP
    out = np.zeros_like(depth)
    out[top:bottom, left:right] = depth[top:bottom, left:right]
    return out


class _Source:
    """One layout: a length, a description and ``read(i) -> (image (3,H,W) in [0,1], depth)``."""

    layout: str
    description: str

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        raise NotImplementedError


class _PngPairs(_Source):
    layout = "png-pairs"

    def __init__(self, root: Path, part: str) -> None:
        rgb, depth = root / part / "rgb", root / part / "depth"
        if not (rgb.is_dir() and depth.is_dir()):
            raise FileNotFoundError(
                f"NYU-Depth v2 (png-pairs) split {part!r} not found under {str(root)!r}; "
                f"expected {root}/{part}/rgb/<name>.png|.jpg and {root}/{part}/depth/<name>.png "
                "(uint16, millimetres, 0 = invalid)"
            )
        self.pairs = [
            (p, depth / (p.stem + ".png"))
            for p in sorted([*rgb.glob("*.png"), *rgb.glob("*.jpg")])
            if (depth / (p.stem + ".png")).is_file()
        ]
        self.description = f"{root}/{part}/{{rgb,depth}}: 16-bit PNG depth, depth / 1000 = metres"

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        image_path, depth_path = self.pairs[index]
        with Image.open(image_path) as img:
            image = _image_tensor(img)
        return image, _read_depth_png(depth_path)


class _FileList(_PngPairs):
    layout = "file-list"

    def __init__(self, root: Path, part: str, split_file: Path | None = None) -> None:
        listing = split_file or _split_file(root, part)
        if listing is None:
            names = " or ".join(_SPLIT_FILES[part])
            raise FileNotFoundError(
                f"NYU-Depth v2 (file-list): no {part} split file under {str(root)!r}; expected "
                f"{names} in {', '.join(str(root / d) for d in _LIST_DIRS)}"
            )
        entries: list[tuple[str, str]] = []
        for n, line in enumerate(listing.read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise _checks.SSLRobustValueError(
                    f"{listing}:{n}: expected 'rgb depth focal' per line; got {line!r}"
                )
            if fields[1] != "None":  # BTS marks images without ground truth with None
                entries.append((fields[0].lstrip("/"), fields[1].lstrip("/")))
        if not entries:
            raise _checks.SSLRobustValueError(f"split file {listing} lists no image with depth")
        sub = ("sync", "train") if part == "train" else ("official_splits/test", "test")
        bases = [root / s for s in sub] + [root, listing.parent]
        base = next((b for b in bases if (b / entries[0][0]).is_file()), bases[-1])
        missing = [p for rgb, dep in entries for p in (rgb, dep) if not (base / p).is_file()]
        if missing:
            shown = ", ".join(missing[:3])
            raise FileNotFoundError(
                f"split file {listing} names {len(missing)} file(s) that do not exist under "
                f"{str(base)!r} (looked in {', '.join(str(b) for b in bases)}): {shown}"
                + (", …" if len(missing) > 3 else "")
            )
        self.pairs = [(base / rgb, base / dep) for rgb, dep in entries]
        self.description = (
            f"{listing} (files under {base}): 16-bit PNG depth, depth / 1000 = metres"
        )


class _FastDepthH5(_Source):
    layout = "fast-depth-h5"

    def __init__(self, root: Path, part: str) -> None:
        _h5py()
        base = _h5_base(root) or root / "nyudepthv2"
        folder = base / ("train" if part == "train" else "val")
        self.files = sorted(folder.glob("*/*.h5"))
        if not self.files:
            raise FileNotFoundError(
                f"NYU-Depth v2 (fast-depth-h5): no {folder}/<scene>/<n>.h5 files under "
                f"{str(root)!r}"
            )
        self.description = f"{folder}/<scene>/<n>.h5: depth float32 in metres"
        self.read(0)  # the keys, dtypes and shapes of the first file, checked now

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        h5py = _h5py()
        path = self.files[index]
        try:
            with h5py.File(path, "r") as f:
                missing = [k for k in ("rgb", "depth") if k not in f]
                if missing:
                    raise _checks.SSLRobustValueError(
                        f"{path}: no {missing} key(s); a fast-depth NYU file holds 'rgb' "
                        f"(3, H, W) uint8 and 'depth' (H, W) float32; found {sorted(f)}"
                    )
                rgb, depth = np.asarray(f["rgb"]), np.asarray(f["depth"], dtype=np.float32)
        except OSError as exc:
            raise _checks.SSLRobustValueError(
                f"cannot read {path}: {exc} — the file is truncated or not HDF5; "
                "re-download or re-extract it"
            ) from exc
        if rgb.ndim != 3 or rgb.shape[0] != 3 or rgb.shape[1:] != depth.shape:
            raise _checks.SSLRobustValueError(
                f"{path}: expected rgb (3, H, W) and depth (H, W); got rgb {rgb.shape}, "
                f"depth {depth.shape}"
            )
        return torch.from_numpy(rgb.astype(np.float32) / 255.0), depth


def _mat_indices(path: Path, part: str) -> list[int]:
    """0-based indices of ``part`` ("train"/"test") from splits.mat (MATLAB v5 or v7.3)."""
    key = "trainNdxs" if part == "train" else "testNdxs"
    h5py = _h5py()
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                values = np.asarray(f[key]) if key in f else None
        else:
            try:
                from scipy.io import loadmat
            except ImportError as exc:
                raise ImportError(
                    f"reading {path} (MATLAB v5) needs scipy: pip install 'ssl-robust[nyu]'"
                ) from exc
            values = loadmat(path).get(key)
    except (OSError, ValueError) as exc:
        raise _checks.SSLRobustValueError(
            f"cannot read {path}: {exc} — truncated or not a MATLAB file; re-download it"
        ) from exc
    if values is None:
        raise _checks.SSLRobustValueError(f"{path} has no {key!r} (expected trainNdxs, testNdxs)")
    return [int(v) - 1 for v in np.asarray(values).ravel()]


class _LabeledMat(_Source):
    layout = "labeled-mat"

    def __init__(self, root: Path, part: str) -> None:
        h5py = _h5py()
        self.path = root / "nyu_depth_v2_labeled.mat"
        splits = root / "splits.mat"
        if not splits.is_file():
            raise FileNotFoundError(
                f"{self.path} needs splits.mat next to it (trainNdxs / testNdxs, the official "
                f"795 / 654 split); not found: {splits}"
            )
        try:
            with h5py.File(self.path, "r") as f:
                missing = [k for k in ("images", "depths") if k not in f]
                shapes = {k: f[k].shape for k in ("images", "depths") if k in f}
        except OSError as exc:
            raise _checks.SSLRobustValueError(
                f"cannot read {self.path}: {exc} — the file is truncated or not a MATLAB v7.3 "
                "(HDF5) file; re-download it (2.8 GB)"
            ) from exc
        if missing:
            raise _checks.SSLRobustValueError(f"{self.path}: no {missing} array(s)")
        n, img, dep = shapes["images"][0], shapes["images"], shapes["depths"]
        if len(img) != 4 or img[1] != 3 or tuple(dep) != (n, *img[2:]):
            raise _checks.SSLRobustValueError(
                f"{self.path}: expected images (N, 3, W, H) and depths (N, W, H) as MATLAB "
                f"v7.3 stores them; got {tuple(img)} and {tuple(dep)}"
            )
        self.indices = _mat_indices(splits, part)
        bad = [i + 1 for i in self.indices if not 0 <= i < n]
        if bad:
            raise _checks.SSLRobustValueError(
                f"{splits}: indices {bad[:3]} outside 1..{n} of {self.path.name}"
            )
        self.description = f"{self.path} + {splits}: depths float32 in metres"
        self._file: Any = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers (spawn) pickle the dataset
        return {**self.__dict__, "_file": None, "_pid": -1}

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        if self._file is None or self._pid != os.getpid():  # one handle per process
            self._file, self._pid = _h5py().File(self.path, "r"), os.getpid()
        i = self.indices[index]
        try:  # MATLAB column-major → HDF5 (N, 3, W, H): transpose each to (3, H, W)
            rgb = np.asarray(self._file["images"][i]).transpose(0, 2, 1)
            depth = np.asarray(self._file["depths"][i], dtype=np.float32).T
        except OSError as exc:
            raise _checks.SSLRobustValueError(
                f"cannot read image {i + 1} of {self.path}: {exc}"
            ) from exc
        return torch.from_numpy(np.ascontiguousarray(rgb).astype(np.float32) / 255.0), depth


class NYUDepthV2(SampleDataset):
    """NYU-Depth v2 from any of its distributed forms (see :data:`NYU_LAYOUTS`).

    Args:
        root: the folder holding one of the layouts.
        split: ``"train"``, or ``"val"`` / ``"test"`` (the official 654 test images).
        transform: joint transform of each sample.
        layout: one of :data:`NYU_LAYOUTS`, or ``"auto"`` to detect it.
        eigen_crop: depth outside the Eigen crop of 480×640 images set to 0 (invalid).
        split_file: for ``file-list``: the split file to read instead of the usual names.

    Depth is in metres (valid in (0.001, 10]), 0 where invalid.

    Raises:
        FileNotFoundError: no layout matched (the message lists them) or files are missing.
        SSLRobustValueError: a truncated HDF5 / .mat (the file is named), an 8-bit depth PNG.
        ImportError: h5py is needed and missing (with the install hint).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        transform: Transform = None,
        layout: NYULayout = "auto",
        eigen_crop: bool = True,
        split_file: str | Path | None = None,
    ) -> None:
        super().__init__(transform=transform)
        root = Path(root)
        _checks.check_choice("layout", layout, ("auto", *NYU_LAYOUTS))
        part = _split(split, {"train": "train", "val": "test", "test": "test"})
        found = detect_nyu_layout(root) if layout == "auto" else layout
        self.eigen_crop = bool(eigen_crop)
        self.source: _Source | SampleDataset
        if found == "hf":
            from .hf import HFDiskDataset

            self.source = HFDiskDataset(
                root, split, columns={"image": "image", "depth": "depth_map"},
                name="nyu_depth_v2",
            )  # fmt: skip
            self.description = f"{root}: Hugging Face dataset, depth_map float32 in metres"
        else:
            sources: dict[str, Callable[[], _Source]] = {
                "labeled-mat": lambda: _LabeledMat(root, part),
                "fast-depth-h5": lambda: _FastDepthH5(root, part),
                "file-list": lambda: _FileList(
                    root, part, None if split_file is None else Path(split_file)
                ),
                "png-pairs": lambda: _PngPairs(root, part),
            }
            self.source = sources[found]()
            self.description = self.source.description
        self.layout = found
        self.info = DatasetInfo(
            name="nyu_depth_v2", tasks=("depth",), min_depth=1e-3, max_depth=10.0
        )

    def __len__(self) -> int:
        return len(self.source)

    def _load(self, index: int) -> Sample:
        if isinstance(self.source, SampleDataset):
            sample = self.source[index]
            image, depth = sample["image"], np.asarray(sample["depth"])
        else:
            image, depth = self.source.read(index)
        if self.eigen_crop:
            depth = _eigen_mask(depth)
        return Sample(image=image, depth=torch.from_numpy(np.ascontiguousarray(depth)))

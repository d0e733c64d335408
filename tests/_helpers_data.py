"""Writers of dataset fixtures in their exact distributed formats, shared by the data tests:
fast-depth NYU HDF5 files, MATLAB v7.3 ``.mat`` files, BTS / depth-toolbox split files with
16-bit PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

RNG = np.random.default_rng(0)
H, W = 12, 16  # not square: a transposed read would change the shape
Pairs = list[tuple[np.ndarray, np.ndarray]]


def depth_pairs(n: int, h: int = H, w: int = W) -> Pairs:
    """n (image (H, W, 3) uint8, depth (H, W) float32 metres) pairs."""
    return [
        (
            RNG.integers(0, 256, (h, w, 3), dtype=np.uint8),
            RNG.uniform(0.5, 9.5, (h, w)).astype(np.float32),
        )
        for _ in range(n)
    ]


def write_fast_depth(path: Path, image: np.ndarray, depth: np.ndarray) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:  # fast-depth's format: rgb (3, H, W) uint8, depth (H, W)
        f.create_dataset("rgb", data=image.transpose(2, 0, 1))
        f.create_dataset("depth", data=depth)


def write_v73(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 MAT-file: HDF5 with a 512-byte MATLAB header, arrays stored transposed
    (MATLAB is column-major: an (H, W, 3, N) array is stored as (N, 3, W, H))."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in arrays.items():
            d = f.create_dataset(name, data=value)
            d.attrs["MATLAB_class"] = np.bytes_(
                {"u": "uint8", "f": "single"}.get(value.dtype.kind, "double")
            )
    header = (
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
        b"HDF5 schema 1.00 ."
    )
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


def nyu_labeled(root: Path, n: int = 5, *, v73_splits: bool = False) -> Pairs:
    pairs = depth_pairs(n)
    images = np.stack([p[0] for p in pairs], axis=-1)  # MATLAB (H, W, 3, N)
    depths = np.stack([p[1] for p in pairs], axis=-1)  # (H, W, N)
    write_v73(
        root / "nyu_depth_v2_labeled.mat",
        {"images": images.T.copy(), "depths": depths.T.copy()},  # stored transposed
    )
    train, test = np.array([[1], [3], [4]], dtype=np.float64), np.array([[5], [2]], np.float64)
    if v73_splits:
        write_v73(root / "splits.mat", {"trainNdxs": train.T.copy(), "testNdxs": test.T.copy()})
    else:
        from scipy.io import savemat

        savemat(root / "splits.mat", {"trainNdxs": train, "testNdxs": test})  # MATLAB v5
    return pairs


def png16(path: Path, metres: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    mm = np.round(metres * 1000).astype(np.uint16)
    Image.fromarray(mm).save(path)
    return mm.astype(np.float32) / 1000


def nyu_file_list(
    root: Path, toolbox: bool = False
) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    where = {"train": root / "sync", "test": root / "official_splits" / "test"}
    for part, base in where.items():
        lines, pairs = [], []
        for i, (img, dep) in enumerate(depth_pairs(2)):
            room = "kitchen_0028b" if part == "train" else "bathroom"
            rgb, depth = f"{room}/rgb_{i:05d}.png", f"{room}/sync_depth_{i:05d}.png"
            (base / rgb).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(base / rgb)
            pairs.append((img, png16(base / depth, dep)))
            lines.append(f"/{rgb} /{depth} 518.8579")
        out[part] = pairs
        name = f"nyu_{part}.txt" if toolbox else f"nyudepthv2_{part}_files_with_gt.txt"
        folder = root if toolbox else root / "train_test_inputs"
        folder.mkdir(exist_ok=True)
        (folder / name).write_text("\n".join(lines) + "\n")
    return out

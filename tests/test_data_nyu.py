"""NYU-Depth v2 in its distributed forms, on fixtures written in each exact on-disk format:
fast-depth HDF5 files, the official v7.3 ``nyu_depth_v2_labeled.mat`` + ``splits.mat``, BTS /
depth-toolbox split files with 16-bit PNGs, and our PNG pairs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers_data import (
    RNG,
    H,
    W,
    depth_pairs,
    nyu_file_list,
    nyu_labeled,
    png16,
    write_fast_depth,
)
from PIL import Image

from ssl_robust.data import create_dataset, eval_transform
from ssl_robust.data.nyu import EIGEN_CROP, NYU_LAYOUTS, detect_nyu_layout

h5py = pytest.importorskip("h5py", reason="the NYU HDF5 / .mat readers need h5py (dev extra)")


def _images(ds: object, n: int) -> list[dict[str, torch.Tensor]]:
    return [ds[i] for i in range(n)]  # type: ignore[index]


def _close(sample: dict[str, torch.Tensor], image: np.ndarray, depth: np.ndarray) -> None:
    assert sample["image"].shape == (3, *depth.shape) and sample["image"].dtype == torch.float32
    torch.testing.assert_close(
        sample["image"], torch.from_numpy(image).permute(2, 0, 1).float() / 255
    )
    assert sample["depth"].dtype == torch.float32
    torch.testing.assert_close(sample["depth"], torch.from_numpy(depth))


# --- fast-depth HDF5 ---


def test_fast_depth_h5_reads_keys_orientation_and_metres(tmp_path: Path) -> None:
    train, val = depth_pairs(3), depth_pairs(2)
    for i, (img, dep) in enumerate(train):
        scene = "basement_0001a" if i < 2 else "kitchen_0003"
        write_fast_depth(tmp_path / "nyudepthv2" / "train" / scene / f"{i + 1:05d}.h5", img, dep)
    for i, (img, dep) in enumerate(val):
        write_fast_depth(tmp_path / "nyudepthv2" / "val" / "official" / f"{i + 1:05d}.h5", img, dep)
    assert detect_nyu_layout(tmp_path) == detect_nyu_layout(tmp_path / "nyudepthv2")
    ds = create_dataset("nyu_depth_v2", tmp_path, "train")
    assert ds.layout == "fast-depth-h5" and len(ds) == 3  # type: ignore[attr-defined]
    for s, (img, dep) in zip(_images(ds, 3), train, strict=True):
        _close(s, img, dep)
    val_ds = create_dataset("nyu_depth_v2", tmp_path / "nyudepthv2", "val")
    assert len(val_ds) == 2 and ds.info.tasks == ("depth",)
    _close(val_ds[1], *val[1])
    assert create_dataset("nyu_depth_v2", tmp_path, "test")[0]["depth"].shape == (H, W)
    resized = create_dataset("nyu_depth_v2", tmp_path, "val", transform=eval_transform(8))
    assert resized[0]["image"].shape == (3, 8, 8) and resized[0]["depth"].shape == (8, 8)


def test_eigen_crop_invalidates_depth_outside_it_on_480x640(tmp_path: Path) -> None:
    img = RNG.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    dep = np.full((480, 640), 3.0, dtype=np.float32)
    write_fast_depth(tmp_path / "nyudepthv2" / "val" / "official" / "00001.h5", img, dep)
    top, bottom, left, right = EIGEN_CROP
    cropped = create_dataset("nyu_depth_v2", tmp_path, "val")[0]["depth"]
    valid = cropped > 0
    assert int(valid.sum()) == (bottom - top) * (right - left)
    assert bool(valid[top:bottom, left:right].all()) and float(cropped[top, left]) == 3.0
    full = create_dataset("nyu_depth_v2", tmp_path, "val", eigen_crop=False)[0]["depth"]
    assert bool((full == 3.0).all())


def test_h5_missing_key_and_truncated_file_name_the_file(tmp_path: Path) -> None:
    img, dep = depth_pairs(1)[0]
    good = tmp_path / "nyudepthv2" / "val" / "official" / "00001.h5"
    write_fast_depth(good, img, dep)
    bad = good.with_name("00002.h5")
    write_fast_depth(bad, img, dep)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    ds = create_dataset("nyu_depth_v2", tmp_path, "val")
    with pytest.raises(ValueError, match=r"cannot read .*00002\.h5.*truncated"):
        ds[1]
    wrong = tmp_path / "other" / "nyudepthv2" / "val" / "official" / "00001.h5"
    wrong.parent.mkdir(parents=True)
    with h5py.File(wrong, "w") as f:
        f.create_dataset("image", data=img)
    with pytest.raises(
        ValueError, match=r"00001\.h5: no \['rgb', 'depth'\] key.*found \['image'\]"
    ):
        create_dataset("nyu_depth_v2", tmp_path / "other", "val")


# --- the official labeled .mat ---


@pytest.mark.parametrize("v73_splits", [False, True])
def test_labeled_mat_with_splits_is_read_transposed_back(tmp_path: Path, v73_splits: bool) -> None:
    if not v73_splits:
        pytest.importorskip("scipy", reason="splits.mat in MATLAB v5 is read with scipy")
    pairs = nyu_labeled(tmp_path, v73_splits=v73_splits)
    assert detect_nyu_layout(tmp_path) == "labeled-mat"
    train = create_dataset("nyu_depth_v2", tmp_path, "train")
    val = create_dataset("nyu_depth_v2", tmp_path, "val")
    assert len(train) == 3 and len(val) == 2
    for s, k in zip(_images(train, 3), [0, 2, 3], strict=True):  # 1-based 1, 3, 4
        _close(s, *pairs[k])
    for s, k in zip(_images(val, 2), [4, 1], strict=True):
        _close(s, *pairs[k])


def test_labeled_mat_truncated_or_without_splits(tmp_path: Path) -> None:
    pytest.importorskip("scipy", reason="splits.mat in MATLAB v5 is read with scipy")
    nyu_labeled(tmp_path)
    mat = tmp_path / "nyu_depth_v2_labeled.mat"
    full = mat.read_bytes()
    mat.write_bytes(full[: len(full) * 2 // 3])
    with pytest.raises(ValueError, match=r"cannot read .*nyu_depth_v2_labeled\.mat.*truncated"):
        create_dataset("nyu_depth_v2", tmp_path, "val")
    mat.write_bytes(full)
    (tmp_path / "splits.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"needs splits\.mat next to it"):
        create_dataset("nyu_depth_v2", tmp_path, "val")


# --- BTS / depth-toolbox split files with 16-bit PNGs ---


@pytest.mark.parametrize("toolbox", [False, True])
def test_file_list_reads_16bit_png_depth_as_metres(tmp_path: Path, toolbox: bool) -> None:
    pairs = nyu_file_list(tmp_path, toolbox)
    assert detect_nyu_layout(tmp_path) == "file-list"
    for split, part in (("train", "train"), ("val", "test")):
        ds = create_dataset("nyu_depth_v2", tmp_path, split)
        assert ds.layout == "file-list" and len(ds) == 2  # type: ignore[attr-defined]
        for s, (img, dep) in zip(_images(ds, 2), pairs[part], strict=True):
            _close(s, img, dep)


def test_file_list_names_missing_files_with_the_count(tmp_path: Path) -> None:
    nyu_file_list(tmp_path)
    listing = tmp_path / "train_test_inputs" / "nyudepthv2_test_files_with_gt.txt"
    extra = [f"/bathroom/rgb_{i:05d}.png /bathroom/sync_depth_{i:05d}.png 518.8579" for i in (7, 8)]
    listing.write_text(listing.read_text() + "\n".join(extra) + "\n")
    with pytest.raises(
        FileNotFoundError,
        match=r"names 4 file\(s\) that do not exist.*rgb_00007\.png, "
        r"bathroom/sync_depth_00007\.png, bathroom/rgb_00008\.png, …",
    ):
        create_dataset("nyu_depth_v2", tmp_path, "val")


def test_8bit_depth_png_is_refused(tmp_path: Path) -> None:
    nyu_file_list(tmp_path)
    depth = tmp_path / "sync" / "kitchen_0028b" / "sync_depth_00001.png"
    Image.fromarray(RNG.integers(0, 256, (H, W), dtype=np.uint8)).save(depth)
    ds = create_dataset("nyu_depth_v2", tmp_path, "train")
    with pytest.raises(ValueError, match=r"sync_depth_00001\.png is 8-bit \(mode L\).*16-bit PNG"):
        ds[1]


# --- our PNG pairs, detection ---


def test_png_pairs_still_accepted(tmp_path: Path) -> None:
    img, dep = depth_pairs(1)[0]
    (tmp_path / "test" / "rgb").mkdir(parents=True)
    Image.fromarray(img).save(tmp_path / "test" / "rgb" / "a.png")
    metres = png16(tmp_path / "test" / "depth" / "a.png", dep)
    ds = create_dataset("nyu_depth_v2", tmp_path, "val")
    assert ds.layout == "png-pairs"  # type: ignore[attr-defined]
    _close(ds[0], img, metres)


def test_no_layout_lists_every_layout_looked_for(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        create_dataset("nyu_depth_v2", tmp_path, "val")
    text = str(err.value)
    assert "no accepted layout matched" in text
    for key in NYU_LAYOUTS:
        assert f"- {key}:" in text
    assert "ssl-robust data check nyu_depth_v2" in text
    with pytest.raises(ValueError, match="layout must be one of"):
        create_dataset("nyu_depth_v2", tmp_path, "val", layout="matlab")


def test_missing_optional_packages_give_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    img, dep = depth_pairs(1)[0]
    write_fast_depth(tmp_path / "h5" / "nyudepthv2" / "val" / "official" / "1.h5", img, dep)
    if _has("scipy"):
        (tmp_path / "mat").mkdir()
        nyu_labeled(tmp_path / "mat", v73_splits=False)
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(ImportError, match=r"needs h5py: pip install 'ssl-robust\[h5py\]'"):
        create_dataset("nyu_depth_v2", tmp_path / "h5", "val")
    monkeypatch.undo()
    if _has("scipy"):
        monkeypatch.setitem(sys.modules, "scipy.io", None)
        with pytest.raises(ImportError, match=r"MATLAB v5\) needs scipy: pip install"):
            create_dataset("nyu_depth_v2", tmp_path / "mat", "val")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None

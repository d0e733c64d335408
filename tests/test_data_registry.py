"""Dataset registry and readers on tiny fixtures written in each dataset's on-disk layout."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_robust.data import create_dataset, eval_transform, list_datasets, train_transform

RNG = np.random.default_rng(0)


def _img(path: Path, h: int, w: int) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def _png(path: Path, arr: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette:  # VOC masks are palette PNGs: pixel values are palette indices
        im = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.tobytes())
        im.putpalette(list(RNG.integers(0, 256, 768, dtype=np.uint8)))
        im.save(path)
    else:
        Image.fromarray(arr).save(path)


def test_list_datasets() -> None:
    assert list_datasets() == sorted(
        ["ade20k", "cifar10", "cifar100", "cityscapes", "hf_disk", "imagenet", "nyu_depth_v2",
         "shapes", "stl10", "voc2012"]
    )  # fmt: skip


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'.*choose one of: ade20k"):
        create_dataset("cifar", "/tmp")


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar(tmp_path: Path, classes: int) -> None:
    folder = tmp_path / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    folder.mkdir()
    data = RNG.integers(0, 256, (3, 3072), dtype=np.uint8)
    key = "labels" if classes == 10 else "fine_labels"
    test = ["test_batch"] if classes == 10 else ["test"]
    train = [f"data_batch_{i}" for i in range(1, 6)] if classes == 10 else ["train"]
    for name in train + test:
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, key: [1, 2, classes - 1]}, fh)
    with open(folder / ("batches.meta" if classes == 10 else "meta"), "wb") as fh:
        pickle.dump({"label_names" if classes == 10 else "fine_label_names": ["a"] * classes}, fh)
    ds = create_dataset(f"cifar{classes}", tmp_path, "val")
    assert len(ds) == 3 and ds.info.num_classes == classes
    s = ds[0]
    assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
    expected = torch.from_numpy(data[0].reshape(3, 32, 32)).float() / 255
    assert torch.equal(s["image"], expected)
    assert int(ds[2]["label"]) == classes - 1 and s["label"].dtype == torch.int64
    assert len(create_dataset(f"cifar{classes}", tmp_path, "train")) == 3 * len(train)


def test_stl10(tmp_path: Path) -> None:
    base = tmp_path / "stl10_binary"
    base.mkdir()
    x = RNG.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8)
    x.transpose(0, 1, 3, 2).tofile(base / "test_X.bin")  # the release stores columns first
    np.array([1, 10], dtype=np.uint8).tofile(base / "test_y.bin")
    ds = create_dataset("stl10", tmp_path, "val")
    assert len(ds) == 2
    assert torch.equal(ds[1]["image"], torch.from_numpy(x[1]).float() / 255)
    assert [int(ds[i]["label"]) for i in range(2)] == [0, 9]


def test_voc2012(tmp_path: Path) -> None:
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    img = _img(voc / "JPEGImages" / "2007_000001.jpg", 20, 30)
    mask = RNG.integers(0, 21, (20, 30), dtype=np.uint8)
    mask[0, :5] = 255
    _png(voc / "SegmentationClass" / "2007_000001.png", mask, palette=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000001\n")
    ds = create_dataset("voc2012", tmp_path, "val")
    s = ds[0]
    assert s["image"].shape == (3, 20, 30) and img.shape == (20, 30, 3)
    assert s["mask"].dtype == torch.int64 and torch.equal(s["mask"], torch.from_numpy(mask).long())
    assert ds.info.seg_classes == 21


def test_cityscapes(tmp_path: Path) -> None:
    _img(tmp_path / "leftImg8bit" / "val" / "aachen" / "aachen_0_0_leftImg8bit.png", 16, 32)
    ids = np.array([[7, 8, 26, 0], [33, 1, 24, 11]], dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    _png(tmp_path / "gtFine" / "val" / "aachen" / "aachen_0_0_gtFine_labelIds.png", ids)
    s = create_dataset("cityscapes", tmp_path, "val")[0]
    # label ids → train ids: road 7→0, sidewalk 8→1, car 26→13, unlabeled 0→255,
    # bicycle 33→18, ego vehicle 1→255, person 24→11, building 11→2
    expected = torch.tensor([[0, 1, 13, 255], [18, 255, 11, 2]]).repeat_interleave(8, 0)
    assert torch.equal(s["mask"], expected.repeat_interleave(8, 1))


def test_ade20k_reduce_zero_label(tmp_path: Path) -> None:
    base = tmp_path / "ADEChallengeData2016"
    _img(base / "images" / "validation" / "ADE_val_00000001.jpg", 12, 12)
    ann = np.array([[0, 1], [150, 7]], dtype=np.uint8).repeat(6, 0).repeat(6, 1)
    _png(base / "annotations" / "validation" / "ADE_val_00000001.png", ann)
    ds = create_dataset("ade20k", tmp_path, "val")
    expected = torch.tensor([[255, 0], [149, 6]]).repeat_interleave(6, 0).repeat_interleave(6, 1)
    assert torch.equal(ds[0]["mask"], expected)
    assert ds.info.seg_classes == 150


def test_nyu_depth_in_metres(tmp_path: Path) -> None:
    _img(tmp_path / "test" / "rgb" / "00001.png", 8, 10)
    mm = RNG.integers(0, 10000, (8, 10)).astype(np.uint16)
    _png(tmp_path / "test" / "depth" / "00001.png", mm)
    s = create_dataset("nyu_depth_v2", tmp_path, "val")[0]
    assert s["depth"].dtype == torch.float32
    torch.testing.assert_close(s["depth"], torch.from_numpy(mm.astype(np.float32)) / 1000)


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("cifar10", "cifar-10-batches-py"),
        ("stl10", "stl10_binary"),
        ("voc2012", "SegmentationClass"),
        ("cityscapes", "gtFine_labelIds"),
        ("ade20k", "ADEChallengeData2016/annotations"),
        ("nyu_depth_v2", "uint16, millimetres"),
    ],
)
def test_missing_root_describes_layout(tmp_path: Path, name: str, needle: str) -> None:
    with pytest.raises(FileNotFoundError, match=needle):
        create_dataset(name, tmp_path / "nothing", "val")


def test_subset_is_deterministic_and_the_same_for_every_call() -> None:
    a = create_dataset("shapes", split="val", size=50, subset=10, seed=3)
    b = create_dataset("shapes", split="val", size=50, subset=10, seed=3)
    assert a.indices == b.indices and len(a) == 10  # type: ignore[attr-defined]
    assert a.indices == sorted(a.indices)  # type: ignore[attr-defined]
    assert torch.equal(a[4]["image"], b[4]["image"])
    c = create_dataset("shapes", split="val", size=50, subset=10, seed=4)
    assert c.indices != a.indices  # type: ignore[attr-defined]


def test_bad_options() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'sizes'"):
        create_dataset("shapes", sizes=3)
    with pytest.raises(ValueError, match="needs root="):
        create_dataset("cifar10")
    with pytest.raises(ValueError, match="split must be one of"):
        create_dataset("ade20k", "/tmp", "test")


def test_joint_transforms_keep_alignment() -> None:
    ds = create_dataset("shapes", split="val", size=4, image_size=40)
    s = ds[0]
    t = eval_transform(24)(s)
    assert t["image"].shape == (3, 24, 24) and t["mask"].shape == (24, 24)
    assert t["mask"].dtype == torch.int64 and t["depth"].dtype == torch.float32
    assert set(t["mask"].unique().tolist()) <= set(s["mask"].unique().tolist())  # nearest
    assert set(t["depth"].unique().tolist()) <= set(s["depth"].unique().tolist())
    # a flip moves image, mask and depth together
    flip = train_transform(40, seed=0)
    outs = [flip(s) for _ in range(8)]
    for o in outs:
        mirrored = torch.equal(o["mask"], s["mask"].flip(-1))
        assert torch.equal(o["depth"], s["depth"].flip(-1) if mirrored else s["depth"])
        assert torch.equal(o["image"], s["image"].flip(-1) if mirrored else s["image"])
    assert any(torch.equal(o["mask"], s["mask"].flip(-1)) for o in outs)
    # same seed → same augmentation stream
    again = train_transform(40, seed=0)
    assert all(torch.equal(again(s)["image"], o["image"]) for o in outs)


def test_random_crop_pads_masks_with_ignore() -> None:
    s = create_dataset("shapes", split="val", size=1, image_size=16)[0]
    t = train_transform((16, 24), flip=False)(s)
    assert t["image"].shape == (3, 16, 24)
    assert int((t["mask"] == 255).sum()) == 16 * 8 and float(t["depth"][:, 16:].max()) == 0.0


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_reader_unpickles_arrays_of_any_protocol(tmp_path: Path, protocol: int) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = RNG.integers(0, 256, (2, 3072), dtype=np.uint8)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, "labels": np.array([3, 4])}, fh, protocol=protocol)
    ds = create_dataset("cifar10", tmp_path, "val")
    assert [int(ds[i]["label"]) for i in range(2)] == [3, 4]


def test_a_malicious_cifar_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": _Evil(marker), "labels": [0]}, fh)
    with pytest.raises(ValueError, match=r"test_batch: refusing to unpickle posix\.system"):
        create_dataset("cifar10", tmp_path, "val")
    assert not marker.exists()

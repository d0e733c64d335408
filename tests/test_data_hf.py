"""Hugging Face datasets saved with ``save_to_disk``: tiny Arrow datasets written by the test
(``sayakpaul/nyu_depth_v2``'s columns, an ADE20k-like segmentation set, a ClassLabel set)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_robust.data import create_dataset, eval_transform

datasets = pytest.importorskip("datasets", reason="the hf_disk reader needs datasets (dev extra)")

RNG = np.random.default_rng(0)
H, W = 10, 14


def _rgb(n: int) -> list[np.ndarray]:
    return [RNG.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def _nyu_like(root: Path) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """sayakpaul/nyu_depth_v2: columns image (RGB) and depth_map (float32 metres, mode F)."""
    features = datasets.Features({"image": datasets.Image(), "depth_map": datasets.Image()})
    out, parts = {}, {}
    for split, n in (("train", 3), ("validation", 2)):
        pairs = [(img, RNG.uniform(0.5, 9.5, (H, W)).astype(np.float32)) for img in _rgb(n)]
        out[split] = pairs
        parts[split] = datasets.Dataset.from_dict(
            {
                "image": [Image.fromarray(i) for i, _ in pairs],
                "depth_map": [Image.fromarray(d, mode="F") for _, d in pairs],
            },
            features=features,
        )
    datasets.DatasetDict(parts).save_to_disk(str(root))
    return out


def test_nyu_from_a_saved_hf_dataset_loads_in_metres(tmp_path: Path) -> None:
    pairs = _nyu_like(tmp_path)
    for split, hf_split in (("train", "train"), ("val", "validation")):
        ds = create_dataset("nyu_depth_v2", tmp_path, split)
        assert ds.layout == "hf" and len(ds) == len(pairs[hf_split])  # type: ignore[attr-defined]
        for i, (img, dep) in enumerate(pairs[hf_split]):
            s = ds[i]
            torch.testing.assert_close(s["image"], torch.from_numpy(img).permute(2, 0, 1) / 255)
            assert s["depth"].dtype == torch.float32
            torch.testing.assert_close(s["depth"], torch.from_numpy(dep))
    generic = create_dataset(
        "hf_disk", tmp_path, "val", columns={"image": "image", "depth": "depth_map"}
    )
    assert generic.info.tasks == ("depth",) and generic.info.max_depth == 10.0
    torch.testing.assert_close(generic[1]["depth"], torch.from_numpy(pairs["validation"][1][1]))


def test_segmentation_columns_guessed_and_zero_label_reduced(tmp_path: Path) -> None:
    masks = [RNG.integers(0, 151, (H, W), dtype=np.uint8) for _ in range(2)]
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    data = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(i) for i in _rgb(2)],
         "annotation": [Image.fromarray(m) for m in masks]},
        features=features,
    )  # fmt: skip
    for split in ("train", "validation"):  # one Dataset folder per split
        data.save_to_disk(str(tmp_path / split))
    ds = create_dataset(
        "hf_disk", tmp_path, "val", seg_classes=150, reduce_zero_label=True,
        transform=eval_transform(8),
    )  # fmt: skip
    raw = create_dataset("hf_disk", tmp_path, "val", seg_classes=150, reduce_zero_label=True)
    assert ds.info.tasks == ("segmentation",) and ds.info.seg_classes == 150
    expected = torch.from_numpy(masks[0].astype(np.int64))
    expected = torch.where(expected == 0, 255, expected - 1)
    assert torch.equal(raw[0]["mask"], expected) and ds[0]["mask"].shape == (8, 8)
    with pytest.raises(ValueError, match=r"needs seg_classes="):
        create_dataset("hf_disk", tmp_path, "val")


def test_classlabel_gives_classes_and_names(tmp_path: Path) -> None:
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog", "fox"])}
    )
    data = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(i) for i in _rgb(3)], "label": [2, 0, 1]}, features=features
    )
    datasets.DatasetDict({"train": data, "test": data}).save_to_disk(str(tmp_path))
    ds = create_dataset("hf_disk", tmp_path, "val")  # validation absent: test is read
    assert ds.info.num_classes == 3 and ds.info.class_names == ("cat", "dog", "fox")
    assert [int(ds[i]["label"]) for i in range(3)] == [2, 0, 1]


def test_missing_columns_list_the_present_ones_and_the_mapping(tmp_path: Path) -> None:
    _nyu_like(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"columns present \['image', 'depth_map'\]; the mapping \{'image': 'image', "
        r"'depth': 'depth'\} needs the missing columns \{'depth': 'depth'\}",
    ):
        create_dataset("hf_disk", tmp_path, "train", columns={"image": "image", "depth": "depth"})
    with pytest.raises(ValueError, match="columns role must be one of"):
        create_dataset("hf_disk", tmp_path, "train", columns={"picture": "image"})


def test_8bit_depth_and_integer_depth_without_scale_are_refused(tmp_path: Path) -> None:
    features = datasets.Features({"image": datasets.Image(), "depth": datasets.Image()})
    data = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(_rgb(1)[0])],
         "depth": [Image.fromarray(RNG.integers(0, 256, (H, W), dtype=np.uint8))]},
        features=features,
    )  # fmt: skip
    datasets.DatasetDict({"train": data}).save_to_disk(str(tmp_path / "a"))
    with pytest.raises(ValueError, match=r"is 8-bit \(mode L\)"):
        create_dataset("hf_disk", tmp_path / "a", "train")[0]
    mm = RNG.integers(1, 10000, (H, W)).astype(np.uint16)
    data16 = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(_rgb(1)[0])], "depth": [Image.fromarray(mm)]},
        features=features,
    )
    datasets.DatasetDict({"train": data16}).save_to_disk(str(tmp_path / "b"))
    with pytest.raises(ValueError, match=r"give depth_scale="):
        create_dataset("hf_disk", tmp_path / "b", "train")[0]
    ds = create_dataset("hf_disk", tmp_path / "b", "train", depth_scale=1000.0)
    torch.testing.assert_close(ds[0]["depth"], torch.from_numpy(mm.astype(np.float32)) / 1000)


def test_single_dataset_without_splits_and_empty_root_are_refused(tmp_path: Path) -> None:
    data = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(_rgb(1)[0])], "label": [0]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    data.save_to_disk(str(tmp_path / "one"))
    with pytest.raises(ValueError, match="single Dataset without splits"):
        create_dataset("hf_disk", tmp_path / "one", "train", num_classes=2)
    with pytest.raises(FileNotFoundError, match=r"dataset_dict\.json"):
        create_dataset("hf_disk", tmp_path / "none", "train")


def test_depth_as_a_float_array_column_and_a_missing_split_folder(tmp_path: Path) -> None:
    depth = RNG.uniform(0.5, 9.5, (H, W)).astype(np.float32)
    features = datasets.Features(
        {"image": datasets.Image(), "depth": datasets.Array2D((H, W), "float32")}
    )
    data = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(_rgb(1)[0])], "depth": [depth]}, features=features
    )
    data.save_to_disk(str(tmp_path / "train"))
    ds = create_dataset("hf_disk", tmp_path, "train")  # columns guessed: image, depth
    assert ds.columns == {"image": "image", "depth": "depth"}  # type: ignore[attr-defined]
    torch.testing.assert_close(ds[0]["depth"], torch.from_numpy(depth))
    with pytest.raises(ValueError, match=r"holds Dataset folders \['train'\]; split 'val' reads"):
        create_dataset("hf_disk", tmp_path, "val")


def test_missing_datasets_package_gives_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    _nyu_like(tmp_path)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"needs datasets: pip install 'ssl-robust\[datasets\]'"):
        create_dataset("nyu_depth_v2", tmp_path, "val")

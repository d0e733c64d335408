"""The ImageNet reader on a tiny ImageFolder fixture (train/val, class per folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_robust.data import create_dataset, eval_transform


def _fixture(root: Path) -> None:
    rng = np.random.default_rng(0)
    layout = {"train": {"n01": 2, "n02": 1, "n03": 1}, "val": {"n02": 1, "n03": 2}}
    for split, classes in layout.items():
        for wnid, count in classes.items():
            (root / split / wnid).mkdir(parents=True)
            for i in range(count):
                arr = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / wnid / f"{wnid}_{i}.JPEG")
    (root / "train" / "n01" / "notes.txt").write_text("not an image")


def test_imagenet_reads_both_splits_with_shared_labels(tmp_path: Path) -> None:
    _fixture(tmp_path)
    train = create_dataset("imagenet", tmp_path, "train")
    val = create_dataset("imagenet", tmp_path, "val", transform=eval_transform(16))
    assert len(train) == 4 and len(val) == 3
    assert train.info.num_classes == val.info.num_classes == 3
    assert train.info.class_names == ("n01", "n02", "n03")
    assert [int(train[i]["label"]) for i in range(4)] == [0, 0, 1, 2]
    assert [int(val[i]["label"]) for i in range(3)] == [1, 2, 2]  # val has no n01: same ids
    s = train[0]
    assert s["image"].shape == (3, 20, 24) and s["image"].dtype == torch.float32
    assert float(s["image"].min()) >= 0.0 and float(s["image"].max()) <= 1.0
    assert val[0]["image"].shape == (3, 16, 16)


def test_imagenet_missing_layout_is_described(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"(?s)ImageNet not found.*\{train,val\}/<class>"):
        create_dataset("imagenet", tmp_path, "val")

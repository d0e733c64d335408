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


# --- the validation set as distributed: a flat folder + the devkit or LOC_val_solution.csv ---

# ILSVRC2012_IDs are not in WNID order (ID 1 is n02119789): the devkit maps them.
SYNSETS = [(1, "n03"), (2, "n01"), (3, "n02")]
TRUTH = [3, 1, 1, 2]  # ILSVRC2012_IDs of val images 1..4 → n02, n03, n03, n01


def _flat_val(root: Path, numbers: list[int]) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(1)
    (root / "val").mkdir(parents=True)
    images = {}
    for k in numbers:
        arr = rng.integers(0, 256, (18, 22, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "val" / f"ILSVRC2012_val_{k:08d}.JPEG")
        images[k] = arr
    return images


def _devkit(root: Path) -> None:
    scipy_io = pytest.importorskip("scipy.io", reason="the devkit's meta.mat is read with scipy")
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "\n".join(str(i) for i in TRUTH) + "\n"
    )
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    rows = [(i, w, f"class {w}", 0) for i, w in SYNSETS] + [(1001, "n99", "a parent", 3)]
    scipy_io.savemat(data / "meta.mat", {"synsets": np.array(rows, dtype=dtype)})


def test_flat_val_with_devkit_ground_truth(tmp_path: Path) -> None:
    _flat_val(tmp_path, [1, 2, 3, 4])
    _devkit(tmp_path)
    val = create_dataset("imagenet", tmp_path, "val")
    assert val.layout == "flat-val" and len(val) == 4  # type: ignore[attr-defined]
    # classes: the sorted leaf WNIDs of meta.mat (no train folder): n01, n02, n03
    assert val.info.class_names == ("n01", "n02", "n03") and val.info.num_classes == 3
    assert [int(val[i]["label"]) for i in range(4)] == [1, 2, 2, 0]
    assert val[0]["image"].shape == (3, 18, 22)


def test_flat_val_shares_label_ids_with_train_folders(tmp_path: Path) -> None:
    _flat_val(tmp_path, [1, 3])
    _devkit(tmp_path)
    for wnid in ("n00", "n01", "n02", "n03"):  # train has one more class: ids shift
        (tmp_path / "train" / wnid).mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "train" / wnid / "a.JPEG")
    val = create_dataset("imagenet", tmp_path, "val")
    assert [int(val[i]["label"]) for i in range(2)] == [2, 3]  # n02, n03 among n00..n03


def test_flat_val_with_loc_val_solution_in_the_kaggle_tree(tmp_path: Path) -> None:
    base = tmp_path / "ILSVRC" / "Data" / "CLS-LOC"
    _flat_val(base, [2, 5])
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000005,n01 10 20 30 40 n01 1 2 3 4 \n"
        "ILSVRC2012_val_00000002,n03 0 0 5 5 \n"
    )
    (tmp_path / "LOC_synset_mapping.txt").write_text("n01 tench\nn02 goldfish\nn03 shark\n")
    val = create_dataset("imagenet", tmp_path, "val", transform=eval_transform(8))
    assert [int(val[i]["label"]) for i in range(2)] == [2, 0]
    assert val[0]["image"].shape == (3, 8, 8)


def test_flat_val_errors_name_what_is_missing(tmp_path: Path) -> None:
    _flat_val(tmp_path, [1, 2, 3, 4, 5, 6])
    with pytest.raises(FileNotFoundError, match="no labels; expected ILSVRC2012_validation"):
        create_dataset("imagenet", tmp_path, "val")
    _devkit(tmp_path)  # ground truth for images 1..4 only
    with pytest.raises(
        ValueError,
        match=r"2 image\(s\) of the flat val folder have no label.*"
        r"ILSVRC2012_val_00000005\.JPEG, ILSVRC2012_val_00000006\.JPEG",
    ):
        create_dataset("imagenet", tmp_path, "val")
    (tmp_path / "ILSVRC2012_devkit_t12" / "data" / "meta.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"meta\.mat from the same devkit"):
        create_dataset("imagenet", tmp_path, "val")
    (tmp_path / "ILSVRC2012_devkit_t12").rename(tmp_path / "elsewhere")
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n")
    with pytest.raises(FileNotFoundError, match="no class list"):
        create_dataset("imagenet", tmp_path, "val")

"""The synthetic shapes dataset: formats, determinism, consistency of label/mask/depth."""

from __future__ import annotations

import pytest
import torch

from ssl_robust.data import SHAPE_KINDS, ShapesDataset, render_shapes_scene


def test_sample_format() -> None:
    ds = ShapesDataset(split="train", size=5, image_size=(24, 40))
    assert len(ds) == 5
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].shape == (3, 24, 40) and s["image"].dtype == torch.float32
        assert float(s["image"].min()) >= 0.0 and float(s["image"].max()) <= 1.0
        assert s["mask"].shape == (24, 40) and s["mask"].dtype == torch.int64
        assert s["depth"].shape == (24, 40) and s["depth"].dtype == torch.float32
        assert s["label"].shape == () and s["label"].dtype == torch.int64
        assert 0 <= int(s["label"]) < len(SHAPE_KINDS)
        assert set(s["mask"].unique().tolist()) <= set(range(len(SHAPE_KINDS) + 1))
        assert float(s["depth"].min()) > 0 and float(s["depth"].max()) <= ds.info.max_depth


def test_info() -> None:
    info = ShapesDataset(size=1).info
    assert info.tasks == ("classification", "segmentation", "depth")
    assert (info.num_classes, info.seg_classes, info.class_names) == (4, 5, SHAPE_KINDS)


def test_deterministic_and_split_dependent() -> None:
    a = ShapesDataset(split="train", size=3, seed=7)
    b = ShapesDataset(split="train", size=3, seed=7)
    for i in range(3):
        for key in ("image", "mask", "depth", "label"):
            assert torch.equal(a[i][key], b[i][key])  # type: ignore[literal-required]
    assert not torch.equal(a[0]["image"], ShapesDataset(split="val", size=3, seed=7)[0]["image"])
    assert not torch.equal(a[0]["image"], ShapesDataset(split="train", size=3, seed=8)[0]["image"])
    assert not torch.equal(a[0]["image"], a[1]["image"])
    assert torch.equal(a[-1]["image"], a[2]["image"])


def test_global_rng_untouched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ShapesDataset(size=2)[1]
    assert torch.equal(torch.rand(3), expected)


def test_label_is_kind_of_largest_visible_shape() -> None:
    ds = ShapesDataset(split="val", size=40, image_size=32)
    agree = 0
    for i in range(len(ds)):
        s = ds[i]
        counts = torch.bincount(s["mask"].flatten(), minlength=5)[1:]
        assert counts[int(s["label"])] > 0
        # two smaller shapes of one kind can outnumber the main shape only rarely
        agree += int(counts[int(s["label"])] == counts.max())
    assert agree >= 36


def test_depth_follows_geometry() -> None:
    s = render_shapes_scene(48, torch.Generator().manual_seed(3))
    depth, mask = s["depth"], s["mask"]
    background = mask == 0
    # ground depth decreases downward (closer rows), wall depth is the maximum 10 m
    col = torch.where(background[:, 0], depth[:, 0], torch.nan)
    valid = col[~col.isnan()]
    assert torch.all(valid[1:] <= valid[:-1] + 1e-5)
    assert float(depth.max()) == pytest.approx(10.0)
    # a shape's pixels share one depth, closer than the wall
    for k in mask.unique().tolist():
        if k:
            d = depth[mask == k]
            assert float(d.max()) < 10.0


def test_farther_objects_are_darker() -> None:
    # same kind and colour, rendered at two depths through the formula: brightness ~ exp(-z/12)
    ds = ShapesDataset(split="train", size=60, image_size=32)
    near, far = [], []
    for i in range(len(ds)):
        s = ds[i]
        shape = s["mask"] > 0
        if shape.any():
            z = s["depth"][shape]
            v = s["image"].amax(0)[shape]
            near.append(v[z < 3.7].mean()) if bool((z < 3.7).any()) else None
            far.append(v[z > 5.0].mean()) if bool((z > 5.0).any()) else None
    assert torch.stack(near).mean() > torch.stack(far).mean()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        ShapesDataset(split="training")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size must be >= 1"):
        ShapesDataset(size=0)
    with pytest.raises(ValueError, match="image_size must be >= 8"):
        ShapesDataset(image_size=4)
    with pytest.raises(IndexError, match="out of range"):
        ShapesDataset(size=2)[2]

"""Samples are tv_tensors: users' torchvision v2 pipelines keep image, mask and depth aligned."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.transforms import v2

import ssl_robust.data.transforms as T
from ssl_robust.data import (
    DatasetInfo,
    DepthMap,
    PadIfSmaller,
    Sample,
    SampleDataset,
    Seeded,
    as_tv_tensors,
    create_dataset,
    eval_transform,
    train_transform,
)

H, W = 12, 20


class CoordinateScenes(SampleDataset):
    """Every pixel encodes its own (row, col): image channels, mask id and depth agree."""

    info = DatasetInfo("coords", ("segmentation", "depth"), seg_classes=H * W)

    def __len__(self) -> int:
        return 16

    def _load(self, index: int) -> Sample:
        rows = torch.arange(H).view(H, 1).expand(H, W)
        cols = torch.arange(W).view(1, W).expand(H, W)
        image = torch.stack([rows / (H - 1), cols / (W - 1), torch.full((H, W), 0.5)])
        ids = rows * W + cols
        return Sample(image=image.float(), mask=ids.clone(), depth=(ids + 1).float())


def _coords(sample: Sample) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, cols) read from the image, and from the mask ids."""
    image, mask = sample["image"], sample["mask"]
    return image[0] * (H - 1), image[1] * (W - 1), mask // W, mask % W


def test_dataset_fields_are_tv_tensors() -> None:
    s = CoordinateScenes()[0]
    assert type(s["image"]) is tv_tensors.Image
    assert type(s["mask"]) is tv_tensors.Mask
    assert type(s["depth"]) is DepthMap
    shapes = create_dataset("shapes", split="val", size=2, image_size=16)[0]
    assert type(shapes["image"]) is tv_tensors.Image and type(shapes["label"]) is torch.Tensor


def test_user_v2_crop_and_flip_keep_exact_alignment() -> None:
    torch.manual_seed(0)
    t = v2.Compose([v2.RandomCrop((8, 10)), v2.RandomHorizontalFlip()])
    ds = CoordinateScenes(transform=t)
    flipped = 0
    for i in range(len(ds)):
        s = ds[i]
        img_r, img_c, mask_r, mask_c = _coords(s)
        assert s["image"].shape == (3, 8, 10) and s["mask"].shape == (8, 10)
        torch.testing.assert_close(img_r, mask_r.float(), atol=1e-5, rtol=0)
        torch.testing.assert_close(img_c, mask_c.float(), atol=1e-5, rtol=0)
        assert torch.equal(s["depth"], (s["mask"] + 1).float())
        flipped += bool(mask_c[0, 0] > mask_c[0, -1])
    assert 0 < flipped < len(ds)  # both branches ran


def test_user_v2_random_resized_crop_keeps_alignment_within_a_pixel() -> None:
    torch.manual_seed(1)
    t = v2.Compose([v2.RandomResizedCrop((24, 40), antialias=True), v2.RandomHorizontalFlip()])
    ds = CoordinateScenes(transform=t)
    for i in range(8):
        s = ds[i]
        img_r, img_c, mask_r, mask_c = _coords(s)
        # bilinear image vs nearest mask: the same place up to one source pixel
        assert float((img_r - mask_r).abs().max()) <= 1.0
        assert float((img_c - mask_c).abs().max()) <= 1.0
        assert torch.equal(s["depth"], (s["mask"] + 1).float())  # nearest, never blended
        assert s["mask"].dtype == torch.int64 and s["depth"].dtype == torch.float32


def test_photometric_and_dtype_transforms_leave_depth_and_mask_unscaled() -> None:
    s = CoordinateScenes()[0]
    t = v2.Compose(
        [v2.ColorJitter(brightness=0.5, contrast=0.5), v2.ToDtype(torch.float64, scale=True)]
    )
    out = t(s)
    assert torch.equal(out["depth"], s["depth"]) and out["depth"].dtype == torch.float32
    assert torch.equal(out["mask"], s["mask"])
    assert out["image"].dtype == torch.float64


def test_plain_tensor_samples_would_misalign_which_as_tv_tensors_prevents() -> None:
    raw = CoordinateScenes()._load(0)
    plain = {k: v.as_subclass(torch.Tensor) for k, v in raw.items()}
    flip = v2.RandomHorizontalFlip(p=1.0)
    out = flip(plain)  # v2 transforms only the first plain tensor (the image)
    assert torch.equal(out["mask"], plain["mask"])
    wrapped = flip(as_tv_tensors(plain))  # type: ignore[arg-type]
    assert torch.equal(wrapped["mask"], plain["mask"].flip(-1))
    assert torch.equal(wrapped["depth"], plain["depth"].flip(-1))


def test_presets_are_v2_pipelines_and_pad_masks_with_ignore() -> None:
    assert isinstance(eval_transform(8), v2.Compose)
    assert isinstance(train_transform(8), v2.Compose)
    s = CoordinateScenes()[0]
    out = PadIfSmaller((16, 24), ignore_index=999)(s)
    assert out["image"].shape == (3, 16, 24)
    assert int((out["mask"] == 999).sum()) == 16 * 24 - H * W
    assert float(out["depth"][H:].abs().max()) == 0.0 and type(out["depth"]) is DepthMap
    assert PadIfSmaller(4)(s) is s  # nothing to pad: the same sample


def test_no_torchvision_class_names_are_shadowed() -> None:
    for name in ("Compose", "Resize", "CenterCrop", "RandomCrop", "RandomHorizontalFlip"):
        assert name not in T.__all__ and not hasattr(T, name)


def test_seeded_is_deterministic_and_keeps_the_global_rng() -> None:
    x = torch.arange(8.0).view(1, 1, 8)

    def run(seed: int) -> list[bool]:
        t = Seeded(v2.RandomHorizontalFlip(), seed=seed)
        return [bool(t(x)[0, 0, 0] == 7) for _ in range(16)]

    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = run(0)
    after = torch.rand(3)
    assert torch.equal(before, after)  # global stream continues as if nothing ran
    assert a == run(0) and a != run(1) and any(a) and not all(a)
    with pytest.raises(TypeError, match="must be callable"):
        Seeded(3)  # type: ignore[arg-type]


def test_dataloader_over_a_v2_pipeline_gives_plain_batches() -> None:
    t = v2.Compose([v2.RandomResizedCrop(16, antialias=True), v2.RandomHorizontalFlip()])
    ds = create_dataset("shapes", split="train", size=8, image_size=32, transform=Seeded(t))
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 16, 16)
    assert batch["mask"].shape == (4, 16, 16) and batch["depth"].shape == (4, 16, 16)
    assert batch["label"].shape == (4,)
    assert float(batch["image"].min()) >= 0.0 and float(batch["image"].max()) <= 1.0

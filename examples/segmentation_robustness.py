"""Segmentation robustness on synthetic scenes: clean vs EmbedAttack(patch) vs SegPGD.

Takes hazy scenes from the built-in ``shapes`` dataset (background + 4 shape classes, a 1-px
border of every mask marked ``ignore_index`` to show how unlabelled pixels are handled),
trains a ``LinearSegmenter`` with ``fit()`` on the frozen built-in encoder
``vit_tiny_shapes`` (self-supervised on ``shapes``, weights shipped in the package), then
attacks it with the task-agnostic EmbedAttack on the patch tokens and with SegPGD and prints
the mIoU / pixel-accuracy table. Runs on CPU in about a minute.

    python examples/segmentation_robustness.py
"""

from __future__ import annotations

import torch

from ssl_robust.adaptors import LinearSegmenter, TaskModel, fit
from ssl_robust.attacks import EmbedAttack, SegPGD
from ssl_robust.data import create_dataset
from ssl_robust.encoders import create_encoder
from ssl_robust.metrics import MeanIoU

IGNORE = 255
CLASSES = 5  # background + circle, square, triangle, cross


def make_scenes(n: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 3, 32, 32) in [0, 1] and masks (n, 32, 32) int64 with an ignored border."""
    data = create_dataset("shapes", split=split, size=n, image_size=32, contrast=0.35)
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=n)))
    masks = batch["mask"].clone()
    masks[:, 0], masks[:, -1], masks[:, :, 0], masks[:, :, -1] = IGNORE, IGNORE, IGNORE, IGNORE
    return batch["image"], masks


def evaluate(model: TaskModel, images: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    miou = MeanIoU(num_classes=CLASSES, ignore_index=IGNORE)
    with torch.no_grad():
        logits = model(images)
    miou.update(logits, masks)
    valid = masks != IGNORE
    acc = float(((logits.argmax(1) == masks) & valid).sum() / valid.sum())
    return float(miou.compute()), acc


def main() -> None:
    encoder = create_encoder("vit_tiny_shapes", pretrained=True)
    torch.manual_seed(0)  # the head's initialization
    model = TaskModel(encoder, LinearSegmenter(encoder.embed_dim, num_classes=CLASSES))
    train = make_scenes(512, "train")
    batches = [(train[0][i : i + 16], train[1][i : i + 16]) for i in range(0, 512, 16)]
    # The paper's segmentation preset (AdamW, wd 1e-3, crops + flips) with fewer epochs and a
    # larger learning rate, for a CPU.
    fit(
        model,
        batches,
        preset="segmentation",
        epochs=4,
        lr=1e-3,
        ignore_index=IGNORE,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )

    images, masks = make_scenes(64, "val")
    gen = torch.Generator().manual_seed(0)
    noise = (images + (torch.rand(images.shape, generator=gen) * 2 - 1) * 8 / 255).clamp(0, 1)
    embed = EmbedAttack(model.encoder, tokens="patch", generator=gen)(images)
    segpgd = SegPGD(model, ignore_index=IGNORE, generator=gen)(images, masks)

    print(f"{'input':<28} {'mIoU':>6} {'pixel acc':>10}")
    for name, x in (
        ("clean", images),
        ("uniform noise (eps 8/255)", noise),
        ("EmbedAttack(tokens='patch')", embed),
        ("SegPGD", segpgd),
    ):
        miou, acc = evaluate(model, x, masks)
        print(f"{name:<28} {miou:6.3f} {acc:10.3f}")


if __name__ == "__main__":
    main()

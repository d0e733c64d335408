"""A user's script, written against the public API only.

torchvision v2 transforms → create_dataset → DataLoader (dict batches) → fit → attacks →
metrics, and the same with a torchvision-style (image, target) dataset.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from ssl_robust.adaptors import LinearClassifier, LinearSegmenter, TaskModel, fit
from ssl_robust.attacks import PGD, EmbedAttack, SegPGD
from ssl_robust.data import Seeded, create_dataset, unpack_batch
from ssl_robust.encoders import create_encoder
from ssl_robust.metrics import Accuracy, MeanIoU

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 8 / 255


def _miou(model: TaskModel, loader: DataLoader, classes: int, attack: SegPGD | None) -> float:
    miou = MeanIoU(num_classes=classes)
    for batch in loader:  # dict batches of Samples, split by the library's public helper
        images, masks = unpack_batch(batch, target="mask")
        if attack is not None:
            adv = attack(images, masks)
            assert float((adv - images).abs().max()) <= EPS + 1e-6
            assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
            images = adv
        with torch.no_grad():
            miou.update(model(images), masks)
    return float(miou.compute())


def test_v2_transforms_dataset_loader_fit_attack_metric() -> None:
    augment = v2.Compose(
        [v2.RandomResizedCrop(32, scale=(0.6, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    )
    train = create_dataset(
        "shapes", split="train", size=96, image_size=32, transform=Seeded(augment, seed=0)
    )
    val = create_dataset("shapes", split="val", size=32, image_size=32)
    classes = train.info.seg_classes  # type: ignore[attr-defined]
    g = torch.Generator().manual_seed(0)
    # the default collate: dict batches, which fit takes as they are (the "mask" target)
    train_loader = DataLoader(train, batch_size=16, shuffle=True, generator=g)
    val_loader = DataLoader(val, batch_size=16)

    encoder = create_encoder("vit_tiny_shapes", pretrained=True)
    torch.manual_seed(0)
    model = TaskModel(encoder, LinearSegmenter(encoder.embed_dim, num_classes=classes)).eval()
    before = _miou(model, val_loader, classes, None)
    history = fit(model, train_loader, epochs=3, lr=3e-3, generator=g, progress=False)
    assert all(torch.isfinite(torch.tensor(v)).all() for v in history.values())
    model.eval()
    clean = _miou(model, val_loader, classes, None)
    attack = SegPGD(model, eps=EPS, steps=5, generator=torch.Generator().manual_seed(1))
    attacked = _miou(model, val_loader, classes, attack)
    assert clean > before  # the head learned from the v2-augmented samples
    assert attacked < clean  # and the attack hurts it

    # the task-agnostic attack on the same loader's images, scored by the same metric type
    images, masks = unpack_batch(next(iter(val_loader)), target="mask")
    adv = EmbedAttack(encoder, tokens="patch", steps=5, generator=torch.Generator())(images)
    with torch.no_grad():
        batch_clean = MeanIoU(classes)(model(images), masks)
        batch_adv = MeanIoU(classes)(model(adv), masks)
    assert batch_adv < batch_clean


def test_torchvision_tuple_dataset_loader_fit_attack_metric() -> None:
    to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    data = datasets.FakeData(
        size=48, image_size=(3, 32, 32), num_classes=4, transform=to_tensor, random_offset=0
    )
    loader = DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator())
    encoder = create_encoder("vit_tiny_shapes", pretrained=True)
    torch.manual_seed(0)
    model = TaskModel(encoder, LinearClassifier(encoder.embed_dim, 4))
    fit(model, loader, epochs=2, lr=1e-2, progress=False)
    model.eval()
    clean, attacked = Accuracy(), Accuracy()
    pgd = PGD(model, eps=EPS, steps=5, random_start=False)
    for images, labels in DataLoader(data, batch_size=16):
        adv = pgd(images, labels)
        with torch.no_grad():
            clean.update(model(images), labels)
            attacked.update(model(adv), labels)
    assert 0.0 <= float(attacked.compute()) <= float(clean.compute()) <= 1.0
    assert int(clean.total) == 48

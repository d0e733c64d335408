"""One data path: DataLoaders over create_dataset (Sample dicts) and over torchvision-style
(image, target) datasets feed fit, DeACLTrainer and evaluate directly."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from ssl_robust import DeACLConfig, DeACLTrainer, TaskModel, evaluate, fit
from ssl_robust.data import create_dataset, unpack_batch
from ssl_robust.encoders import VisionTransformer
from ssl_robust.tasks import get_task

INFO_SIZE = 16


def _encoder() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)


def _shapes(size: int = 8):
    return create_dataset("shapes", split="val", size=size, image_size=INFO_SIZE)


@pytest.mark.parametrize("task", ["classification", "segmentation", "depth"])
def test_sample_dataloader_feeds_fit_and_evaluate(task: str) -> None:
    data = _shapes()
    spec = get_task(task)
    model = TaskModel(_encoder(), spec.make_head(16, data.info))
    loader = DataLoader(data, batch_size=4)
    hist = fit(model, loader, epochs=1, progress=False)
    assert len(hist["loss"]) == 1 and torch.isfinite(torch.tensor(hist["loss"])).all()
    res = evaluate(model, loader, info=data.info)
    assert res.samples == len(data) and set(res.headline["model"]) == {"clean"}
    # the Dataset itself (no loader) also works in fit: batched with the preset's size
    assert len(fit(model, data, epochs=1, progress=False)["loss"]) == 1


def test_torchvision_tuple_dataset_feeds_fit_evaluate_and_deacl() -> None:
    from torchvision.datasets import FakeData
    from torchvision.transforms import ToTensor

    data = FakeData(size=8, image_size=(3, 16, 16), num_classes=3, transform=ToTensor())
    loader = DataLoader(data, batch_size=4)
    enc = _encoder()
    model = TaskModel(enc, get_task("classification").make_head(16, _shapes().info))
    fit(model, loader, epochs=1, progress=False)
    res = evaluate(model, loader)
    assert 0.0 <= res.headline["model"]["clean"] <= 1.0 and res.samples == 8
    trainer = DeACLTrainer(_encoder(), config=DeACLConfig(steps=1, epochs=1, warmup_epochs=0))
    assert len(trainer.fit(loader, progress=False)) == 1


def test_deacl_takes_sample_dict_batches() -> None:
    loader = DataLoader(_shapes(), batch_size=4)
    trainer = DeACLTrainer(_encoder(), config=DeACLConfig(steps=1, epochs=1, warmup_epochs=0))
    stats = trainer.training_step(next(iter(loader)))
    assert set(stats) >= {"loss", "clean_cos", "adv_cos"}
    assert len(trainer.fit(loader, progress=False)) == 1


def test_mixed_up_batches_name_the_keys_present() -> None:
    data = _shapes()
    model = TaskModel(_encoder(), get_task("depth").make_head(16, data.info))
    images = torch.rand(2, 3, 16, 16)
    bad = [{"image": images, "label": torch.tensor([0, 1])}]
    with pytest.raises(ValueError, match=r"no 'depth' target: its keys are \['image', 'label'\]"):
        fit(model, bad, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"no 'depth' target: its keys are \['image', 'label'\]"):
        evaluate(model, bad)
    with pytest.raises(ValueError, match=r"no 'image': its keys are \['img'\]"):
        unpack_batch({"img": images})
    with pytest.raises(ValueError, match=r"1 item.*'label' target is needed"):
        unpack_batch((images,), target="label")
    with pytest.raises(ValueError, match="bare images"):
        unpack_batch(images, target="mask")
    with pytest.raises(TypeError, match="dict batches"):
        unpack_batch("images")

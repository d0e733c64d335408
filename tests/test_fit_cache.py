"""fit's feature cache: the same batches and augmentations as the image path, computed once."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from ssl_robust import TaskModel, fit
from ssl_robust.data import create_dataset
from ssl_robust.encoders import VisionTransformer
from ssl_robust.tasks import get_task


class _Counting(VisionTransformer):
    calls = 0

    def forward_features(self, x):
        type(self).calls += x.shape[0]
        return super().forward_features(x)


def _train(task: str, cache: bool, **kw: object):
    torch.manual_seed(0)
    enc = _Counting(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
    data = create_dataset("shapes", split="train", size=12, image_size=16)
    torch.manual_seed(1)
    model = TaskModel(enc, get_task(task).make_head(16, data.info))
    loader = DataLoader(
        data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    _Counting.calls = 0
    hist = fit(model, loader, epochs=3, lr=1e-2, cache_features=cache, progress=False,
               generator=torch.Generator().manual_seed(5), **kw)  # fmt: skip
    return hist["loss"], model.adaptor.state_dict(), _Counting.calls


@pytest.mark.parametrize(
    ("task", "combos"), [("classification", 2), ("segmentation", 4), ("depth", 1)]
)
def test_cached_training_equals_the_image_path(task: str, combos: int) -> None:
    loss_a, head_a, calls_a = _train(task, cache=False)
    loss_b, head_b, calls_b = _train(task, cache=True)
    assert loss_b == pytest.approx(loss_a, rel=1e-4, abs=1e-6)
    for key in head_a:
        assert torch.allclose(head_a[key].float(), head_b[key].float(), rtol=1e-4, atol=1e-5), key
    assert calls_a == 3 * 12  # the image path runs the encoder every epoch
    assert calls_b == combos * 12  # the cache once per flip combination


def test_cache_refused_when_crops_change_the_features() -> None:
    with pytest.raises(ValueError, match="cache_features=True needs"):
        _train("segmentation", cache=True, crop_size=8)
    loss, _, calls = _train("segmentation", cache=None, crop_size=8)  # auto: falls back
    assert len(loss) == 3 and calls >= 3 * 12

"""fit(): frozen encoder, presets, ignore_index, determinism, logging, bad input."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from _helpers_dense import NUM_CLASSES, encoder, scenes

from ssl_robust import SSLRobustTypeError, SSLRobustValueError
from ssl_robust.adaptors import (
    PRESETS,
    LinearClassifier,
    LinearDepther,
    LinearSegmenter,
    TaskModel,
    fit,
)
from ssl_robust.adaptors.training import _crop

pytestmark = pytest.mark.usefixtures("one_thread")


def _seg_model() -> TaskModel:
    torch.manual_seed(0)
    return TaskModel(encoder(), LinearSegmenter(32, NUM_CLASSES))


def _seg_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, m, _ = scenes(16, seed=2)
    return [(x[:8], m[:8]), (x[8:], m[8:])]


def test_presets_are_the_papers() -> None:
    c, s, d = PRESETS["classification"], PRESETS["segmentation"], PRESETS["depth"]
    assert (c.optimizer, c.lr, c.batch_size, c.epochs, c.hflip) == ("adam", 0.5, 16, 5, True)
    assert (s.optimizer, s.lr, s.weight_decay, s.epochs, s.batch_size) == (
        "adamw",
        1e-4,
        1e-3,
        50,
        16,
    )
    assert s.crop and s.hflip and s.vflip
    assert (d.optimizer, d.lr, d.weight_decay, d.epochs, d.batch_size) == (
        "adamw",
        1e-4,
        0.01,
        20,
        128,
    )


def test_segmentation_fit_trains_head_only() -> None:
    model = _seg_model()
    model.encoder.train()
    model.encoder.blocks[1].requires_grad_(False)
    enc_state = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    flags = [p.requires_grad for p in model.encoder.parameters()]
    head_before = model.adaptor.conv.weight.clone()
    hist = fit(model, _seg_batches(), epochs=8, lr=5e-2, progress=False)
    assert len(hist["loss"]) == 8 and hist["loss"][-1] < hist["loss"][0]
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, enc_state[k]), k
    assert all(p.grad is None for p in model.encoder.parameters())
    assert flags == [p.requires_grad for p in model.encoder.parameters()]
    assert not torch.equal(head_before, model.adaptor.conv.weight)
    assert not model.training and not model.adaptor.training


def test_encoder_restored_on_error() -> None:
    model = _seg_model()
    model.encoder.train()
    x, m = _seg_batches()[0]
    bad = m.clone()
    bad[0, 0, 0] = 9
    with pytest.raises(SSLRobustValueError, match="ignore_index"):
        fit(model, [(x, m), (x, bad)], epochs=1, progress=False)
    assert model.encoder.training
    assert all(p.requires_grad for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.encoder.parameters())


def test_ignore_index_is_honoured() -> None:
    x, m = _seg_batches()[0]
    model = _seg_model()
    before = {k: v.clone() for k, v in model.adaptor.state_dict().items()}
    hist = fit(model, [(x, torch.full_like(m, 255))], epochs=2, weight_decay=0.0, progress=False)
    assert hist["loss"] == [0.0, 0.0]
    torch.testing.assert_close(model.adaptor.conv.weight, before["conv.weight"])
    # the ignored pixels carry no signal whatever ignore_index is; unignored they do
    opts = dict(epochs=2, lr=1e-2, crop=False, hflip=False, vflip=False, progress=False)
    m1, m2 = m.clone(), m.clone()
    m1[:, :4] = 255
    m2[:, :4] = 127
    a, b, c = _seg_model(), _seg_model(), _seg_model()
    fit(a, [(x, m1)], **opts)  # type: ignore[arg-type]
    fit(b, [(x, m2)], ignore_index=127, **opts)  # type: ignore[arg-type]
    fit(c, [(x, m)], **opts)  # type: ignore[arg-type]
    torch.testing.assert_close(a.adaptor.conv.weight, b.adaptor.conv.weight)
    assert not torch.allclose(a.adaptor.conv.weight, c.adaptor.conv.weight)


def test_deterministic_augmentation() -> None:
    big = [(torch.cat((x, x), -1), torch.cat((m, m), -1)) for x, m in _seg_batches()]
    a, b, c = _seg_model(), _seg_model(), _seg_model()
    fit(a, big, epochs=2, lr=1e-2, generator=torch.Generator().manual_seed(1), progress=False)
    fit(b, big, epochs=2, lr=1e-2, generator=torch.Generator().manual_seed(1), progress=False)
    fit(c, big, epochs=2, lr=1e-2, generator=torch.Generator().manual_seed(2), progress=False)
    assert torch.equal(a.adaptor.conv.weight, b.adaptor.conv.weight)
    assert not torch.equal(a.adaptor.conv.weight, c.adaptor.conv.weight)


def test_crop_keeps_image_and_mask_aligned() -> None:
    target = torch.arange(2 * 10 * 12).view(2, 10, 12)
    images = (target.float() / target.max()).unsqueeze(1).expand(2, 3, 10, 12)
    ci, ct = _crop(images, target, (4, 5), torch.Generator().manual_seed(0))
    assert ci.shape == (2, 3, 4, 5) and ct.shape == (2, 4, 5)
    torch.testing.assert_close(ci[:, 0] * target.max(), ct.float())
    assert bool((ct[:, 0, 1:] - ct[:, 0, :-1] == 1).all())  # contiguous window


def test_depth_and_classification_fit() -> None:
    x, _, d = scenes(16, seed=3)
    dep = TaskModel(encoder(), LinearDepther(32, max_depth=8.0, bins=16))
    hist = fit(dep, [(x, d.unsqueeze(1))], epochs=5, lr=5e-2, progress=False)
    assert hist["loss"][-1] < hist["loss"][0]
    cls = TaskModel(encoder(), LinearClassifier(32, 2))
    labels = (d.mean((1, 2)) > d.mean()).long()
    hist = fit(cls, [(x, labels)], epochs=3, lr=1e-2, progress=False)
    assert len(hist["loss"]) == 3


def test_logging_and_optional_tqdm(caplog, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # tqdm "not installed"
    with caplog.at_level(logging.INFO, logger="ssl_robust.adaptors"):
        fit(_seg_model(), _seg_batches(), epochs=2, progress=True)
    assert "epoch 2/2" in caplog.text


def test_dataset_input_uses_preset_batch_size() -> None:
    x, m = _seg_batches()[0]
    ds = torch.utils.data.TensorDataset(x, m)
    hist = fit(_seg_model(), ds, epochs=1, progress=False)
    assert len(hist["loss"]) == 1 and hist["loss"][0] > 0


def test_bad_inputs() -> None:
    model = _seg_model()
    batches = _seg_batches()
    with pytest.raises(SSLRobustValueError, match="does not match the head's task"):
        fit(model, batches, preset="depth")
    with pytest.raises(SSLRobustValueError, match="preset"):
        fit(model, batches, preset="detection")  # type: ignore[arg-type]
    with pytest.raises(SSLRobustTypeError, match="re-iterable"):
        fit(model, iter(batches), progress=False)
    with pytest.raises(SSLRobustTypeError, match="TaskModel"):
        fit(model.adaptor, batches)  # type: ignore[arg-type]
    with pytest.raises(SSLRobustValueError, match="lr"):
        fit(model, batches, lr=-1.0)
    x, m = batches[0]
    with pytest.raises(SSLRobustTypeError, match="integer class indices"):
        fit(model, [(x, m.float())], progress=False)
    with pytest.raises(SSLRobustValueError, match="must have shape"):
        fit(model, [(x, m[:, :5])], progress=False)
    dep = TaskModel(encoder(), LinearDepther(32, bins=4))
    with pytest.raises(SSLRobustValueError, match="must not be negative"):
        fit(dep, [(x, -torch.ones(8, 16, 16))], progress=False)

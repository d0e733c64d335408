"""SEA's segmentation losses (formulas, gradients) and SegPGD(loss=...) on either schedule."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_robust.attacks import SegPGD
from ssl_robust.losses import SEGMENTATION_LOSSES, sea_loss

SEA = [name for name in SEGMENTATION_LOSSES if name != "segpgd"]


def _case(seed=0, b=2, c=4, h=3, w=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, c, (b, h, w), generator=g)
    target[0, 0, :3] = 255
    target[0, 1, 1] = logits[0, :, 1, 1].argmax()  # at least some correct pixels
    return logits, target


def _reference(name, logits, target, ignore_index=255, normalize="valid"):
    """Pixel by pixel, from the definitions (softmax, one-hot, KL sums, class counts)."""
    b, c, h, w = logits.shape
    out = []
    for i in range(b):
        valid = [(r, s) for r in range(h) for s in range(w) if int(target[i, r, s]) != ignore_index]
        counts = {k: sum(1 for r, s in valid if int(target[i, r, s]) == k) for k in range(c)}
        total = 0.0
        for r, s in valid:
            z = logits[i, :, r, s].tolist()
            y = int(target[i, r, s])
            m = max(z)
            e = [math.exp(v - m) for v in z]
            p = [v / sum(e) for v in e]
            correct = z[y] >= m
            if name == "ce":
                v = -math.log(p[y])
            elif name == "masked_ce":
                v = -math.log(p[y]) if correct else 0.0
            elif name == "js":
                q = [1.0 if k == y else 0.0 for k in range(c)]
                mid = [(p[k] + q[k]) / 2 for k in range(c)]
                kl_p = sum(p[k] * math.log(p[k] / mid[k]) for k in range(c) if p[k] > 0)
                kl_q = sum(q[k] * math.log(q[k] / mid[k]) for k in range(c) if q[k] > 0)
                v = 0.5 * kl_p + 0.5 * kl_q
            elif name == "masked_spherical":
                v = -z[y] / math.sqrt(sum(t * t for t in z)) if correct else 0.0
            else:  # balanced_ce
                v = -(1 - counts[y] / len(valid)) * math.log(p[y])
            total += v
        n = max(len(valid), 1) if normalize == "valid" else h * w
        out.append(total / n)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("normalize", ["valid", "hw"])
@pytest.mark.parametrize("name", SEA)
def test_sea_losses_match_the_definitions_in_float64(name, normalize):
    logits, target = _case()
    ours = sea_loss(logits, target, loss=name, normalize=normalize)
    torch.testing.assert_close(
        ours, _reference(name, logits, target, normalize=normalize), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("name", SEA)
def test_sea_losses_gradcheck(name):
    logits, target = _case(1, b=1, c=3, h=2, w=3)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: sea_loss(z, target, loss=name), (logits,))


def test_js_is_bounded_by_ln2_and_all_ignored_image_is_zero():
    logits, target = _case()
    js = sea_loss(logits * 50, target, loss="js")
    assert (js >= 0).all() and (js <= math.log(2) + 1e-12).all()
    target[1] = 255
    for name in SEA:
        assert sea_loss(logits, target, loss=name)[1] == 0


def test_unknown_loss_names_the_valid_ones():
    logits, target = _case()
    with pytest.raises(ValueError, match="loss must be one of 'ce', 'masked_ce', 'js'"):
        sea_loss(logits, target, loss="dice")
    with pytest.raises(ValueError, match="loss must be one of 'segpgd', 'ce'"):
        SegPGD(torch.nn.Identity(), loss="dice")


@pytest.fixture
def seg_data():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        masks = model(x).argmax(1)
    masks[0, :2] = 255
    return model, x, masks


@pytest.mark.parametrize("schedule", ["fixed", "apgd"])
@pytest.mark.parametrize("name", SEGMENTATION_LOSSES)
def test_segpgd_with_each_loss_and_schedule(name, schedule, seg_data):
    model, x, masks = seg_data
    atk = SegPGD(
        model,
        loss=name,
        schedule=schedule,
        steps=6,
        eps=4 / 255,
        generator=torch.Generator().manual_seed(0),
    )
    res = atk.run(x, masks)
    assert (res.adversarial - x).abs().max() <= 4 / 255 + 1e-6
    prepared = atk.prepare_target(x, masks)
    with torch.no_grad():
        out = model(res.adversarial)
    share = atk.correct_share(out, prepared)
    assert (share < 1).any()  # the attack moved some pixels (all were correct at the start)
    assert torch.equal(
        res.success, (share < atk.success_threshold) & (masks != 255).flatten(1).any(1)
    )
    damage, broken = atk.damage(out, prepared)
    torch.testing.assert_close(damage, 1 - share)
    assert torch.equal(broken, share == 0)


@pytest.mark.parametrize("name", SEA)
def test_segpgd_loss_is_the_functional_loss_and_evaluate_is_one_pass(name, seg_data):
    model, x, masks = seg_data
    atk = SegPGD(model, loss=name)
    prepared = atk.prepare_target(x, masks)
    out = model(x)
    torch.testing.assert_close(atk.loss(out, prepared, 0), sea_loss(out, masks, loss=name))
    loss, success, score = atk.evaluate(out, prepared, 0)
    torch.testing.assert_close(loss, atk.loss(out, prepared, 0))
    assert torch.equal(success, atk.success(out, prepared))
    torch.testing.assert_close(score, atk.score(out, prepared))
    assert not hasattr(atk, "_share")


def test_segpgd_apgd_early_stop_gives_the_same_result(seg_data):
    model, x, masks = seg_data
    kw = dict(loss="masked_ce", schedule="apgd", steps=8, eps=6 / 255, success_threshold=0.9)
    full = SegPGD(model, generator=torch.Generator().manual_seed(0), **kw).run(x, masks)
    es = SegPGD(model, early_stop=True, generator=torch.Generator().manual_seed(0), **kw).run(
        x, masks
    )
    torch.testing.assert_close(es.adversarial, full.adversarial, rtol=0, atol=1e-6)
    assert torch.equal(es.success, full.success) and full.success.any()
    assert (es.steps <= full.steps).all() and (es.steps < full.steps).any()

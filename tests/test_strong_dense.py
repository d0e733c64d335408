"""Depth and embedding attacks on the APGD schedule, the second depth loss, per-sample damage."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import linear_classifier

from ssl_robust.attacks import DepthPGD, EmbedAttack, embedding_distance
from ssl_robust.losses import l1_log_loss


def _depth_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(2, 4, 5, generator=g, dtype=torch.float64) + 0.2
    target = torch.rand(2, 4, 5, generator=g, dtype=torch.float64) * 3
    target[0, 0] = 0  # invalid pixels
    return pred, target


def test_l1_log_matches_the_formula_and_gradcheck():
    pred, target = _depth_case()
    ours = l1_log_loss(pred, target)
    ref = []
    for p, t in zip(pred, target, strict=True):
        m = t > 0
        ref.append((p[m].log() - t[m].log()).abs().mean())
    torch.testing.assert_close(ours, torch.stack(ref), rtol=1e-12, atol=0)
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: l1_log_loss(p, target), (pred,))
    assert l1_log_loss(pred, torch.zeros_like(target)).abs().max() == 0


@pytest.fixture
def depth_model():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 1, 3, padding=1)
    return lambda x: F.softplus(net(x)) + 0.1


@pytest.mark.parametrize("schedule", ["fixed", "apgd"])
@pytest.mark.parametrize("loss", ["silog_grad", "l1_log"])
def test_depthpgd_losses_on_both_schedules(loss, schedule, depth_model):
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    depth = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 + 0.5
    atk = DepthPGD(
        depth_model,
        loss=loss,
        schedule=schedule,
        steps=8,
        generator=torch.Generator().manual_seed(0),
    )
    res = atk.run(x, depth)
    assert (res.adversarial - x).abs().max() <= 8 / 255 + 1e-6
    prepared = atk.prepare_target(x, depth)
    with torch.no_grad():
        clean, adv = depth_model(x), depth_model(res.adversarial)
    assert (atk.loss(adv, prepared, 0) >= atk.loss(clean, prepared, 0) - 1e-6).all()
    if loss == "l1_log":
        torch.testing.assert_close(atk.loss(adv, prepared, 0), l1_log_loss(adv, depth, prepared[1]))
    damage, broken = atk.damage(adv, prepared)
    rmse = ((adv[:, 0] - depth).pow(2).flatten(1).mean(1)).sqrt()  # every pixel is valid here
    torch.testing.assert_close(damage, rmse)
    assert not broken.any()


def test_depth_loss_name_is_checked(depth_model):
    with pytest.raises(ValueError, match="loss must be one of 'silog_grad', 'l1_log'; got 'l2'"):
        DepthPGD(depth_model, loss="l2")


@pytest.mark.parametrize("schedule", ["fixed", "apgd"])
def test_embed_attack_on_both_schedules_and_damage(schedule):
    enc = linear_classifier(6)  # a (B, 6) embedding
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    atk = EmbedAttack(enc, schedule=schedule, steps=6, generator=torch.Generator().manual_seed(0))
    res = atk.run(x)
    with torch.no_grad():
        ref, adv = enc(x), enc(res.adversarial)
    torch.testing.assert_close(res.loss, embedding_distance(adv, ref))
    damage, broken = atk.damage(adv, ref)
    torch.testing.assert_close(damage, embedding_distance(adv, ref))
    assert (damage > 0).all() and not broken.any()

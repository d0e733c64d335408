"""Dense losses against independent loop implementations written from the formulas."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_vit

from ssl_robust import SSLRobustTypeError, SSLRobustValueError
from ssl_robust.adaptors import LinearSegmenter, TaskModel, fit
from ssl_robust.attacks import SegPGD
from ssl_robust.losses import (
    depth_loss,
    dlr_loss,
    gradient_matching_loss,
    logit_margin,
    scale_invariant_log_loss,
    sea_loss,
    segpgd_loss,
)
from ssl_robust.metrics import MeanIoU

pytestmark = pytest.mark.usefixtures("one_thread")

G = torch.Generator().manual_seed(0)


def ref_segpgd(logits, target, step, steps, ignore_index, normalize):  # type: ignore[no-untyped-def]
    lam = step / (2 * steps)
    out = []
    b, _, h, w = logits.shape
    for i in range(b):
        total, n = 0.0, 0
        for y in range(h):
            for x in range(w):
                lbl = int(target[i, y, x])
                if lbl == ignore_index:
                    continue
                n += 1
                z = logits[i, :, y, x]
                ce = float(torch.logsumexp(z, 0) - z[lbl])
                right = int(z.argmax()) == lbl
                total += ((1 - lam) if right else lam) * ce
        denom = max(n, 1) if normalize == "valid" else h * w
        out.append(total / denom)
    return torch.tensor(out, dtype=torch.float64)


def ref_logdiff(pred, target, mask):  # type: ignore[no-untyped-def]
    g = torch.zeros_like(target)
    for idx in zip(*torch.nonzero(mask, as_tuple=True), strict=True):
        g[idx] = math.log(float(pred[idx])) - math.log(float(target[idx]))
    return g


def ref_si(pred, target, mask, alpha=1.0, rho=0.85):  # type: ignore[no-untyped-def]
    out = []
    for i in range(pred.shape[0]):
        vals = [
            math.log(float(p)) - math.log(float(t))
            for p, t, m in zip(
                pred[i].flatten(), target[i].flatten(), mask[i].flatten(), strict=True
            )
            if m
        ]
        if not vals:
            out.append(0.0)
            continue
        n = len(vals)
        v = sum(g * g for g in vals) / n - rho * (sum(vals) / n) ** 2
        out.append(alpha * math.sqrt(max(v, 0.0)))
    return torch.tensor(out, dtype=torch.float64)


def ref_grad(pred, target, mask, scales=4):  # type: ignore[no-untyped-def]
    out = []
    for i in range(pred.shape[0]):
        r = ref_logdiff(pred[i], target[i], mask[i])
        total = 0.0
        for k in range(scales):
            s = 2**k
            rk, mk = r[::s, ::s], mask[i][::s, ::s]
            h, w = rk.shape
            acc = 0.0
            for y in range(h):
                for x in range(w):
                    if x + 2 < w and mk[y, x] and mk[y, x + 2]:
                        acc += abs(float(rk[y, x + 2] - rk[y, x]))
                    if y + 2 < h and mk[y, x] and mk[y + 2, x]:
                        acc += abs(float(rk[y + 2, x] - rk[y, x]))
            total += acc / max(int(mk.sum()), 1)
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


def _seg_data(ignore_frac: float = 0.3):  # type: ignore[no-untyped-def]
    logits = torch.randn(3, 4, 5, 6, generator=G, dtype=torch.float64)
    target = torch.randint(0, 4, (3, 5, 6), generator=G)
    ignore = torch.rand(3, 5, 6, generator=G) < ignore_frac
    target[ignore] = 255
    # make some pixels right so both sets are non-empty
    target[:, 0] = logits.argmax(1)[:, 0]
    return logits, target


@pytest.mark.parametrize("normalize", ["valid", "hw"])
@pytest.mark.parametrize("step", [0, 3, 10])
def test_segpgd_matches_reference(normalize: str, step: int) -> None:
    logits, target = _seg_data()
    got = segpgd_loss(logits, target, step=step, steps=10, normalize=normalize)  # type: ignore[arg-type]
    want = ref_segpgd(logits, target, step, 10, 255, normalize)
    torch.testing.assert_close(got, want)


def test_segpgd_empty_sets_no_nan() -> None:
    logits, target = _seg_data()
    target[0] = 255  # no valid pixel
    target[1] = logits.argmax(1)[1]  # every pixel right: wrong set empty
    target[2] = (logits.argmax(1)[2] + 1) % 4  # every pixel wrong: right set empty
    lg = logits.clone().requires_grad_(True)
    loss = segpgd_loss(lg, target, step=0, steps=10)
    (grad,) = torch.autograd.grad(loss.sum(), lg)
    assert loss[0] == 0 and torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert loss[2] == 0  # λ_0 = 0 and no right pixel
    assert grad[0].abs().sum() == 0
    torch.testing.assert_close(loss, ref_segpgd(logits, target, 0, 10, 255, "valid"))


def test_segpgd_gradcheck() -> None:
    logits, target = _seg_data()
    lg = logits[:, :, :3, :3].clone().requires_grad_(True)
    tgt = target[:, :3, :3]
    assert torch.autograd.gradcheck(
        lambda z: segpgd_loss(z, tgt, step=4, steps=10), (lg,), eps=1e-6, atol=1e-5
    )


def test_segpgd_bad_inputs() -> None:
    logits, target = _seg_data()
    with pytest.raises(SSLRobustTypeError, match="integer class indices"):
        segpgd_loss(logits, target.double(), step=0, steps=2)
    with pytest.raises(SSLRobustValueError, match="must have shape"):
        segpgd_loss(logits, target[:, :4], step=0, steps=2)
    bad = target.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(SSLRobustValueError, match=r"\[0, 3\] or the ignore_index"):
        segpgd_loss(logits, bad, step=0, steps=2)
    with pytest.raises(SSLRobustValueError, match="normalize"):
        segpgd_loss(logits, target, step=0, steps=2, normalize="mean")  # type: ignore[arg-type]
    with pytest.raises(SSLRobustValueError, match="step must be"):
        segpgd_loss(logits, target, step=5, steps=2)
    with pytest.raises(SSLRobustValueError, match=r"logits must be a float tensor \(B, C, H, W\)"):
        segpgd_loss(logits[:, :, 0], target, step=0, steps=2)


def test_every_entry_taking_logits_or_ignore_index_checks_them_alike() -> None:
    """One check each (ssl_robust._checks), used by losses, SegPGD, MeanIoU and fit."""
    logits, target = _seg_data()
    model = TaskModel(tiny_vit(0), LinearSegmenter(32, 3))
    for call in (
        lambda: segpgd_loss(logits, target, step=0, steps=2, ignore_index=2.0),
        lambda: sea_loss(logits, target, loss="ce", ignore_index=None),
        lambda: SegPGD(model, ignore_index="255"),
        lambda: MeanIoU(3, ignore_index=True),
        lambda: fit(model, [], ignore_index=255.0, progress=False),
    ):
        with pytest.raises(SSLRobustTypeError, match="ignore_index must be an int; got"):
            call()
    for call, layout in (
        (lambda: sea_loss(logits.long(), target, loss="ce"), r"\(B, C, H, W\)"),
        (lambda: dlr_loss(logits, target), r"\(B, C\)"),
        (lambda: logit_margin(torch.zeros(3), target[:, 0, 0]), r"\(B, C\)"),
    ):
        with pytest.raises(SSLRobustValueError, match="logits must be a float tensor " + layout):
            call()


def _depth_data(shape=(3, 9, 10)):  # type: ignore[no-untyped-def]
    target = torch.rand(*shape, generator=G, dtype=torch.float64) * 5 + 0.5
    pred = torch.rand(*shape, generator=G, dtype=torch.float64) * 5 + 0.5
    target[torch.rand(*shape, generator=G) < 0.2] = 0.0  # missing pixels
    return pred, target


def test_depth_losses_match_reference() -> None:
    pred, target = _depth_data()
    mask = target > 0
    torch.testing.assert_close(scale_invariant_log_loss(pred, target), ref_si(pred, target, mask))
    torch.testing.assert_close(
        scale_invariant_log_loss(pred, target, alpha=2.0, rho=0.5),
        ref_si(pred, target, mask, 2.0, 0.5),
    )
    torch.testing.assert_close(gradient_matching_loss(pred, target), ref_grad(pred, target, mask))
    torch.testing.assert_close(
        gradient_matching_loss(pred, target, scales=2), ref_grad(pred, target, mask, 2)
    )
    torch.testing.assert_close(
        depth_loss(pred, target),
        ref_si(pred, target, mask) + 0.5 * ref_grad(pred, target, mask),
    )


def test_depth_loss_layouts_and_custom_mask() -> None:
    pred, target = _depth_data()
    mask = (target > 1.0) & (target <= 4.0)
    want = ref_si(pred, target, mask) + 0.5 * ref_grad(pred, target, mask)
    torch.testing.assert_close(depth_loss(pred.unsqueeze(1), target, mask), want)
    torch.testing.assert_close(depth_loss(pred, target.unsqueeze(1), mask.unsqueeze(1)), want)


def test_depth_loss_finite_where_equal_and_empty_mask() -> None:
    pred, target = _depth_data()
    pred = torch.where(target > 0, target, pred)  # pred == target on the mask
    pred[1] = 2.0
    target[2] = 0.0  # empty mask
    p = pred.clone().requires_grad_(True)
    loss = depth_loss(p, target)
    (grad,) = torch.autograd.grad(loss.sum(), p)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert loss[0] == 0 and loss[2] == 0 and grad[2].abs().sum() == 0
    assert loss[1] > 0


@pytest.mark.parametrize("fn", [scale_invariant_log_loss, gradient_matching_loss, depth_loss])
def test_depth_gradcheck(fn) -> None:  # type: ignore[no-untyped-def]
    pred, target = _depth_data((2, 6, 7))
    p = pred.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fn(x, target), (p,), eps=1e-6, atol=1e-5)


def test_depth_bad_inputs() -> None:
    pred, target = _depth_data()
    with pytest.raises(SSLRobustValueError, match="must have shape"):
        depth_loss(pred, target[:, :5])
    with pytest.raises(SSLRobustValueError, match="must not be negative"):
        depth_loss(pred, -target)
    with pytest.raises(SSLRobustTypeError, match="bool tensor"):
        depth_loss(pred, target, (target > 0).double())
    with pytest.raises(SSLRobustValueError, match="mask must have"):
        depth_loss(pred, target, (target > 0)[:, :3])
    with pytest.raises(SSLRobustTypeError, match="floating-point"):
        depth_loss(pred, target.long())
    with pytest.raises(SSLRobustValueError, match="rho"):
        scale_invariant_log_loss(pred, target, rho=1.5)
    with pytest.raises(SSLRobustValueError, match="scales"):
        gradient_matching_loss(pred, target, scales=0)

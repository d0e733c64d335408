"""MeanIoU and DepthMetrics against hand computations over several updates."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_robust import SSLRobustTypeError, SSLRobustValueError
from ssl_robust.metrics import DepthMetrics, MeanIoU

pytestmark = pytest.mark.usefixtures("one_thread")


def test_miou_hand_computed_over_updates() -> None:
    m = MeanIoU(num_classes=3, ignore_index=255)
    # batch 1: labels
    m.update(torch.tensor([[[0, 0], [1, 2]]]), torch.tensor([[[0, 1], [1, 255]]]))
    # batch 2: logits (argmax = [[2, 1]]) ; target [[2, 2]]
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, 5.0]], [[5.0, 0.0]]]])
    m.update(logits, torch.tensor([[[2, 2]]]))
    # confusion (target row, pred col): (0,0)=1 (1,0)=1 (1,1)=1 (2,2)=1 (2,1)=1
    iou0 = 1 / (1 + 1 + 0)  # tp=1, fp=1 (target 1 predicted 0), fn=0
    iou1 = 1 / (1 + 1 + 1)  # tp=1, fp=1 (target 2 -> 1), fn=1 (target 1 -> 0)
    iou2 = 1 / (1 + 0 + 1)  # tp=1, fn=1
    assert m.compute() == pytest.approx((iou0 + iou1 + iou2) / 3)
    torch.testing.assert_close(m.per_class(), torch.tensor([iou0, iou1, iou2], dtype=torch.float64))
    m.reset()
    assert math.isnan(m.compute())


def test_miou_skips_empty_union_and_ignores() -> None:
    m = MeanIoU(num_classes=4, ignore_index=-1)
    m.update(torch.tensor([[[1, 1, 3]]]), torch.tensor([[[1, -1, -1]]]))
    # classes 0, 2, 3 have empty union (pred 3 sits on an ignored pixel)
    assert m.compute() == 1.0
    assert torch.isnan(m.per_class()[[0, 2, 3]]).all()


def test_miou_bad_inputs() -> None:
    m = MeanIoU(num_classes=3)
    with pytest.raises(SSLRobustValueError, match="num_classes"):
        MeanIoU(num_classes=0)
    with pytest.raises(SSLRobustValueError, match="must have shape"):
        m.update(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(SSLRobustTypeError, match="integer class indices"):
        m.update(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 4))
    with pytest.raises(SSLRobustValueError, match="ignore_index"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 3], [1, 255]]]))
    with pytest.raises(SSLRobustValueError, match="3 channels"):
        m.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(SSLRobustTypeError, match="integer labels"):
        m.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def _ref_depth(pred, target, lo, hi):  # type: ignore[no-untyped-def]
    rows = []
    for p, t in zip(pred, target, strict=True):
        vals = [
            (float(a), float(b))
            for a, b in zip(p.flatten(), t.flatten(), strict=True)
            if lo < b <= hi
        ]
        if not vals:
            continue
        n = len(vals)
        rmse = math.sqrt(sum((a - b) ** 2 for a, b in vals) / n)
        rel = sum(abs(a - b) / b for a, b in vals) / n
        d1 = sum(max(a / b, b / a) < 1.25 for a, b in vals) / n
        rows.append((rmse, rel, d1))
    return [sum(r[i] for r in rows) / len(rows) for i in range(3)]


def test_depth_metrics_hand_computed_over_updates() -> None:
    g = torch.Generator().manual_seed(0)
    m = DepthMetrics(min_depth=0.5, max_depth=4.0)
    preds, targets = [], []
    for b in (2, 3):
        t = torch.rand(b, 5, 6, generator=g) * 5
        p = t * (0.8 + 0.5 * torch.rand(b, 5, 6, generator=g))
        t[0] = 0.0 if b == 3 else t[0]  # an image without valid pixels is skipped
        m.update(p.unsqueeze(1) if b == 2 else p, t)
        preds.append(p)
        targets.append(t)
    got = m.compute()
    want = _ref_depth(torch.cat(preds), torch.cat(targets), 0.5, 4.0)
    assert got["rmse"] == pytest.approx(want[0], rel=1e-6)
    assert got["abs_rel"] == pytest.approx(want[1], rel=1e-6)
    assert got["delta1"] == pytest.approx(want[2], rel=1e-6)
    m.reset()
    assert math.isnan(m.compute()["rmse"])


def test_depth_metrics_bad_inputs() -> None:
    with pytest.raises(SSLRobustValueError, match="smaller than max_depth"):
        DepthMetrics(min_depth=5.0, max_depth=1.0)
    m = DepthMetrics()
    with pytest.raises(SSLRobustValueError, match="must have shape"):
        m.update(torch.rand(2, 4, 4), torch.rand(2, 4, 5))
    with pytest.raises(SSLRobustValueError, match="must not be negative"):
        m.update(torch.rand(2, 4, 4), -torch.rand(2, 4, 4))

"""Accuracy: hand computations over several updates, reset, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_robust.metrics import Accuracy


def test_accuracy_over_several_updates_and_reset():
    acc = Accuracy()
    assert math.isnan(acc.compute())
    acc.update(torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), torch.tensor([0, 0, 0]))
    acc.update(torch.tensor([1, 1]), torch.tensor([1, 0]))
    assert acc.compute() == pytest.approx(3 / 5)
    acc.reset()
    acc.update(torch.tensor([2]), torch.tensor([2]))
    assert acc.compute() == 1.0


@pytest.mark.parametrize(
    ("pred", "target", "exc", "match"),
    [
        (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), ValueError, r"shape \(3,\)"),
        (torch.zeros(3, 2), torch.full((3,), 2), ValueError, r"\[0, 1\]"),
        (torch.zeros(3, 2, 2), torch.zeros(3, dtype=torch.long), ValueError, "logits"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), TypeError, "integer labels"),
        (torch.zeros(3, 2), torch.zeros(3), TypeError, "integer class indices"),
    ],
)
def test_accuracy_bad_inputs(pred, target, exc, match):
    with pytest.raises(exc, match=match):
        Accuracy().update(pred, target)

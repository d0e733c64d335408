"""The task registry: one TaskSpec per task, looked up everywhere; per-sample damage."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_vit

from ssl_robust.adaptors import LinearClassifier, LinearDepther, LinearSegmenter, TaskModel
from ssl_robust.attacks import PGD, DepthPGD, SegPGD
from ssl_robust.data import DatasetInfo
from ssl_robust.metrics import Accuracy, DepthMetrics, MeanIoU
from ssl_robust.tasks import TASKS, get_task, list_tasks

INFO = DatasetInfo(
    name="toy", tasks=("classification", "segmentation", "depth"), num_classes=5, seg_classes=4
)


def test_registry_lists_the_three_tasks_and_refuses_others() -> None:
    assert TASKS == tuple(list_tasks()) == ("classification", "segmentation", "depth")
    with pytest.raises(ValueError, match=r"unknown task 'detection'.*classification, segmentation"):
        get_task("detection")


@pytest.mark.parametrize(
    ("task", "key", "tokens", "head", "attack", "metric", "higher"),
    [
        ("classification", "label", "cls", LinearClassifier, PGD, Accuracy, True),
        ("segmentation", "mask", "patch", LinearSegmenter, SegPGD, MeanIoU, True),
        ("depth", "depth", "patch", LinearDepther, DepthPGD, DepthMetrics, False),
    ],
)
def test_each_spec_builds_consistent_parts(task, key, tokens, head, attack, metric, higher):
    spec = get_task(task)
    assert (spec.target_key, spec.tokens, spec.higher_is_better) == (key, tokens, higher)
    h = spec.make_head(32, INFO)
    assert isinstance(h, head) and h.task == task
    model = TaskModel(tiny_vit(), h).eval()
    atk = spec.make_attack(model, INFO, steps=1, success_threshold=0.05)
    assert isinstance(atk, attack)
    assert isinstance(spec.make_metric(INFO), metric)
    assert spec.arrow == ("↑" if higher else "↓")
    assert spec.head_info(h).tasks == (task,)
    strong = spec.make_strong_attack(model, INFO, steps=1)
    x = torch.rand(2, 3, 16, 16)
    target = {"label": torch.tensor([0, 1]), "mask": torch.randint(0, 4, (2, 16, 16)),
              "depth": torch.rand(2, 16, 16) * 5 + 1}[key]  # fmt: skip
    adv = strong(x, target)
    assert adv.shape == x.shape and float((adv - x).abs().max()) <= 8 / 255 + 1e-6


def test_per_sample_criteria_match_independent_formulas() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    labels = torch.tensor([0, 0, 0])
    cls = get_task("classification")
    assert cls.sample_metric(logits, labels, INFO).tolist() == [1.0, 0.0, 1.0]
    assert cls.damage(logits, labels, INFO).tolist() == [0.0, 1.0, 0.0]

    seg = get_task("segmentation")
    pred = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [2, 2]]])
    target = torch.tensor([[[0, 1], [0, 255]], [[2, 0], [255, 255]]])
    # image 0: 2 of 3 valid pixels right; image 1: 1 of 2
    assert seg.sample_metric(pred, target, INFO) == pytest.approx(torch.tensor([2 / 3, 1 / 2]))
    assert seg.damage(pred, target, INFO) == pytest.approx(torch.tensor([1 / 3, 1 / 2]))

    depth = get_task("depth")
    t = torch.tensor([[[1.0, 2.0], [0.0, 4.0]]])  # one invalid pixel
    p = torch.tensor([[[[2.0, 2.0], [9.0, 1.0]]]])  # (B, 1, H, W) like the head
    want = ((1.0 + 0.0 + 9.0) / 3) ** 0.5
    assert depth.sample_metric(p, t, INFO).item() == pytest.approx(want)
    assert depth.damage(p, t, INFO).item() == pytest.approx(want)
    m = DepthMetrics()
    m.update(p, t)
    assert float(m.compute()["rmse"]) == pytest.approx(want)  # same as the dataset metric


def test_headline_value_from_each_metric() -> None:
    assert get_task("depth").headline({"rmse": torch.tensor(0.5), "delta1": 0.1}) == 0.5
    assert get_task("classification").headline(torch.tensor(0.25)) == 0.25

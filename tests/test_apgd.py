"""APGD for classifiers (APGD-CE, APGD-DLR, APGD-T) and the DLR losses."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import linear_classifier

from ssl_robust.attacks import APGD
from ssl_robust.losses import dlr_loss, logit_margin, targeted_dlr_loss


def _logits(b=6, c=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g, dtype=torch.float64), torch.randint(
        0, c, (b,), generator=g
    )


def _dlr_reference(z, y):
    out = []
    for zi, yi in zip(z, y, strict=True):
        s = sorted(zi.tolist(), reverse=True)
        other = max(v for j, v in enumerate(zi.tolist()) if j != int(yi))
        out.append(-(float(zi[yi]) - other) / (s[0] - s[2] + 1e-12))
    return torch.tensor(out, dtype=torch.float64)


def _targeted_reference(z, y, t):
    out = []
    for zi, yi, ti in zip(z, y, t, strict=True):
        s = sorted(zi.tolist(), reverse=True)
        out.append(-(float(zi[yi]) - float(zi[ti])) / (s[0] - 0.5 * (s[2] + s[3]) + 1e-12))
    return torch.tensor(out, dtype=torch.float64)


def test_dlr_losses_match_the_formulas_in_float64():
    z, y = _logits()
    t = (y + 1) % z.shape[1]
    torch.testing.assert_close(dlr_loss(z, y), _dlr_reference(z, y), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        targeted_dlr_loss(z, y, t), _targeted_reference(z, y, t), rtol=1e-12, atol=0
    )
    margin = logit_margin(z, y)
    assert torch.equal(margin > 0, z.argmax(1) != y)
    assert torch.equal(dlr_loss(z, y) > 0, z.argmax(1) != y)


def test_dlr_is_shift_and_scale_invariant():
    z, y = _logits()
    torch.testing.assert_close(dlr_loss(3 * z + 5, y), dlr_loss(z, y), rtol=1e-9, atol=1e-12)


def test_dlr_gradcheck():
    z, y = _logits(3, 5)
    z.requires_grad_(True)
    t = (y + 2) % 5
    assert torch.autograd.gradcheck(lambda a: dlr_loss(a, y), (z,))
    assert torch.autograd.gradcheck(lambda a: targeted_dlr_loss(a, y, t), (z,))


@pytest.mark.parametrize(
    ("fn", "classes", "match"),
    [
        (dlr_loss, 2, "at least 3 classes"),
        (lambda z, y: targeted_dlr_loss(z, y, y), 3, "at least 4"),
    ],
)
def test_dlr_needs_enough_classes(fn, classes, match):
    z, y = _logits(2, classes)
    with pytest.raises(ValueError, match=match):
        fn(z, y)


@pytest.fixture
def classifier():
    return linear_classifier(6)


@pytest.fixture
def batch(classifier):
    x = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, classifier(x).argmax(1)


@pytest.mark.parametrize(("loss", "targeted"), [("ce", False), ("dlr", False), ("dlr", True)])
def test_apgd_variants_stay_in_ball_and_report_misclassification(loss, targeted, classifier, batch):
    x, y = batch

    def make() -> APGD:  # a fresh attack with a fresh generator of the same seed
        return APGD(
            classifier,
            loss=loss,
            targeted=targeted,
            n_target_classes=3,
            steps=15,
            eps=2 / 255,
            generator=torch.Generator().manual_seed(0),
        )

    atk = make()
    res = atk.run(x, y)
    assert (res.adversarial - x).abs().max() <= 2 / 255 + 1e-6
    with torch.no_grad():
        pred = classifier(res.adversarial).argmax(1)
    assert torch.equal(res.success, pred != y)
    again = make().run(x, y)
    assert torch.equal(again.adversarial, res.adversarial)
    assert atk.schedule == "apgd" and atk.steps == 15 and f"loss={loss!r}" in repr(atk)


def test_apgd_t_targets_the_top_other_classes(classifier, batch):
    x, y = batch
    atk = APGD(classifier, loss="dlr", targeted=True, n_target_classes=9)
    labels, ranked = atk.prepare_target(x, y)
    assert ranked.shape == (12, 5)  # capped at num_classes - 1
    with torch.no_grad():
        z = classifier(x)
    for i in range(12):
        order = [c for c in z[i].argsort(descending=True).tolist() if c != int(y[i])]
        assert ranked[i].tolist() == order
    assert len(atk.restart_targets((labels, ranked))) == 5


def test_apgd_t_runs_later_targets_only_on_robust_samples(classifier, batch):
    x, y = batch
    seen: list[int] = []

    def model(z):
        seen.append(z.shape[0])
        return classifier(z)

    res = APGD(
        model,
        loss="dlr",
        targeted=True,
        n_target_classes=3,
        steps=4,
        eps=4 / 255,
        generator=torch.Generator().manual_seed(0),
    ).run(x, y)
    per_run = 5  # 4 steps + the final forward
    runs = [seen[1 + k * per_run : 1 + (k + 1) * per_run] for k in range(3)]  # after the clean pass
    assert runs[0][0] == 12
    assert all(r[0] <= prev[0] for prev, r in itertools.pairwise(runs) if r)
    assert (res.steps >= 4).all() and (res.steps <= 12).all()


def test_apgd_bad_options(classifier):
    with pytest.raises(ValueError, match="loss must be one of 'ce', 'dlr'; got 'cw'"):
        APGD(classifier, loss="cw")
    with pytest.raises(ValueError, match="has no targeted form"):
        APGD(classifier, loss="ce", targeted=True)
    with pytest.raises(ValueError, match="n_target_classes must be >= 1"):
        APGD(classifier, loss="dlr", targeted=True, n_target_classes=0)
    with pytest.raises(TypeError, match="needs the true labels"):
        APGD(classifier)(torch.rand(2, 3, 8, 8))
    two = linear_classifier(2)
    with pytest.raises(ValueError, match="at least 3 classes"):
        APGD(two, loss="dlr", steps=1)(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))

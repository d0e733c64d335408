"""Ensemble (worst case per sample over attacks) and the strong_attack presets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import linear_classifier

from ssl_robust.attacks import (
    APGD,
    PGD,
    DepthPGD,
    EmbedAttack,
    Ensemble,
    SegPGD,
    strong_attack,
)


@pytest.fixture
def classifier():
    return linear_classifier(6)


@pytest.fixture
def images():
    return torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _margin(logits, y):
    other = logits.scatter(1, y[:, None], -torch.inf).amax(1)
    return other - logits.gather(1, y[:, None]).squeeze(1)


def test_skips_broken_samples_and_keeps_the_worst(classifier, images):
    with torch.no_grad():
        pred = classifier(images).argmax(1)
    labels = pred.clone()
    labels[:3] = (pred[:3] + 1) % 6  # misclassified before any attack

    def pgd():  # a fresh PGD with a fresh generator of the same seed
        return PGD(
            classifier,
            eps=3 / 255,
            step_size=1 / 255,
            steps=4,
            generator=torch.Generator().manual_seed(0),
        )

    a = pgd()
    b = APGD(classifier, eps=3 / 255, steps=4, generator=torch.Generator().manual_seed(1))
    res = Ensemble([a, b]).run(images, labels)
    assert (res.winner[:3] == -1).all() and (res.steps[:3] == 0).all()
    assert torch.equal(res.adversarial[:3], images[:3])
    with torch.no_grad():
        logits = classifier(res.adversarial)
    torch.testing.assert_close(res.damage, _margin(logits, labels))
    assert torch.equal(res.success, logits.argmax(1) != labels)
    assert (res.adversarial - images).abs().max() <= 3 / 255 + 1e-6
    # Samples broken by the first member were not attacked by the second.
    first = pgd().run(images[3:], labels[3:])
    broken_by_a = first.success
    assert (res.steps[3:][broken_by_a] == 4).all() and (res.steps[3:][~broken_by_a] == 8).all()
    assert (res.winner[3:][broken_by_a] == 0).all()


def test_worst_case_over_members_equals_independent_runs():
    """Depth is never 'broken', so every member attacks every image: the ensemble must pick
    per image the member with the largest RMSE, as standalone runs show."""
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 1, 3, padding=1)
    model = lambda x: F.softplus(net(x)) + 0.1  # noqa: E731
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    depth = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 + 0.5

    def members():
        return [
            DepthPGD(
                model, loss=name, schedule=s, steps=5, generator=torch.Generator().manual_seed(k)
            )
            for k, (name, s) in enumerate([("silog_grad", "fixed"), ("l1_log", "apgd")])
        ]

    res = Ensemble(members()).run(x, depth)

    def rmse(z):
        with torch.no_grad():
            return (model(z)[:, 0] - depth).pow(2).flatten(1).mean(1).sqrt()

    candidates = torch.stack([rmse(x)] + [rmse(m(x, depth)) for m in members()])
    best, idx = candidates.max(0)
    torch.testing.assert_close(res.damage, best)
    assert torch.equal(res.winner, idx - 1)
    assert not res.success.any()


def test_bad_ensembles(classifier):
    seg = torch.nn.Conv2d(3, 4, 3, padding=1)
    other = linear_classifier(6, seed=1)
    with pytest.raises(TypeError, match="non-empty list"):
        Ensemble([])
    with pytest.raises(TypeError, match="must be an Attack"):
        Ensemble([PGD(classifier), "apgd"])
    with pytest.raises(ValueError, match="one task; got classification, segmentation"):
        Ensemble([PGD(classifier), SegPGD(seg)])
    with pytest.raises(ValueError, match="same model"):
        Ensemble([PGD(classifier), APGD(other)])
    with pytest.raises(ValueError, match="targeted"):
        Ensemble([PGD(classifier, targeted=True)])
    with pytest.raises(ValueError, match="task must be one of 'classification', 'segmentation'"):
        strong_attack(classifier, task="detection")
    with pytest.raises(ValueError, match="restarts must be >= 1"):
        strong_attack(classifier, task="classification", restarts=0)


def test_strong_attack_presets_and_runs(classifier, images):
    gen = torch.Generator().manual_seed(0)
    cls = strong_attack(classifier, task="classification", steps=3, eps=2 / 255, generator=gen)
    assert [(type(a), a.loss_name, a.targeted) for a in cls.attacks] == [
        (APGD, "ce", False),
        (APGD, "dlr", True),
    ]
    assert all(a.schedule == "apgd" and a.eps == 2 / 255 and a.early_stop for a in cls.attacks)
    with torch.no_grad():
        labels = classifier(images).argmax(1)
    res = cls.run(images, labels)
    assert res.winner.shape == (10,) and (res.adversarial - images).abs().max() <= 2 / 255 + 1e-6

    seg = torch.nn.Conv2d(3, 4, 3, padding=1)
    ens = strong_attack(seg, task="segmentation", steps=2, ignore_index=0, generator=gen)
    assert [a.loss_name for a in ens.attacks] == [
        "masked_ce",
        "js",
        "masked_spherical",
        "balanced_ce",
    ]
    assert all(a.ignore_index == 0 for a in ens.attacks)
    out = ens.run(images[:2], torch.randint(0, 4, (2, 8, 8)))
    assert out.damage.shape == (2,) and ((out.damage >= 0) & (out.damage <= 1)).all()

    net = torch.nn.Conv2d(3, 1, 3, padding=1)
    dep = strong_attack(lambda z: F.softplus(net(z)) + 0.1, task="depth", steps=2, generator=gen)
    assert [a.loss_name for a in dep.attacks] == ["silog_grad", "l1_log"]
    assert dep.run(images[:2], torch.rand(2, 8, 8) + 0.5).winner.ge(0).all()

    emb = strong_attack(classifier, task="embedding", steps=2, generator=gen)
    assert [a.schedule for a in emb.attacks] == ["apgd", "fixed"]
    assert emb.run(images[:2]).damage.gt(0).all()
    assert isinstance(emb.attacks[0], EmbedAttack) and "Ensemble(task='embedding'" in repr(emb)

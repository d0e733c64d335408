"""Update rules of the shared core (fixed step, APGD) and restarts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import linear_classifier, tanh_linear_model

from ssl_robust.attacks.core import SCHEDULES, APGDStep, FixedStep, Linf, apgd_checkpoints, pgd


def _data(b: int = 8):
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(
        0, 4, (b,), generator=g
    )


def _ce(model, labels, calls=None, with_success=True):
    def loss_fn(x, idx, step):
        if calls is not None:
            calls.append((step, idx.clone()))
        logits = model(x)
        y = labels[idx]
        ce = F.cross_entropy(logits, y, reduction="none")
        return ce, (logits.argmax(1) != y) if with_success else None

    return loss_fn


def _checkpoints_reference(n: int) -> list[int]:
    """AutoAttack's integer checkpoints, written from the paper's recursion."""
    k, decr, kmin = max(int(0.22 * n), 1), max(int(0.03 * n), 1), max(int(0.06 * n), 1)
    out, counter = [], 0
    for i in range(n):
        counter += 1
        if counter == k:
            out.append(i + 1)
            counter = 0
            k = max(k - decr, kmin)
    return [w for w in out if w < n]


@pytest.mark.parametrize("n", [1, 5, 10, 20, 37, 100, 250])
def test_apgd_checkpoints_follow_the_recursion(n):
    assert apgd_checkpoints(n) == _checkpoints_reference(n)


def test_apgd_checkpoints_paper_fractions():
    # p_1 = 0.22, p_2 = 0.41, p_3 = 0.57, p_4 = 0.70, p_5 = 0.80, then steps of 0.06.
    assert apgd_checkpoints(100)[:7] == [22, 41, 57, 70, 80, 87, 93]


def test_apgd_halving_and_reset_on_a_toy_loss():
    """Sample 0 always improves (never halved), sample 1 never improves (halved at every
    checkpoint, reset to its best point), sample 2 improves often but its best stalls
    (condition 2 at the second checkpoint only)."""
    eps, n = 0.05, 20
    assert apgd_checkpoints(n)[:2] == [4, 7]
    losses = {
        0: [float(t) for t in range(8)],
        1: [0.0] * 8,
        2: [0.0, 5.0, 10.0, 0.0, 1.0, 2.0, 3.0, 4.0],
    }
    x0 = torch.full((3, 2), 0.5, dtype=torch.float64)
    delta = torch.zeros_like(x0)
    stepper = APGDStep().start(delta, eps=eps, step_size=0.0, steps=n, norm=Linf())
    g = torch.Generator().manual_seed(0)
    history, grads = [delta], []
    etas = []
    for t in range(8):
        grad = torch.randn(3, 2, generator=g, dtype=torch.float64)
        grads.append(grad)
        loss = torch.tensor([losses[i][t] for i in range(3)], dtype=torch.float64)
        delta = stepper.update(None, x0, delta, grad, loss, t)
        history.append(delta)
        etas.append(stepper.eta.clone())
        assert delta.abs().max() <= eps + 1e-12
    two = 2 * eps
    assert etas[3].tolist() == [two, two, two]  # before the first checkpoint
    assert etas[4].tolist() == [two, eps, two]  # t = 4: condition 1 for sample 1 only
    assert etas[7].tolist() == [two, eps / 2, eps]  # t = 7: condition 1 (1), condition 2 (2)
    # At t = 4 sample 1 restarts from its best point (t = 0, zero perturbation) with its
    # gradient there, halved step, momentum against the point the previous step left from.
    best, best_grad, prev = history[0][1], grads[0][1], history[3][1]
    z = (best + eps * best_grad.sign()).clamp(-eps, eps)
    expected = (best + 0.75 * (z - best) + 0.25 * (best - prev)).clamp(-eps, eps)
    torch.testing.assert_close(history[5][1], expected, rtol=0, atol=1e-15)


def reference_apgd(model, x, y, *, eps, steps, norm="linf"):
    """APGD (Croce & Hein 2020, Algorithm 1) on the CE of a classifier, no random start,
    written independently from the paper: returns the last iterate."""
    checkpoints, w, length = [], 0, max(int(0.22 * steps), 1)
    while w + length < steps:
        w += length
        checkpoints.append(w)
        length = max(length - max(int(0.03 * steps), 1), max(int(0.06 * steps), 1))

    def f_and_grad(z):
        z = z.clone().requires_grad_(True)
        f = F.cross_entropy(model(z), y, reduction="none")
        return f.detach(), torch.autograd.grad(f.sum(), z)[0]

    def l2(t):
        return t.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

    def proj(z):
        if norm == "linf":
            return torch.min(torch.max(z, x - eps), x + eps).clamp(0, 1)
        d = z - x
        return (x + d * (eps / l2(d).clamp_min(1e-12)).clamp(max=1)).clamp(0, 1)

    def direction(g):
        return g.sign() if norm == "linf" else g / l2(g).clamp_min(1e-12)

    b = x.shape[0]
    eta = torch.full((b, 1, 1, 1), 2 * eps, dtype=x.dtype)
    cur, prev = x.clone(), x.clone()
    f_best = torch.full((b,), -torch.inf, dtype=x.dtype)
    x_best, g_best = x.clone(), torch.zeros_like(x)
    f_prev, count, reduced = None, torch.zeros(b), torch.ones(b, dtype=torch.bool)
    f_best_check, last = None, 0
    for t in range(steps):
        f, g = f_and_grad(cur)
        up = f > f_best
        x_best[up], g_best[up], f_best[up] = cur[up], g[up], f[up]
        if f_prev is not None:
            count += (f > f_prev).float()
        f_prev = f
        if t == 0:
            f_best_check = f_best.clone()
        if t in checkpoints:
            halve = (count < 0.75 * (t - last)) | (~reduced & (f_best_check >= f_best))
            reduced, f_best_check, count, last = halve, f_best.clone(), torch.zeros(b), t
            eta[halve] /= 2
            cur, g = cur.clone(), g.clone()
            cur[halve], g[halve] = x_best[halve], g_best[halve]
        z = proj(cur + eta * direction(g))
        a = 1.0 if t == 0 else 0.75
        nxt = proj(cur + a * (z - cur) + (1 - a) * (cur - prev))
        prev, cur = cur, nxt
    return cur


@pytest.mark.parametrize(("norm", "eps"), [("linf", 8 / 255), ("l2", 0.5)])
def test_apgd_matches_an_independent_implementation_in_float64(norm, eps):
    model = tanh_linear_model()
    x, y = _data()

    def loss_fn(xa, idx, step):
        return F.cross_entropy(model(xa), y[idx], reduction="none"), None

    kw = dict(step_size=0.0, random_start=False, select="last", schedule="apgd", norm=norm)
    ours = pgd(loss_fn, x, eps=eps, steps=25, **kw)
    ref = reference_apgd(model, x, y, eps=eps, steps=25, norm=norm)
    torch.testing.assert_close(ours.adversarial, ref, rtol=0, atol=1e-12)


def test_apgd_first_step_is_twice_eps_without_momentum():
    x0 = torch.full((1, 4), 0.5, dtype=torch.float64)
    grad = torch.tensor([[1.0, -1.0, 2.0, -0.5]], dtype=torch.float64)
    stepper = APGDStep().start(torch.zeros_like(x0), eps=0.3, step_size=0.0, steps=10, norm=Linf())
    new = stepper.update(
        None, x0, torch.zeros_like(x0), grad, torch.zeros(1, dtype=torch.float64), 0
    )
    torch.testing.assert_close(new, 0.3 * grad.sign())  # 2·eps, projected back to eps


def test_fixed_schedule_is_the_default_and_the_paper_step():
    model = tanh_linear_model()
    x, y = _data()
    kw = dict(eps=8 / 255, step_size=2 / 255, steps=6, generator=None, random_start=False)
    a = pgd(_ce(model, y), x, **kw)
    b = pgd(_ce(model, y), x, schedule="fixed", **kw)
    c = pgd(_ce(model, y), x, schedule=FixedStep(), **kw)
    assert torch.equal(a.adversarial, b.adversarial) and torch.equal(a.adversarial, c.adversarial)
    assert set(SCHEDULES) == {"fixed", "apgd"}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_inside_ball_early_stop_same_result(norm):
    model = tanh_linear_model()
    x, y = _data()
    eps = 8 / 255 if norm == "linf" else 0.5
    kw = dict(eps=eps, step_size=0.0, steps=12, norm=norm, schedule="apgd")
    full = pgd(_ce(model, y), x, generator=torch.Generator().manual_seed(0), **kw)
    es = pgd(_ce(model, y), x, early_stop=True, generator=torch.Generator().manual_seed(0), **kw)
    delta = (full.adversarial - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (
        (size <= eps + 1e-9).all() and full.adversarial.min() >= 0 and full.adversarial.max() <= 1
    )
    torch.testing.assert_close(es.adversarial, full.adversarial, rtol=0, atol=1e-12)
    assert torch.equal(es.success, full.success)
    assert (es.steps <= full.steps).all()


def test_apgd_raises_the_loss_over_its_start():
    model = tanh_linear_model()
    x, y = _data()
    start = F.cross_entropy(model(x), y, reduction="none")
    res = pgd(
        _ce(model, y, with_success=False),
        x,
        eps=4 / 255,
        step_size=0.0,
        steps=20,
        random_start=False,
        schedule="apgd",
    )
    assert (res.loss >= start - 1e-12).all() and (res.loss > start).any()


def test_restarts_are_the_per_sample_worst_case_of_independent_runs():
    model = tanh_linear_model()
    x, y = _data()
    kw = dict(eps=8 / 255, step_size=2 / 255, steps=3)
    g = torch.Generator().manual_seed(3)
    runs = [pgd(_ce(model, y, with_success=False), x, generator=g, **kw) for _ in range(3)]
    both = pgd(
        _ce(model, y, with_success=False),
        x,
        restarts=3,
        generator=torch.Generator().manual_seed(3),
        **kw,
    )
    losses = torch.stack([r.loss for r in runs])
    torch.testing.assert_close(both.loss, losses.amax(0), rtol=0, atol=0)
    pick = losses.argmax(0)
    expected = torch.stack([runs[int(k)].adversarial[i] for i, k in enumerate(pick)])
    assert torch.equal(both.adversarial, expected)
    assert both.steps.tolist() == [9] * 8


def test_restarts_skip_successful_samples_and_are_deterministic():
    model = tanh_linear_model()
    x, y = _data(16)
    kw = dict(eps=4 / 255, step_size=1 / 255, steps=2)
    first = pgd(_ce(model, y), x, generator=torch.Generator().manual_seed(0), **kw)
    assert first.success.any() and not first.success.all()
    calls: list = []
    res = pgd(_ce(model, y, calls), x, restarts=2, generator=torch.Generator().manual_seed(0), **kw)
    later = {int(i) for step, idx in calls[3:] for i in idx}  # run 2 (3 calls per run)
    assert later <= set((~first.success).nonzero().flatten().tolist())
    assert (res.success >= first.success).all()
    assert (res.steps[first.success] == 2).all() and (res.steps[~first.success] == 4).all()
    again = pgd(_ce(model, y), x, restarts=2, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(again.adversarial, res.adversarial)


def test_a_sequence_of_objectives_runs_each():
    model = tanh_linear_model()
    x, y = _data()
    seen: list[int] = []

    def objective(k):
        def fn(xa, idx, step):
            seen.append(k)
            return F.cross_entropy(model(xa), y[idx], reduction="none") * (k + 1), None

        return fn

    res = pgd([objective(0), objective(1)], x, eps=0.03, step_size=0.01, steps=2, restarts=2)
    assert seen == [0] * 3 + [0] * 3 + [1] * 3 + [1] * 3
    assert res.steps.tolist() == [8] * 8


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        (dict(restarts=0), ValueError, "restarts must be >= 1"),
        (dict(restarts=1.5), TypeError, "restarts must be an int"),
        (dict(schedule="adam"), ValueError, "schedule must be one of 'fixed', 'apgd'"),
        (dict(schedule=3), TypeError, "schedule must be one of"),
    ],
)
def test_bad_schedule_options(kw, exc, match):
    x, y = _data()
    with pytest.raises(exc, match=match):
        pgd(_ce(tanh_linear_model(), y), x, eps=0.03, step_size=0.01, steps=1, **kw)


def test_empty_loss_sequence_is_refused():
    x, _ = _data()
    with pytest.raises(TypeError, match="non-empty sequence"):
        pgd([], x, eps=0.03, step_size=0.01, steps=1)


@pytest.mark.parametrize("schedule", ["fixed", "apgd"])
def test_every_attack_takes_schedule_and_restarts(schedule):
    from ssl_robust.attacks import PGD, DepthPGD, EmbedAttack, SegPGD

    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    clf = linear_classifier(5)
    seg = torch.nn.Conv2d(3, 4, 3, padding=1)
    net = torch.nn.Conv2d(3, 1, 3, padding=1)
    depth = lambda z: F.softplus(net(z)) + 0.1  # noqa: E731
    cases = [
        (PGD(clf, schedule=schedule, restarts=2, steps=3, generator=gen), torch.tensor([0, 1])),
        (
            SegPGD(seg, schedule=schedule, restarts=2, steps=3, generator=gen),
            torch.randint(0, 4, (2, 8, 8)),
        ),
        (
            DepthPGD(depth, schedule=schedule, restarts=2, steps=3, generator=gen),
            torch.rand(2, 8, 8) + 0.5,
        ),
        (
            EmbedAttack(
                lambda z: z.flatten(1)[:, :16] * 2,
                schedule=schedule,
                restarts=2,
                steps=3,
                generator=gen,
            ),
            None,
        ),
    ]
    for attack, target in cases:
        res = attack.run(x, target)
        assert (res.adversarial - x).abs().max() <= 8 / 255 + 1e-6
        assert f"schedule={schedule!r}, restarts=2" in repr(attack)
        assert (res.steps >= 3).all() and (res.steps <= 6).all()


def test_attack_option_errors():
    from ssl_robust.attacks import PGD

    clf = torch.nn.Linear(4, 2)
    with pytest.raises(ValueError, match="restarts must be >= 1"):
        PGD(clf, restarts=0)
    with pytest.raises(ValueError, match="schedule must be one of 'fixed', 'apgd'; got 'APGD'"):
        PGD(clf, schedule="APGD")

"""The shared PGD core: threat models, the loop, best/last selection and early stop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tanh_linear_model
from hypothesis import given, settings
from hypothesis import strategies as st

from ssl_robust.attacks.core import L2, NORMS, AttackResult, Linf, pgd


def _ce_loss_fn(model, labels):
    def loss_fn(x, idx, step):
        logits = model(x)
        y = labels[idx]
        return F.cross_entropy(logits, y, reduction="none"), logits.argmax(1) != y

    return loss_fn


def _data(b: int = 8, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(b, 3, 8, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 4, (b,), generator=g)
    return x, y


def classic_pgd(model, x, y, *, eps, alpha, steps):
    """torchattacks' PGD algorithm (no random start), written independently for the test."""
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + alpha * grad.sign()
        delta = torch.clamp(adv - x, min=-eps, max=eps)
        adv = torch.clamp(x + delta, min=0, max=1).detach()
    return adv


def test_reproduces_classic_pgd_in_float64():
    model = tanh_linear_model()
    x, y = _data()
    ours = pgd(
        _ce_loss_fn(model, y),
        x,
        eps=8 / 255,
        step_size=2 / 255,
        steps=10,
        random_start=False,
        select="last",
    )
    ref = classic_pgd(model, x, y, eps=8 / 255, alpha=2 / 255, steps=10)
    torch.testing.assert_close(ours.adversarial, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(
        ours.loss, F.cross_entropy(model(ref), y, reduction="none"), atol=1e-12, rtol=0
    )


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("random_start", [True, False])
def test_result_inside_ball_and_image_range(norm, random_start):
    model = tanh_linear_model()
    x, y = _data()
    eps = 8 / 255 if norm == "linf" else 0.5
    res = pgd(
        _ce_loss_fn(model, y),
        x,
        eps=eps,
        step_size=eps / 4,
        steps=6,
        norm=norm,
        random_start=random_start,
        generator=torch.Generator().manual_seed(0),
    )
    delta = res.adversarial - x
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-12
    else:
        assert delta.flatten(1).norm(dim=1).max() <= eps + 1e-9
    assert res.adversarial.min() >= 0 and res.adversarial.max() <= 1
    assert res.adversarial.dtype == x.dtype and res.adversarial.shape == x.shape


@settings(max_examples=25, deadline=None)
@given(
    eps=st.floats(1e-3, 0.5),
    seed=st.integers(0, 2**31 - 1),
    norm=st.sampled_from(["linf", "l2"]),
)
def test_random_init_is_inside_ball_and_projection_is_idempotent(eps, seed, norm):
    like = torch.zeros(5, 3, 4, 4, dtype=torch.float64)
    n = NORMS[norm]
    d = n.random_init(like, eps, torch.Generator().manual_seed(seed))
    size = d.abs().flatten(1).amax(1) if norm == "linf" else d.flatten(1).norm(dim=1)
    assert (size <= eps * (1 + 1e-9)).all()
    big = torch.randn(
        5, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    p = n.project(big, eps)
    torch.testing.assert_close(n.project(p, eps), p)
    size = p.abs().flatten(1).amax(1) if norm == "linf" else p.flatten(1).norm(dim=1)
    assert (size <= eps * (1 + 1e-9)).all()


def test_l2_random_init_fills_the_ball():
    # Uniform in a d-ball: the radius r satisfies P(r <= eps * q^(1/d)) = q; in dimension 2
    # the median radius is eps / sqrt(2).
    like = torch.zeros(4000, 2, dtype=torch.float64)
    d = L2().random_init(like, 1.0, torch.Generator().manual_seed(0))
    radius = d.norm(dim=1)
    assert abs(radius.median().item() - 2**-0.5) < 0.03
    assert radius.max() <= 1.0


def test_linf_step_and_l2_step():
    delta = torch.zeros(2, 3)
    grad = torch.tensor([[3.0, -4.0, 0.0], [0.0, 0.0, 2.0]])
    torch.testing.assert_close(
        Linf().step(delta, grad, 0.1), torch.tensor([[0.1, -0.1, 0.0], [0.0, 0.0, 0.1]])
    )
    torch.testing.assert_close(
        L2().step(delta, grad, 1.0), torch.tensor([[0.6, -0.8, 0.0], [0.0, 0.0, 1.0]])
    )


def test_random_start_uses_generator_not_global_rng():
    model = tanh_linear_model()
    x, y = _data()
    kw = dict(eps=8 / 255, step_size=2 / 255, steps=3)
    state = torch.get_rng_state()
    a = pgd(_ce_loss_fn(model, y), x, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)  # changing the global RNG must not change the result
    b = pgd(_ce_loss_fn(model, y), x, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(a.adversarial, b.adversarial)
    c = pgd(_ce_loss_fn(model, y), x, generator=torch.Generator().manual_seed(6), **kw)
    assert not torch.equal(a.adversarial, c.adversarial)
    state = torch.get_rng_state()
    pgd(_ce_loss_fn(model, y), x, generator=None, **kw)
    assert torch.equal(torch.get_rng_state(), state)


def test_select_best_returns_highest_loss_iterate():
    # A loss that rises then falls along the attack path: "best" must keep the peak.
    x = torch.full((1, 1, 1, 1), 0.5, dtype=torch.float64)
    seen = []

    def loss_fn(xa, idx, step):
        v = xa.flatten(1)[:, 0]
        loss = -((v - 0.52) ** 2) + 0.0 * v
        seen.append((float(v.detach()), float(loss.detach())))
        return loss, None

    # Gradient always points up-slope towards 0.52 then we overshoot with big steps.
    res = pgd(loss_fn, x, eps=0.1, step_size=0.03, steps=4, random_start=False, select="best")
    best_v, best_loss = max(seen, key=lambda s: s[1])
    assert res.loss.item() == pytest.approx(best_loss)
    assert res.adversarial.item() == pytest.approx(best_v)
    last = pgd(loss_fn, x, eps=0.1, step_size=0.03, steps=4, random_start=False, select="last")
    assert last.loss.item() <= res.loss.item()


def test_select_best_keeps_first_successful_iterate():
    x = torch.zeros(1, 1, 1, 1, dtype=torch.float64)

    def loss_fn(xa, idx, step):
        v = xa.flatten(1)[:, 0]
        return v.clone(), v > 0.05  # loss keeps rising, success from 0.05 on

    res = pgd(loss_fn, x, eps=0.5, step_size=0.02, steps=10, random_start=False)
    assert res.success.item()
    assert res.adversarial.item() == pytest.approx(0.06)  # first iterate above 0.05
    assert res.steps.item() == 10
    es = pgd(loss_fn, x, eps=0.5, step_size=0.02, steps=10, random_start=False, early_stop=True)
    assert es.adversarial.item() == pytest.approx(0.06)
    assert es.steps.item() == 3


@pytest.mark.parametrize("random_start", [True, False])
def test_early_stop_gives_same_result_with_fewer_forwards(random_start):
    model = tanh_linear_model(classes=4)
    x, y = _data(16)
    calls = {"full": 0, "es": 0}

    def counting(key):
        inner = _ce_loss_fn(model, y)

        def loss_fn(xa, idx, step):
            calls[key] += xa.shape[0]
            return inner(xa, idx, step)

        return loss_fn

    kw = dict(eps=16 / 255, step_size=2 / 255, steps=15, random_start=random_start)
    full = pgd(counting("full"), x, generator=torch.Generator().manual_seed(0), **kw)
    es = pgd(counting("es"), x, early_stop=True, generator=torch.Generator().manual_seed(0), **kw)
    torch.testing.assert_close(es.adversarial, full.adversarial, atol=1e-12, rtol=0)
    torch.testing.assert_close(es.loss, full.loss, atol=1e-12, rtol=0)
    assert torch.equal(es.success, full.success)
    assert full.success.any()
    assert calls["es"] < calls["full"]
    assert (es.steps[es.success] < 15).all() or not es.success.any()
    assert (full.steps == 15).all()


def test_steps_zero_returns_start_and_empty_batch():
    model = tanh_linear_model()
    x, y = _data()
    res = pgd(_ce_loss_fn(model, y), x, eps=8 / 255, step_size=2 / 255, steps=0, random_start=False)
    assert torch.equal(res.adversarial, x)
    torch.testing.assert_close(res.loss, F.cross_entropy(model(x), y, reduction="none"))
    empty = pgd(_ce_loss_fn(model, y), x[:0], eps=8 / 255, step_size=2 / 255, steps=3)
    assert isinstance(empty, AttackResult)
    assert empty.adversarial.shape == (0, 3, 8, 8) and empty.loss.shape == (0,)
    assert empty.steps.shape == (0,)


def test_input_tensor_not_modified_and_no_grad_context_ok():
    model = tanh_linear_model()
    x, y = _data()
    before = x.clone()
    with torch.no_grad():
        res = pgd(_ce_loss_fn(model, y), x, eps=8 / 255, step_size=2 / 255, steps=3)
    assert torch.equal(x, before)
    assert not torch.equal(res.adversarial, x)


def test_inference_mode_is_refused_with_a_message():
    model = tanh_linear_model()
    x, y = _data()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        pgd(_ce_loss_fn(model, y), x, eps=8 / 255, step_size=2 / 255, steps=1)
    with torch.inference_mode():
        xi = x.clone()
    res = pgd(_ce_loss_fn(model, y), xi, eps=8 / 255, step_size=2 / 255, steps=2)
    assert res.adversarial.shape == x.shape


def test_loss_without_graph_is_an_error_not_a_zero_step():
    x, _ = _data()

    def loss_fn(xa, idx, step):
        return torch.zeros(xa.shape[0], dtype=xa.dtype), None

    with pytest.raises(RuntimeError, match="does not require grad"):
        pgd(loss_fn, x, eps=8 / 255, step_size=2 / 255, steps=4, random_start=False)
    w = torch.ones(8, 3, 8, 8, dtype=x.dtype, requires_grad=True)  # a graph, but not to x

    def unused(xa, idx, step):
        return (w[idx] * 2).flatten(1).sum(1), None

    with pytest.raises(RuntimeError, match="does not depend on the input images"):
        pgd(unused, x, eps=8 / 255, step_size=2 / 255, steps=1, random_start=False)


def test_nan_gradient_gives_finite_images():
    x, _ = _data()

    def nan_grad(xa, idx, step):  # sqrt at 0 has an infinite/NaN gradient
        return (xa - xa.detach()).flatten(1).abs().sqrt().sum(1) * float("nan"), None

    res = pgd(nan_grad, x, eps=8 / 255, step_size=2 / 255, steps=2, random_start=False)
    assert torch.isfinite(res.adversarial).all()


def test_bad_loss_fn_outputs_are_reported():
    x, _ = _data()
    with pytest.raises(ValueError, match=r"per sample with shape \(8,\)"):
        pgd(lambda xa, i, s: (xa.sum(), None), x, eps=0.1, step_size=0.1, steps=1)
    with pytest.raises(TypeError, match="must return"):
        pgd(lambda xa, i, s: xa.flatten(1).sum(1), x, eps=0.1, step_size=0.1, steps=1)


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        (dict(eps=8), ValueError, "did you mean 8/255"),
        (dict(eps=-0.1), ValueError, "eps must be a finite float >= 0"),
        (dict(step_size=2), ValueError, "did you mean 2/255"),
        (dict(steps=-1), ValueError, "steps must be >= 0"),
        (dict(steps=2.5), TypeError, "steps must be an int"),
        (dict(norm="l1"), ValueError, "norm must be one of 'linf', 'l2'"),
        (dict(norm=2), TypeError, r"norm must be one of \('linf', 'l2'\) or a Norm instance"),
        (dict(select="first"), ValueError, "select must be one of 'best', 'last'"),
        (dict(generator=0), TypeError, "torch.Generator"),
    ],
)
def test_bad_options(kw, exc, match):
    x, y = _data()
    opts = dict(eps=8 / 255, step_size=2 / 255, steps=2)
    opts.update(kw)
    with pytest.raises(exc, match=match):
        pgd(_ce_loss_fn(tanh_linear_model(), y), x, **opts)


def test_l2_budget_may_exceed_one():
    x, y = _data()
    res = pgd(_ce_loss_fn(tanh_linear_model(), y), x, eps=2.0, step_size=1.5, steps=2, norm="l2")
    assert (res.adversarial - x).flatten(1).norm(dim=1).max() <= 2.0 + 1e-9

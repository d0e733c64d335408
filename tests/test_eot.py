"""EOT (``eot_iter``) in the shared core, and the per-step trace / query count of AttackResult."""

from __future__ import annotations

import pytest
import torch
from _helpers_reliability import Noisy, template_data, trained_classifier

from ssl_robust.attacks import APGD, PGD, DepthPGD, EmbedAttack, SegPGD, pgd

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_eot_1_is_the_plain_loop_bit_for_bit():
    """eot_iter=1 is an independent PGD loop written here (fixed step, L∞, last iterate), and
    passing it changes nothing, bit for bit."""
    model = trained_classifier()
    x, y = template_data(8, seed=3)
    eps, alpha, steps = 0.05, 0.01, 5
    res = PGD(model, eps=eps, step_size=alpha, steps=steps, random_start=False, select="last",
              eot_iter=1).run(x, y)  # fmt: skip
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xa), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xa)
        xa = (x + (xa.detach() + alpha * g.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    torch.testing.assert_close(res.adversarial, xa, rtol=0, atol=1e-6)
    for schedule in ("fixed", "apgd"):
        a = APGD(model, eps=eps, steps=6, schedule=schedule, generator=_gen()).run(x, y)
        b = APGD(model, eps=eps, steps=6, schedule=schedule, generator=_gen(), eot_iter=1).run(x, y)
        assert torch.equal(a.adversarial, b.adversarial) and torch.equal(a.loss, b.loss)


def test_gradient_loss_and_success_are_averaged_over_draws():
    """A randomized loss whose k-th draw is <w_k, x>: the step follows sign(mean w_k), the
    reported loss is the mean over the draws, and success needs every draw."""
    k_draws = 3
    ws = torch.randn(k_draws, 1, 3, 4, 4, generator=_gen(5))
    calls = {"n": 0}

    def loss_fn(x, idx, step):
        w = ws[calls["n"] % k_draws]
        calls["n"] += 1
        loss = (x * w).flatten(1).sum(1)
        return loss, loss > 0.5 + calls["n"] % k_draws  # varies per draw

    x = torch.full((2, 3, 4, 4), 0.5)
    res = pgd(loss_fn, x, eps=0.1, step_size=0.03, steps=1, random_start=False, select="last",
              eot_iter=k_draws)  # fmt: skip
    assert calls["n"] == 2 * k_draws  # one step + the final scoring, each k draws
    expected_x = x + 0.03 * ws.mean(0).sign()
    torch.testing.assert_close(res.adversarial, expected_x.expand_as(x), rtol=0, atol=1e-7)
    per_draw = torch.stack([(expected_x * w).flatten(1).sum(1) for w in ws])  # (k, 1)
    torch.testing.assert_close(res.loss, per_draw.mean(0).expand(2), rtol=1e-6, atol=1e-6)
    thresholds = torch.tensor([0.5 + (n + 1) % k_draws for n in range(k_draws)])
    every = bool((per_draw[:, 0] > thresholds).all())
    assert res.success is not None and res.success.tolist() == [every, every]
    assert res.queries is not None and res.queries.tolist() == [2 * k_draws] * 2


def test_randomized_model_deterministic_given_generator_and_rng_untouched():
    model = Noisy(trained_classifier(), sigma=0.2)
    x, y = template_data(8, seed=4)
    rng = torch.get_rng_state()
    a = PGD(model, eps=0.05, steps=4, eot_iter=3, generator=_gen(1)).run(x, y)
    b = PGD(model, eps=0.05, steps=4, eot_iter=3, generator=_gen(1)).run(x, y)
    c = PGD(model, eps=0.05, steps=4, eot_iter=3, generator=_gen(2)).run(x, y)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(a.adversarial, b.adversarial) and torch.equal(a.loss, b.loss)
    assert not torch.equal(a.adversarial, c.adversarial)
    assert a.queries is not None and int(a.queries.max()) <= (4 + 1) * 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_eot_iter_below_one_or_not_an_int_is_refused(bad):
    model = trained_classifier()
    with pytest.raises(ValueError, match=r"eot_iter must be an int >= 1.*got"):
        PGD(model, eot_iter=bad)
    with pytest.raises(ValueError, match="eot_iter must be an int >= 1"):
        pgd(lambda x, i, t: (x.sum((1, 2, 3)), None), torch.rand(1, 3, 4, 4), eps=0.1,
            step_size=0.1, steps=1, eot_iter=bad)  # fmt: skip


def test_every_attack_accepts_eot_iter():
    x = torch.rand(2, 3, 8, 8, generator=_gen())
    conv = torch.nn.Conv2d(3, 3, 1)
    for attack, target in (
        (SegPGD(conv, steps=2, eot_iter=2), torch.randint(0, 3, (2, 8, 8))),
        (DepthPGD(lambda z: conv(z)[:, :1].exp(), steps=2, eot_iter=2), torch.rand(2, 8, 8) + 1),
        (EmbedAttack(lambda z: z.flatten(1), steps=2, eot_iter=2), None),
    ):
        res = attack.run(x, target)
        assert res.queries is not None and int(res.queries.max()) == 2 * 3
        assert "eot_iter=2" in repr(attack)


def test_trace_records_the_score_per_step_without_extra_passes():
    model = trained_classifier()
    x, y = template_data(6, seed=2)
    seen = []

    def counting(inp):
        seen.append(inp.shape[0])
        return model(inp)

    res = PGD(counting, eps=0.02, steps=5, generator=_gen()).run(x, y)
    assert sum(seen) == 6 * 6  # 5 steps + the final scoring, nothing else
    assert res.trace is not None and res.trace.shape == (6, 6)
    assert res.trace_success is not None and res.trace_success.shape == (6, 6)
    ce = torch.nn.functional.cross_entropy(model(res.adversarial), y, reduction="none")
    # select="best": the returned loss is the highest of the trace
    torch.testing.assert_close(res.trace.max(0).values, ce, rtol=1e-5, atol=1e-6)
    early = PGD(model, eps=0.2, step_size=0.05, steps=5, early_stop=True, generator=_gen()).run(
        x, y
    )
    assert early.trace is not None and bool(early.success.any())
    # a sample is traced at each of its evaluations only: steps run + 1, NaN after its stop
    assert bool((early.steps < 5).any())
    assert torch.equal((~early.trace.isnan()).sum(0), early.steps + 1)
    assert early.trace_success is not None
    first = early.trace_success.float().argmax(0)  # the first successful evaluation
    assert torch.equal(first[early.success], early.steps[early.success])

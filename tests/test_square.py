"""Square: the attack contract (bounds, determinism, state safety, early stop, queries), its
objectives per task, its errors, and that it breaks a gradient-masked model PGD cannot."""

from __future__ import annotations

import pytest
import torch
from _helpers_reliability import (
    Noisy,
    Quantized,
    TinySegmenter,
    ZeroBackward,
    seg_data,
    template_data,
    trained_classifier,
)
from torch import nn

from ssl_robust.attacks import (
    PGD,
    Attack,
    DepthPGD,
    EmbedAttack,
    Ensemble,
    SegPGD,
    Square,
    p_schedule,
    square,
    strong_attack,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def data():
    return template_data(32, seed=1)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.06), ("l2", 0.5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bounds_exact_and_input_unchanged(norm, eps, dtype, data):
    model = trained_classifier().to(dtype)
    x, y = data
    x = x.to(dtype)
    before = x.clone()
    try:
        res = Square(model, eps=eps, norm=norm, queries=60, generator=_gen()).run(x, y)
    finally:
        model.float()
    assert torch.equal(x, before)
    adv = res.adversarial
    assert adv.dtype == dtype and adv.shape == x.shape
    assert adv.min() >= 0 and adv.max() <= 1
    diff = (adv.double() - x.double()).flatten(1)
    size = diff.abs().max(1).values if norm == "linf" else diff.norm(dim=1)
    assert bool((size <= eps).all()), size.max()
    assert size.max() > eps / 2  # it moved


def test_deterministic_given_generator(data):
    x, y = data
    model = trained_classifier()
    a = Square(model, eps=0.06, queries=80, generator=_gen(3)).run(x, y)
    b = Square(model, eps=0.06, queries=80, generator=_gen(3)).run(x, y)
    c = Square(model, eps=0.06, queries=80, generator=_gen(4)).run(x, y)
    assert torch.equal(a.adversarial, b.adversarial) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.adversarial, c.adversarial)


def test_early_stop_and_query_counts(data):
    x, y = data
    model = trained_classifier()
    res = Square(model, eps=0.1, queries=300, generator=_gen()).run(x, y)
    assert res.success is not None and res.queries is not None
    assert bool((res.queries >= 1).all()) and bool((res.queries <= 300).all())
    assert torch.equal(res.steps, res.queries)
    # samples broken early stopped early; the survivors spent the whole budget
    assert bool((res.queries[~res.success] == 300).all())
    assert res.queries[res.success].float().mean() < 300
    # the reported success and loss are those of the returned images
    logits = model(res.adversarial)
    assert torch.equal(logits.argmax(1) != y, res.success)
    top2 = logits.scatter(1, y[:, None], -torch.inf).max(1).values
    torch.testing.assert_close(res.loss, top2 - logits.gather(1, y[:, None])[:, 0])
    # without early stop every sample spends the budget, and success is never lost
    full = Square(model, eps=0.1, queries=300, early_stop=False, generator=_gen()).run(x, y)
    assert bool((full.queries == 300).all())
    assert bool(full.success.sum() >= res.success.sum() - 2)


def test_queries_count_model_forwards(data):
    x, y = data
    model = trained_classifier()
    seen = []

    def counting(inp):
        seen.append(inp.shape[0])
        return model(inp)

    res = Square(counting, eps=0.1, queries=50, generator=_gen()).run(x, y)
    assert sum(seen) == int(res.queries.sum())


def test_square_breaks_the_zero_gradient_model_pgd_cannot(data):
    x, y = data
    real = trained_classifier()
    masked = ZeroBackward(real)
    assert torch.equal(masked(x), real(x))
    pgd = PGD(masked, eps=0.1, steps=20, generator=_gen()).run(x, y)
    sq = Square(masked, eps=0.1, queries=500, generator=_gen()).run(x, y)
    pgd_real = PGD(real, eps=0.1, steps=20, generator=_gen()).run(x, y)
    pgd_acc = 1 - pgd.success.float().mean()
    sq_acc = 1 - sq.success.float().mean()
    assert pgd_acc > 0.9  # masked: PGD sees zero gradients
    assert pgd_real.success.float().mean() > 0.9  # the model itself is not robust
    assert sq_acc < 0.2  # Square breaks it without gradients
    q = Square(Quantized(real), eps=0.1, queries=500, generator=_gen()).run(x, y)
    assert q.success.float().mean() > 0.8


def test_state_untouched_and_restored_on_error(data):
    x, y = data

    class BN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm2d(3)
            self.fc = nn.Linear(3 * 8 * 8, 4)
            self.fail = False

        def forward(self, inp):
            if self.fail:
                raise RuntimeError("boom")
            return self.fc(self.bn(inp).flatten(1))

    torch.manual_seed(0)
    net = BN().train()
    net(x).sum().backward()
    snap = (
        [m.training for m in net.modules()],
        [p.grad.clone() for p in net.parameters()],
        {k: v.clone() for k, v in net.state_dict().items()},
        torch.get_rng_state(),
    )

    def same() -> None:
        assert [m.training for m in net.modules()] == snap[0]
        for p, g in zip(net.parameters(), snap[1], strict=True):
            assert torch.equal(p.grad, g) and p.requires_grad
        for k, v in net.state_dict().items():
            assert torch.equal(v, snap[2][k])
        assert torch.equal(torch.get_rng_state(), snap[3])

    Square(net, queries=20, generator=_gen()).run(x, y)
    same()
    Square(net, queries=20, eval_mode=False).run(x, y)  # train mode: BN stats restored
    same()
    net.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        Square(net, queries=20).run(x, y)
    net.fail = False
    same()


def test_p_schedule_matches_autoattack_fractions():
    q = 10000
    expected = {0: 0.8, 10: 0.8, 11: 0.4, 51: 0.2, 201: 0.1, 501: 0.05, 1001: 0.025,
                2001: 0.0125, 4001: 0.00625, 6001: 0.003125, 8001: 0.0015625}  # fmt: skip
    for it, p in expected.items():
        assert p_schedule(0.8, it, q) == pytest.approx(p)
    assert p_schedule(0.5, 25, 1000) == pytest.approx(0.5 / 8)  # 250/10000: in (200, 500]


def test_functional_core_maximizes_a_linear_loss():
    w = torch.randn(1, 3, 8, 8, generator=_gen(1))
    x = torch.full((2, 3, 8, 8), 0.5)

    def fn(inp, idx, q):
        return (inp * w).flatten(1).sum(1), None

    res = square(fn, x, eps=0.1, queries=400, generator=_gen())
    optimum = (0.1 * w.abs()).sum() + (x[0] * w).sum()
    assert res.success is None
    assert bool((res.loss > optimum - 0.3 * (0.1 * w.abs()).sum()).all())
    torch.testing.assert_close(res.loss, fn(res.adversarial, None, 0)[0])


@pytest.mark.parametrize("kind", ["segmentation", "depth", "embedding"])
def test_other_tasks_maximize_the_task_loss(kind):
    if kind == "segmentation":
        model: nn.Module = TinySegmenter()
        x, target = seg_data(4, seed=0)
        objective: Attack = SegPGD(model, loss="ce")
    elif kind == "depth":
        net = nn.Conv2d(3, 1, 3, padding=1)
        model = nn.Sequential(net, nn.Softplus())
        x, target = torch.rand(4, 3, 8, 8, generator=_gen()), torch.rand(4, 8, 8) + 0.5
        objective = DepthPGD(model)
    else:
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16))
        x, target = torch.rand(4, 3, 8, 8, generator=_gen()), None
        objective = EmbedAttack(model)
    sq = Square(model, eps=0.1, queries=150, objective=objective, generator=_gen())
    assert sq.task == kind
    res = sq.run(x, target)
    prepared = objective.prepare_target(x, target)
    clean = objective.loss(model(x), prepared, 0)
    adv = objective.loss(model(res.adversarial), prepared, 0)
    assert bool((adv > clean).all())
    torch.testing.assert_close(res.loss, adv, rtol=1e-4, atol=1e-5)
    if kind == "segmentation":
        assert res.success is not None
    else:
        assert res.success is None and bool((res.queries == 150).all())


def test_in_an_ensemble_after_pgd(data):
    x, y = data
    model = ZeroBackward(trained_classifier())
    ens = Ensemble(
        [PGD(model, eps=0.1, steps=10, generator=_gen()),
         Square(model, eps=0.1, queries=500, generator=_gen())]
    )  # fmt: skip
    res = ens.run(x, y)
    assert bool((res.winner[res.success] == 1).all())
    assert res.success.float().mean() > 0.8


def test_errors():
    model = trained_classifier()
    x, y = template_data(2, seed=0)
    with pytest.raises(ValueError, match="did you mean"):
        Square(model, eps=8)
    with pytest.raises(ValueError, match=r"\(0, 13.86\]"):
        Square(model, eps=20.0, norm="l2").run(x, y)
    with pytest.raises(ValueError, match="eps > 0"):
        Square(model, eps=0)
    with pytest.raises(ValueError, match=r"p_init must be in \(0, 1\]"):
        Square(model, p_init=1.5)
    with pytest.raises(ValueError, match="queries"):
        Square(model, queries=0)
    with pytest.raises(ValueError, match="eot_iter must be an int >= 1"):
        Square(model, eot_iter=0)
    with pytest.raises(TypeError, match="needs labels"):
        Square(model).run(x)
    with pytest.raises(TypeError, match="no per-sample loss"):
        Square(model, objective=Attack(model))
    with pytest.raises(TypeError, match="takes a task attack"):
        Square(model, objective=Square(model))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same model"):
        Square(model, objective=PGD(trained_classifier().__class__()))


def test_strong_attack_versions(data):
    x, y = data
    masked = ZeroBackward(trained_classifier())
    standard = strong_attack(masked, task="classification", eps=0.1, steps=10, generator=_gen())
    plus = strong_attack(masked, task="classification", eps=0.1, steps=10, generator=_gen(),
                         version="plus", square_queries=500)  # fmt: skip
    assert [type(a).__name__ for a in plus.attacks] == ["APGD", "APGD", "Square"]
    assert plus.attacks[-1].queries == 500 and plus.attacks[-1].objective is plus.attacks[0]
    acc_standard = 1 - standard.run(x, y).success.float().mean()
    res = plus.run(x, y)
    assert acc_standard > 0.9 and 1 - res.success.float().mean() < 0.2
    assert bool((res.winner[res.success] == 2).all())
    rand = strong_attack(masked, task="classification", steps=3, version="rand")
    assert all(a.eot_iter == 20 for a in rand.attacks)
    rand = strong_attack(masked, task="classification", steps=3, version="rand", eot_iter=4)
    assert all(a.eot_iter == 4 for a in rand.attacks)
    with pytest.raises(ValueError, match="version"):
        strong_attack(masked, task="classification", version="fast")  # type: ignore[arg-type]
    seg = TinySegmenter().eval()
    xs, ms = seg_data(4, seed=0)
    ens = strong_attack(seg, task="segmentation", eps=0.1, steps=3, version="plus",
                        square_queries=30, generator=_gen())  # fmt: skip
    assert isinstance(ens.attacks[-1], Square) and ens.attacks[-1].task == "segmentation"
    assert ens.run(xs, ms).damage.shape == (4,)


def test_square_and_eot_attacks_pass_the_contract_checks(data):
    from ssl_robust.testing import check_attack

    x, y = data
    model = trained_classifier()
    check_attack(Square(model, eps=0.05, queries=30), x[:4], y[:4])
    check_attack(Square(model, eps=0.5, norm="l2", queries=30), x[:4], y[:4])
    check_attack(PGD(Noisy(model, 0.1), steps=2, eot_iter=3), x[:4], y[:4])

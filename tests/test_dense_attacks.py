"""SegPGD and DepthPGD on the shared PGD core (STYLE.md §8 skeleton)."""

from __future__ import annotations

import copy

import pytest
import torch
from _helpers_dense import (
    NUM_CLASSES,
    encoder,
    fitted_depther,
    fitted_segmenter,
    scenes,
)

from ssl_robust import SSLRobustTypeError, SSLRobustValueError
from ssl_robust.adaptors import LinearDepther, LinearSegmenter, SlidingWindow, TaskModel
from ssl_robust.attacks import DepthPGD, EmbedAttack, SegPGD, pgd
from ssl_robust.losses import depth_loss, segpgd_loss
from ssl_robust.metrics import DepthMetrics, MeanIoU

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 8 / 255


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return scenes(8, seed=5)


def _pixel_acc(model: TaskModel, x: torch.Tensor, m: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == m).float().mean())


def _rmse(model: TaskModel, x: torch.Tensor, d: torch.Tensor) -> float:
    metric = DepthMetrics(max_depth=8.0)
    with torch.no_grad():
        metric.update(model(x), d)
    return metric.compute()["rmse"]


def test_segpgd_collapses_pixel_accuracy(data) -> None:  # type: ignore[no-untyped-def]
    x, m, _ = data
    model = fitted_segmenter()
    clean = _pixel_acc(model, x, m)
    noise = (x + (torch.rand(x.shape, generator=gen(1)) * 2 - 1) * EPS).clamp(0, 1)
    res = SegPGD(model, generator=gen()).run(x, m)
    adv = res.adversarial
    assert clean > 0.8
    assert _pixel_acc(model, adv, m) < 0.5 * _pixel_acc(model, noise, m)
    assert (adv - x).abs().max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert adv.shape == x.shape and adv.dtype == x.dtype
    # the score hook: res reports the returned iterate; share correct went down per image
    miou_clean, miou_adv = MeanIoU(NUM_CLASSES), MeanIoU(NUM_CLASSES)
    with torch.no_grad():
        miou_clean.update(model(x), m)
        miou_adv.update(model(adv), m)
    assert miou_adv.compute() < miou_clean.compute()
    assert res.success is not None and res.success.dtype == torch.bool


def test_segpgd_loss_increases(data) -> None:  # type: ignore[no-untyped-def]
    x, m, _ = data
    model = fitted_segmenter()
    adv = SegPGD(model, steps=10, random_start=False, select="last")(x, m)
    with torch.no_grad():
        before = segpgd_loss(model(x), m, step=10, steps=10)
        after = segpgd_loss(model(adv), m, step=10, steps=10)
    assert bool((after > before).all())


def test_segpgd_all_ignored_no_perturbation(data) -> None:  # type: ignore[no-untyped-def]
    x, m, _ = data
    ignored = torch.full_like(m, 255)
    res = SegPGD(fitted_segmenter(), steps=5, random_start=False).run(x, ignored)
    assert torch.equal(res.adversarial, x)
    assert torch.isfinite(res.loss).all() and bool((res.loss == 0).all())
    assert res.success is not None and not bool(res.success.any())


def test_depthpgd_multiplies_rmse(data) -> None:  # type: ignore[no-untyped-def]
    x, _, d = data
    model = fitted_depther()
    res = DepthPGD(model, max_depth=8.0, generator=gen()).run(x, d)
    adv = res.adversarial
    assert (adv - x).abs().max() <= EPS + 1e-6
    assert _rmse(model, adv, d) > 2 * _rmse(model, x, d)
    with torch.no_grad():
        clean_loss = depth_loss(model(x), d, (d > 1e-3) & (d <= 8.0))
    assert bool((res.loss > clean_loss).all()) and res.success is None


def test_embed_attack_patch_tokens_on_dense_task(data) -> None:  # type: ignore[no-untyped-def]
    x = data[0]
    model = fitted_depther()
    res = EmbedAttack(model.encoder, tokens="patch", generator=gen()).run(x)
    assert (res.adversarial - x).abs().max() <= EPS + 1e-6
    noise = (x + (torch.rand(x.shape, generator=gen(1)) * 2 - 1) * EPS).clamp(0, 1)
    with torch.no_grad():
        ref = model.encoder(x).patches
        noise_dist = (model.encoder(noise).patches - ref).pow(2).flatten(1).sum(1)
    assert bool((res.loss > 2 * noise_dist).all())


@pytest.mark.parametrize("kind", ["seg", "depth"])
def test_deterministic_for_fixed_generator(kind: str, data) -> None:  # type: ignore[no-untyped-def]
    x, m, d = data
    if kind == "seg":
        model, target, cls = fitted_segmenter(), m, SegPGD
    else:
        model, target, cls = fitted_depther(), d, DepthPGD  # type: ignore[assignment]
    a = cls(model, steps=3, generator=gen(7))(x, target)
    b = cls(model, steps=3, generator=gen(7))(x, target)
    c = cls(model, steps=3, generator=gen(8))(x, target)
    assert torch.equal(a, b) and not torch.equal(a, c)


def _snapshot(model: torch.nn.Module):  # type: ignore[no-untyped-def]
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


@pytest.mark.parametrize("eval_mode", [True, False])
def test_state_untouched_including_on_error(eval_mode: bool, data) -> None:  # type: ignore[no-untyped-def]
    x, m, d = data
    seg = TaskModel(encoder(), LinearSegmenter(32, NUM_CLASSES)).train()
    seg.encoder.blocks[0].requires_grad_(False)
    before = _snapshot(seg)
    rng = torch.get_rng_state()
    SegPGD(seg, steps=2, eval_mode=eval_mode, generator=gen())(x, m)
    bad = m.clone()
    bad[0, 0, 0] = 7  # out of range, not ignore_index: raised after the first forward
    with pytest.raises(SSLRobustValueError, match="ignore_index"):
        SegPGD(seg, steps=2, eval_mode=eval_mode)(x, bad)
    after = _snapshot(seg)
    assert before[0] == after[0] and before[1] == after[1]
    for k, v in before[2].items():
        assert torch.equal(v, after[2][k]), k
    assert all(p.grad is None for p in seg.parameters())
    assert torch.equal(rng, torch.get_rng_state())
    dep = TaskModel(encoder(), LinearDepther(32, bins=8)).train()
    before = _snapshot(dep)
    DepthPGD(dep, steps=2, eval_mode=eval_mode)(x, d)
    after = _snapshot(dep)
    assert before[0] == after[0] and before[1] == after[1]
    assert all(p.grad is None for p in dep.parameters())


def test_segpgd_class_equals_functional_core(data) -> None:  # type: ignore[no-untyped-def]
    x, m, _ = data
    model = fitted_segmenter()
    steps = 4
    res = SegPGD(model, steps=steps, generator=gen(3)).run(x, m)
    frozen = copy.deepcopy(model).eval().requires_grad_(False)

    def loss_fn(xa, idx, step):  # type: ignore[no-untyped-def]
        out = frozen(xa)
        tgt = m[idx]
        valid = tgt != 255
        share = ((out.argmax(1) == tgt) & valid).flatten(1).sum(1) / valid.flatten(1).sum(1)
        loss = segpgd_loss(out, tgt, step=step, steps=steps)
        return loss, (share < 0.01) & valid.flatten(1).any(1), -share

    ref = pgd(loss_fn, x, eps=EPS, step_size=2 / 255, steps=steps, generator=gen(3))
    torch.testing.assert_close(res.adversarial, ref.adversarial)
    torch.testing.assert_close(res.loss, ref.loss)
    assert torch.equal(res.success, ref.success)  # type: ignore[arg-type]


def test_depthpgd_class_equals_functional_core(data) -> None:  # type: ignore[no-untyped-def]
    x, _, d = data
    model = fitted_depther()
    res = DepthPGD(model, steps=3, max_depth=8.0, generator=gen(3)).run(x, d)
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    mask = (d > 1e-3) & (d <= 8.0)

    def loss_fn(xa, idx, step):  # type: ignore[no-untyped-def]
        return depth_loss(frozen(xa), d[idx], mask[idx]), None

    ref = pgd(loss_fn, x, eps=EPS, step_size=2 / 255, steps=3, generator=gen(3))
    torch.testing.assert_close(res.adversarial, ref.adversarial)
    torch.testing.assert_close(res.loss, ref.loss)


@pytest.mark.parametrize("kind", ["seg", "depth"])
def test_batch_consistency(kind: str) -> None:
    x, m, d = scenes(3, seed=9)
    x = x.double()
    if kind == "seg":
        model = copy.deepcopy(fitted_segmenter()).double()
        attack = SegPGD(model, steps=3, random_start=False)
        target = m
    else:
        model = copy.deepcopy(fitted_depther()).double()
        attack = DepthPGD(model, steps=3, random_start=False, max_depth=8.0)  # type: ignore[assignment]
        target = d.double()
    full = attack(x, target)
    singles = torch.cat([attack(x[i : i + 1], target[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(full, singles)


def test_segpgd_early_stop_same_result(data) -> None:  # type: ignore[no-untyped-def]
    x, m, _ = data
    model = fitted_segmenter()
    a = SegPGD(model, steps=6, success_threshold=0.5, generator=gen()).run(x, m)
    b = SegPGD(model, steps=6, success_threshold=0.5, early_stop=True, generator=gen()).run(x, m)
    torch.testing.assert_close(a.adversarial, b.adversarial)
    assert bool((b.steps <= a.steps).all())


def test_segpgd_on_sliding_window(data) -> None:  # type: ignore[no-untyped-def]
    x, m, _ = data
    big = torch.cat((x, x.flip(-1)), -1)  # 16 x 32 images
    bigm = torch.cat((m, m.flip(-1)), -1)
    model = SlidingWindow(fitted_segmenter(), window=16, stride=8)
    adv = SegPGD(model, steps=5, generator=gen())(big, bigm)
    assert (adv - big).abs().max() <= EPS + 1e-6
    assert _pixel_acc(model, adv, bigm) < _pixel_acc(model, big, bigm)  # type: ignore[arg-type]


def test_bad_inputs(data) -> None:  # type: ignore[no-untyped-def]
    x, m, d = data
    seg, dep = fitted_segmenter(), fitted_depther()
    with pytest.raises(SSLRobustTypeError, match="SegPGD needs masks"):
        SegPGD(seg)(x)
    with pytest.raises(SSLRobustTypeError, match="integer class indices"):
        SegPGD(seg)(x, m.float())
    with pytest.raises(SSLRobustValueError, match="must have shape"):
        SegPGD(seg)(x, m[:, :8])
    with pytest.raises(SSLRobustValueError, match="logits"):
        SegPGD(seg.encoder)(x, m)
    with pytest.raises(SSLRobustValueError, match="normalize"):
        SegPGD(seg, normalize="mean")  # type: ignore[arg-type]
    with pytest.raises(SSLRobustTypeError, match="unexpected keyword"):
        SegPGD(seg, ignore_idx=0)  # type: ignore[call-arg]
    with pytest.raises(SSLRobustTypeError, match="DepthPGD needs"):
        DepthPGD(dep)(x)
    with pytest.raises(SSLRobustValueError, match="must have shape"):
        DepthPGD(dep)(x, d[:, :8])
    with pytest.raises(SSLRobustValueError, match="must not be negative"):
        DepthPGD(dep)(x, -d)
    with pytest.raises(SSLRobustValueError, match="smaller than max_depth"):
        DepthPGD(dep, min_depth=3.0, max_depth=1.0)
    with pytest.raises(SSLRobustValueError, match="returns depth"):
        DepthPGD(seg)(x, d)

"""PGD and EmbedAttack on one skeleton (STYLE.md §8)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_vit
from torch import nn

from ssl_robust.adaptors import LinearClassifier, TaskModel
from ssl_robust.attacks import PGD, Attack, EmbedAttack, pgd
from ssl_robust.encoders import EncoderOutput

EPS, STEP = 8 / 255, 2 / 255


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_attack(kind: str, model: nn.Module, **kw):
    if kind == "pgd":
        return PGD(model, **kw)
    return EmbedAttack(model.encoder, tokens=kind.split("-")[1], **kw)


ATTACKS = ["pgd", "embed-cls", "embed-patch"]


def _target(kind, labels):
    return labels if kind == "pgd" else None


def _clean_loss(kind, model, images, labels):
    with torch.no_grad():
        if kind == "pgd":
            return F.cross_entropy(model(images), labels, reduction="none")
    return torch.zeros(images.shape[0])


@pytest.mark.parametrize("kind", ATTACKS)
def test_shape_dtype_device_ball_and_range(kind, classifier, images, labels):
    attack = make_attack(kind, classifier, steps=5, generator=_gen())
    res = attack.run(images, _target(kind, labels))
    adv = res.adversarial
    assert adv.shape == images.shape and adv.dtype == images.dtype
    assert adv.device == images.device
    assert (adv - images).abs().max() <= EPS + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert res.loss.shape == (6,) and res.steps.shape == (6,)
    assert (res.success is None) == (kind != "pgd")
    again = make_attack(kind, classifier, steps=5, generator=_gen())
    assert torch.equal(again(images, _target(kind, labels)), adv)  # __call__ == run


@pytest.mark.parametrize("kind", ATTACKS)
def test_loss_increases(kind, classifier, images, labels):
    res = make_attack(kind, classifier, steps=10, generator=_gen()).run(
        images, _target(kind, labels)
    )
    assert (res.loss > _clean_loss(kind, classifier, images, labels)).all()


@pytest.mark.parametrize("kind", ATTACKS)
def test_reported_loss_describes_returned_images(kind, classifier, images, labels):
    attack = make_attack(kind, classifier, steps=4, generator=_gen())
    res = attack.run(images, _target(kind, labels))
    with torch.no_grad():
        if kind == "pgd":
            expected = F.cross_entropy(classifier(res.adversarial), labels, reduction="none")
            succ = classifier(res.adversarial).argmax(1) != labels
            assert torch.equal(res.success, succ)
        else:
            enc = classifier.encoder
            tok = "cls" if kind == "embed-cls" else "patches"
            a, c = getattr(enc(res.adversarial), tok), getattr(enc(images), tok)
            expected = (a - c).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(res.loss, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ATTACKS)
def test_deterministic_for_a_generator(kind, classifier, images, labels):
    a = make_attack(kind, classifier, steps=3, generator=_gen(7))(images, _target(kind, labels))
    torch.manual_seed(999)
    b = make_attack(kind, classifier, steps=3, generator=_gen(7))(images, _target(kind, labels))
    c = make_attack(kind, classifier, steps=3, generator=_gen(8))(images, _target(kind, labels))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("kind", ATTACKS)
def test_batch_consistency_without_random_start(kind, images, labels):
    torch.manual_seed(0)
    enc = tiny_vit().double().eval()
    model = TaskModel(enc, LinearClassifier(32, 5).double()).eval()
    x = images.double()
    attack = make_attack(kind, model, steps=5, random_start=False)
    if kind == "pgd":
        target = labels
    else:  # a reference other than f(x): the distance has a gradient at δ = 0
        with torch.no_grad():
            target = attack.embed(enc(x.flip(-1)))
    batch = attack(x, target)
    assert (batch - x).abs().max() > EPS / 2  # the attack moved
    for i in (0, 3):
        alone = attack(x[i : i + 1], target[i : i + 1])
        torch.testing.assert_close(alone[0], batch[i], atol=1e-10, rtol=0)


class BNNet(nn.Module):
    """A classifier with BatchNorm and Dropout, to see every kind of state."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 16 * 16, 5)
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail:
            raise RuntimeError("boom")
        return self.fc(self.drop(F.relu(self.bn(self.conv(x)))).flatten(1))


def _snapshot(model: nn.Module):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def _assert_same(a, b):
    assert a[0] == b[0] and a[1] == b[1]
    for g1, g2 in zip(a[2], b[2], strict=True):
        assert (g1 is None and g2 is None) or torch.equal(g1, g2)
    for k in a[3]:
        assert torch.equal(a[3][k], b[3][k]), k


@pytest.mark.parametrize("eval_mode", [True, False])
def test_model_state_untouched(eval_mode, images, labels):
    torch.manual_seed(0)
    net = BNNet().train()
    net.fc.weight.requires_grad_(False)  # a mixed requires_grad pattern must come back as is
    net(images).sum().backward()  # existing .grad that must stay identical
    before = _snapshot(net)
    rng = torch.get_rng_state()
    res = PGD(net, steps=3, eval_mode=eval_mode, generator=_gen()).run(images, labels)
    _assert_same(before, _snapshot(net))
    assert torch.equal(torch.get_rng_state(), rng)
    assert res.adversarial.shape == images.shape


def test_model_runs_in_eval_mode_by_default(images, labels):
    seen = []

    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3 * 16 * 16, 5)

        def forward(self, x):
            seen.append(self.training)
            return self.lin(x.flatten(1))

    spy = Spy().train()
    PGD(spy, steps=2).run(images, labels)
    assert seen and not any(seen)
    assert spy.training
    seen.clear()
    PGD(spy, steps=2, eval_mode=False).run(images, labels)
    assert all(seen)


@pytest.mark.parametrize("kind", ["pgd", "embed"])
def test_state_restored_when_model_raises(kind, images, labels):
    net = BNNet().train()
    net(images).sum().backward()
    before = _snapshot(net)
    net.fail = True

    def encoder_like(x):
        return net(x)

    attack = PGD(net, steps=2) if kind == "pgd" else EmbedAttack(net, steps=2)
    with pytest.raises(RuntimeError, match="boom"):
        attack.run(images, labels if kind == "pgd" else None)
    _assert_same(before, _snapshot(net))


def test_input_tensor_unchanged_and_requires_grad_input(classifier, images, labels):
    x = images.clone().requires_grad_(True)
    before = images.clone()
    adv = PGD(classifier, steps=2, generator=_gen())(x, labels)
    assert torch.equal(x.detach(), before) and x.grad is None
    assert not adv.requires_grad


def test_class_equals_functional_core(classifier, images, labels):
    attack = PGD(classifier, steps=6, early_stop=True, generator=_gen(3))
    res = attack.run(images, labels)

    def loss_fn(x, idx, step):
        logits = classifier(x)
        y = labels[idx]
        return F.cross_entropy(logits, y, reduction="none"), logits.argmax(1) != y

    frozen = copy.deepcopy(classifier).eval().requires_grad_(False)
    classifier_ = frozen

    def loss_fn_frozen(x, idx, step):
        logits = classifier_(x)
        y = labels[idx]
        return F.cross_entropy(logits, y, reduction="none"), logits.argmax(1) != y

    ref = pgd(
        loss_fn_frozen,
        images,
        eps=EPS,
        step_size=STEP,
        steps=6,
        early_stop=True,
        generator=_gen(3),
    )
    assert torch.equal(res.adversarial, ref.adversarial)
    assert torch.equal(res.steps, ref.steps)
    torch.testing.assert_close(res.loss, ref.loss)


def test_embed_attack_equals_functional_core_and_accepts_target(vit, images):
    attack = EmbedAttack(vit, tokens="patch", distance="cosine", steps=4, generator=_gen(1))
    res = attack.run(images)
    with torch.no_grad():
        clean = vit(images).patches

    def loss_fn(x, idx, step):
        e = vit(x).patches
        return (1 - F.cosine_similarity(e, clean[idx], dim=-1)).mean(1), None

    ref = pgd(loss_fn, images, eps=EPS, step_size=STEP, steps=4, generator=_gen(1))
    torch.testing.assert_close(res.adversarial, ref.adversarial)
    fresh = dict(tokens="patch", distance="cosine", steps=4)
    given = EmbedAttack(vit, generator=_gen(1), **fresh).run(images, clean)
    torch.testing.assert_close(given.adversarial, res.adversarial)
    with torch.no_grad():
        full = vit(images)
    from_output = EmbedAttack(vit, generator=_gen(1), **fresh).run(images, full)
    torch.testing.assert_close(from_output.adversarial, res.adversarial)


def test_embed_attack_on_plain_callables(vit, images):
    def cls_fn(x):
        return vit(x).cls

    def tok_fn(x):
        return vit(x).patches

    a = EmbedAttack(cls_fn, steps=3, generator=_gen()).run(images)
    b = EmbedAttack(vit, steps=3, generator=_gen()).run(images)
    torch.testing.assert_close(a.adversarial, b.adversarial)
    EmbedAttack(tok_fn, tokens="patch", steps=1).run(images)
    with pytest.raises(
        ValueError, match=r"tokens='cls'\) expects the model to return \(B, D\).*set tokens='patch'"
    ):
        EmbedAttack(tok_fn, tokens="cls", steps=1).run(images)
    with pytest.raises(ValueError, match="must match the encoder's output shape"):
        EmbedAttack(vit, steps=1).run(images, torch.zeros(6, 7))
    with pytest.raises(ValueError, match="one row per image"):
        EmbedAttack(vit, steps=1).run(images, torch.zeros(2, 32))
    with pytest.raises(TypeError, match="EncoderOutput"):
        EmbedAttack(lambda x: [x], steps=1).run(images)


def test_targeted_pgd_reaches_target(classifier, images):
    target = torch.full((6,), 2)
    res = PGD(classifier, targeted=True, eps=32 / 255, steps=20, generator=_gen()).run(
        images, target
    )
    with torch.no_grad():
        pred = classifier(res.adversarial).argmax(1)
    assert torch.equal(res.success, pred == target)
    assert res.success.float().mean() >= 0.5
    with torch.no_grad():
        clean_ce = F.cross_entropy(classifier(images), target, reduction="none")
    assert (res.loss >= -clean_ce - 1e-6).all()  # loss is -CE: it did not move away


def test_pgd_drives_accuracy_down_and_early_stop_is_no_weaker(classifier, images, labels):
    with torch.no_grad():
        labels = classifier(images).argmax(1)  # all clean-correct
    classic = PGD(classifier, select="last", generator=_gen()).run(images, labels)
    fast = PGD(classifier, early_stop=True, generator=_gen()).run(images, labels)
    assert fast.success.sum() >= classic.success.sum()
    assert fast.success.float().mean() >= 0.5
    assert fast.steps.sum() < classic.steps.sum()


def test_autocast_bf16_keeps_input_dtype(classifier, images, labels):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = PGD(classifier, steps=3, generator=_gen()).run(images, labels)
        emb = EmbedAttack(classifier.encoder, steps=3, generator=_gen()).run(images)
    for r in (res, emb):
        assert r.adversarial.dtype == torch.float32
        assert (r.adversarial - images).abs().max() <= EPS + 1e-6
        assert torch.isfinite(r.loss).all()


def test_empty_batch(classifier, labels):
    x = torch.rand(0, 3, 16, 16)
    res = PGD(classifier, steps=3).run(x, labels[:0])
    assert res.adversarial.shape == (0, 3, 16, 16) and res.loss.shape == (0,)
    assert EmbedAttack(classifier.encoder).run(x).adversarial.shape == (0, 3, 16, 16)


def test_attack_is_not_a_module_and_holds_no_state(classifier, images, labels):
    attack = PGD(classifier, steps=2, generator=_gen())
    assert not isinstance(attack, nn.Module)
    before = dict(vars(attack))
    attack(images, labels)
    assert vars(attack).keys() == before.keys()
    assert "eps=0.03137" in repr(attack) and "steps=2" in repr(attack)


def test_subclass_defines_only_loss(images):
    class MaxLogit(Attack):
        def loss(self, output, target, step):
            return output[:, 0]

    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
    res = MaxLogit(lin, steps=3, generator=_gen()).run(images)
    with torch.no_grad():
        assert (res.loss >= lin(images)[:, 0]).all()
    assert res.success is None


# ------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        (dict(eps=8), ValueError, r"did you mean 8/255 = 0.0313725"),
        (dict(step_size=2), ValueError, "did you mean 2/255"),
        (dict(eps=-1 / 255), ValueError, "eps must be a finite float >= 0"),
        (dict(step_size=-0.1), ValueError, "step_size must be"),
        (dict(steps=-3), ValueError, "steps must be >= 0"),
        (dict(steps=True), TypeError, "steps must be an int"),
        (dict(norm="linf2"), ValueError, r"norm must be one of 'linf', 'l2'; got 'linf2'"),
        (dict(select="worst"), ValueError, "select must be one of 'best', 'last'"),
        (
            dict(alpha=2 / 255),
            TypeError,
            r"unexpected keyword argument 'alpha' — did you mean step_size",
        ),
        (dict(epsilon=0.1), TypeError, "did you mean eps="),
        (dict(stepz=3), TypeError, "did you mean steps="),
        (dict(generator=42), TypeError, r"manual_seed\(seed\)"),
    ],
)
@pytest.mark.parametrize("cls", ["pgd", "embed"])
def test_bad_options_are_refused(cls, kw, exc, match, classifier):
    with pytest.raises(exc, match=match):
        if cls == "pgd":
            PGD(classifier, **kw)
        else:
            EmbedAttack(classifier.encoder, **kw)


def test_bad_choice_options(vit):
    with pytest.raises(ValueError, match=r"tokens must be one of 'cls', 'patch'; got 'all'"):
        EmbedAttack(vit, tokens="all")
    with pytest.raises(ValueError, match=r"distance must be one of 'l2', 'cosine'"):
        EmbedAttack(vit, distance="l1")
    with pytest.raises(TypeError, match=r"model must be an nn\.Module or a callable"):
        PGD(3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'tokens'"):
        PGD(vit, tokens="cls")
    PGD(vit, norm="l2", eps=1.5, step_size=0.5)  # L2 budgets may exceed 1


@pytest.mark.parametrize(
    ("images", "exc", "match"),
    [
        (torch.rand(2, 3, 16, 16) * 2 - 1, ValueError, "Normalization belongs to the Encoder"),
        (torch.rand(2, 3, 16, 16) * 255, ValueError, "divide by 255"),
        (torch.rand(3, 16, 16), ValueError, r"4 dimensions .*unsqueeze\(0\)"),
        ((torch.rand(2, 3, 16, 16) * 255).to(torch.uint8), TypeError, r"float\(\) / 255"),
        (torch.full((2, 3, 16, 16), float("nan")), ValueError, "NaN"),
        ([[0.5]], TypeError, "must be a torch.Tensor"),
    ],
)
def test_bad_images(images, exc, match, classifier):
    with pytest.raises(exc, match=match):
        PGD(classifier, steps=1)(images, torch.zeros(2, dtype=torch.long))
    with pytest.raises(exc, match=match):
        EmbedAttack(classifier.encoder, steps=1)(images)


@pytest.mark.parametrize(
    ("labels", "exc", "match"),
    [
        (None, TypeError, "PGD needs labels"),
        (torch.zeros(5, dtype=torch.long), ValueError, r"shape \(6,\)"),
        (torch.zeros(6), TypeError, "integer class indices"),
        (torch.zeros(6, 5), TypeError, "argmax"),
        (torch.full((6,), 5), ValueError, r"must be in \[0, 4\].*got min=5 max=5"),
        (torch.full((6,), -1), ValueError, r"must be in \[0, 4\]"),
        ([0, 1, 2, 3, 4, 0], TypeError, "must be a torch.Tensor"),
    ],
)
def test_bad_labels(labels, exc, match, classifier, images):
    with pytest.raises(exc, match=match):
        PGD(classifier, steps=1).run(images, labels)


def test_pgd_on_an_encoder_says_what_to_do(vit, images, labels):
    with pytest.raises(TypeError, match="EmbedAttack"):
        PGD(vit, steps=1).run(images, labels)
    with pytest.raises(ValueError, match=r"logits of shape \(B, num_classes\)"):
        PGD(lambda x: x, steps=1).run(images, labels)


def test_encoder_output_container(vit, images):
    out = vit(images)
    assert isinstance(out, EncoderOutput)
    sub = out[torch.tensor([0, 2])]
    assert sub.cls.shape == (2, 32) and sub.patches.shape == (2, 16, 32)
    assert out.patch_map().shape == (6, 32, 4, 4)
    torch.testing.assert_close(out.patch_map()[:, :, 1, 2], out.patches[:, 1 * 4 + 2])


@pytest.mark.parametrize("tokens", ["cls", "patch"])
@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_embedding_distance_matches_formula(tokens, distance, vit, images):
    from ssl_robust.attacks import embedding_distance

    with torch.no_grad():
        out, ref = vit(images), vit(images.flip(-1))
    e = out.cls if tokens == "cls" else out.patches
    r = ref.cls if tokens == "cls" else ref.patches
    got = embedding_distance(e, r, distance)
    if distance == "l2":
        want = ((e - r) ** 2).reshape(len(e), -1).sum(1)
    else:
        cos = (e * r).sum(-1) / (e.norm(dim=-1) * r.norm(dim=-1))
        want = (1 - cos).reshape(len(e), -1).mean(1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    res = EmbedAttack(vit, tokens=tokens, distance=distance, steps=2, generator=_gen()).run(images)
    assert res.loss.shape == (6,) and (res.loss > 0).all()

"""DeACL: config checks, the loss against a hand computation, the training step, augmentation."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _helpers_deacl import (
    synthetic_images,
)
from conftest import tiny_vit
from torch import Tensor, nn

from ssl_robust import SSLRobustTypeError, SSLRobustValueError
from ssl_robust.attacks import EmbedAttack
from ssl_robust.defenses import (
    DeACLConfig,
    DeACLTrainer,
    deacl_loss,
    random_resized_crop_flip,
    warmup_cosine,
)
from ssl_robust.encoders import EncoderOutput

CFG = DeACLConfig(steps=3, gamma=1.5, augment=False, epochs=4, warmup_epochs=1)

pytestmark = pytest.mark.usefixtures("one_thread")


def cos(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity along the last axis, written out."""
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def trainer_pair(config: DeACLConfig = CFG) -> DeACLTrainer:
    """A student that differs from its teacher, so both loss terms are non-trivial."""
    return DeACLTrainer(tiny_vit(1), teacher=tiny_vit(0), config=config)


# ----------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("target", ["teacher", "student"])
def test_loss_equals_hand_computation(images: Tensor, target: str) -> None:
    cfg = DeACLConfig(steps=3, gamma=1.5, augment=False, attack_target=target)  # type: ignore[arg-type]
    trainer = trainer_pair(cfg)
    start = trainer.generator.get_state()
    loss = trainer.loss(images)

    student, teacher = trainer.student, trainer.teacher
    with torch.no_grad():
        t = teacher(images).cls
        ref = t if target == "teacher" else student(images).cls
    attack = EmbedAttack(
        student,
        distance="cosine",
        eps=4 / 255,
        step_size=1 / 255,
        steps=3,
        select="last",
        generator=torch.Generator().set_state(start),
    )
    adv = attack(images, ref)
    with torch.no_grad():
        s, a = student(images).cls, student(adv).cls  # separate passes
    expected = -cos(s, t).mean() - 1.5 * cos(a, s).mean()
    assert torch.allclose(loss.detach(), expected, atol=1e-5)
    assert loss.requires_grad
    assert not torch.equal(adv, images)


def test_loss_cls_patch_adds_patch_terms(images: Tensor) -> None:
    trainer = trainer_pair(DeACLConfig(steps=2, gamma=2.0, augment=False, tokens="cls+patch"))
    start = trainer.generator.get_state()
    loss = trainer.loss(images)
    with torch.no_grad():
        t = trainer.teacher(images)
    # The attack of "cls+patch" maximizes d(cls) + d(patches); rebuild it from its formula.
    from ssl_robust.attacks.embed import embedding_distance

    class Both(EmbedAttack):
        def embed(self, output: Any) -> Tensor:
            return torch.cat((output.cls[:, None], output.patches), 1)

        def loss(self, output: Any, target: Tensor, step: int) -> Tensor:
            e = self.embed(output)
            return embedding_distance(e[:, 0], target[:, 0], "cosine") + embedding_distance(
                e[:, 1:], target[:, 1:], "cosine"
            )

    adv = Both(
        trainer.student,
        tokens="patch",
        distance="cosine",
        eps=4 / 255,
        step_size=1 / 255,
        steps=2,
        select="last",
        generator=torch.Generator().set_state(start),
    )(images, t)
    with torch.no_grad():
        s, a = trainer.student(images), trainer.student(adv)
    expected = (
        -cos(s.cls, t.cls).mean()
        - 2.0 * cos(a.cls, s.cls).mean()
        - cos(s.patches, t.patches).mean()
        - 2.0 * cos(a.patches, s.patches).mean()
    )
    assert torch.allclose(loss.detach(), expected, atol=1e-5)


def test_deacl_loss_function_terms() -> None:
    g = torch.Generator().manual_seed(0)
    s, a, t = (torch.randn(5, 8, generator=g) for _ in range(3))
    loss, terms = deacl_loss(s, a, t, gamma=0.5)
    assert math.isclose(float(terms["clean_cos"]), float(cos(s, t).mean()), abs_tol=1e-6)
    assert math.isclose(float(terms["adv_cos"]), float(cos(a, s).mean()), abs_tol=1e-6)
    assert torch.allclose(loss, -cos(s, t).mean() - 0.5 * cos(a, s).mean(), atol=1e-6)


# ----------------------------------------------------------------------------- the step
def test_teacher_never_changes_and_student_does(images: Tensor) -> None:
    trainer = DeACLTrainer(tiny_vit(0), config=DeACLConfig(steps=2, epochs=2, warmup_epochs=0))
    teacher_before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    for _ in range(2):
        stats = trainer.training_step(images)
    assert all(torch.equal(v, teacher_before[k]) for k, v in trainer.teacher.state_dict().items())
    assert not trainer.teacher.training
    assert not any(p.requires_grad for p in trainer.teacher.parameters())
    assert all(p.grad is None for p in trainer.teacher.parameters())
    changed = [
        not torch.equal(v, student_before[k]) for k, v in trainer.student.state_dict().items()
    ]
    assert any(changed)
    assert trainer.student.training
    assert set(stats) == {"loss", "clean_cos", "adv_cos", "lr"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in stats.values())
    assert math.isclose(stats["loss"], -stats["clean_cos"] - 2.0 * stats["adv_cos"], rel_tol=1e-5)


def test_attack_writes_no_parameter_grad(images: Tensor) -> None:
    trainer = trainer_pair()
    sentinels = []
    for p in trainer.student.parameters():
        p.grad = torch.full_like(p, 0.25)
        sentinels.append(p.grad)
    trainer.loss(images)  # runs the attack, builds the graph, no backward
    for p, before in zip(trainer.student.parameters(), sentinels, strict=True):
        assert p.grad is before and bool((p.grad == 0.25).all())
    assert all(p.requires_grad for p in trainer.student.parameters())


def test_teacher_once_no_grad_and_one_batched_student_pass(images: Tensor) -> None:
    trainer = trainer_pair(DeACLConfig(steps=3, augment=False))
    trainer.loss(images[:1])  # the first call also probes the embedding sizes once
    teacher_calls: list[bool] = []
    student_calls: list[tuple[bool, int, bool]] = []
    trainer.teacher.register_forward_hook(
        lambda m, i, o: teacher_calls.append(torch.is_grad_enabled())
    )
    trainer.student.register_forward_hook(
        lambda m, i, o: student_calls.append((m.training, i[0].shape[0], torch.is_grad_enabled()))
    )
    trainer.training_step(images)
    b = images.shape[0]
    assert teacher_calls == [False]
    train_mode = [c for c in student_calls if c[0]]
    assert train_mode == [(True, 2 * b, True)]  # clean + adversarial in one forward
    # the attack: 3 gradient steps + 1 scoring forward, all in eval mode
    assert [c[:2] for c in student_calls if not c[0]] == [(False, b)] * 4


def test_bf16_autocast_step(images: Tensor) -> None:
    trainer = DeACLTrainer(tiny_vit(0), config=DeACLConfig(steps=1, amp="bf16"))
    stats = trainer.training_step(images)
    assert all(math.isfinite(v) for v in stats.values())


def test_same_seed_same_result(images: Tensor) -> None:
    cfg = DeACLConfig(steps=2, seed=3)
    a, b = DeACLTrainer(tiny_vit(0), config=cfg), DeACLTrainer(tiny_vit(0), config=cfg)
    torch.manual_seed(0)
    sa = a.training_step(images)
    torch.manual_seed(1)  # the global RNG plays no part
    sb = b.training_step(images)
    assert sa == sb
    assert all(
        torch.equal(x, y)
        for x, y in zip(
            a.student.state_dict().values(), b.student.state_dict().values(), strict=True
        )
    )


def test_state_dict_roundtrip(images: Tensor) -> None:
    a = trainer_pair()
    a.training_step(images)
    state = a.state_dict()
    b = trainer_pair()
    b.load_state_dict(state)
    sa, sb = a.training_step(images), b.training_step(images)
    assert sa == sb
    with pytest.raises(SSLRobustValueError, match=r"different DeACLConfig.*gamma"):
        trainer_pair(DeACLConfig(gamma=1.0)).load_state_dict(state)
    with pytest.raises(SSLRobustValueError, match="not a DeACLTrainer state"):
        b.load_state_dict({"student": {}})


# ----------------------------------------------------------------------------- schedule
def test_warmup_cosine_schedule() -> None:
    values = [warmup_cosine(e, epochs=6, warmup_epochs=2) for e in range(6)]
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert values == pytest.approx(expected)
    assert warmup_cosine(0, epochs=3, warmup_epochs=0) == 1.0


# ----------------------------------------------------------------------------- augmentation
def test_augment_is_seeded_and_in_range() -> None:
    x = synthetic_images(4, seed=0)
    a = random_resized_crop_flip(x, generator=torch.Generator().manual_seed(1))
    b = random_resized_crop_flip(x, generator=torch.Generator().manual_seed(1))
    c = random_resized_crop_flip(x, generator=torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_augment_identity_and_flips() -> None:
    x = synthetic_images(3, seed=0)
    g = torch.Generator().manual_seed(0)
    same = random_resized_crop_flip(x, generator=g, scale=(1, 1), ratio=(1, 1), hflip=0, vflip=0)
    assert torch.allclose(same, x, atol=1e-5)
    flipped = random_resized_crop_flip(x, generator=g, scale=(1, 1), ratio=(1, 1), hflip=1, vflip=1)
    assert torch.allclose(flipped, x.flip(-1, -2), atol=1e-5)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eps": 4}, SSLRobustValueError, r"\[0, 1\] image scale.*4/255"),
        ({"step_size": 2.0}, SSLRobustValueError, "step_size"),
        ({"gamma": -1.0}, SSLRobustValueError, "gamma must be a finite float >= 0"),
        (
            {"warmup_epochs": 20, "epochs": 10},
            SSLRobustValueError,
            "warmup_epochs must be <= epochs",
        ),
        ({"tokens": "patch"}, SSLRobustValueError, "tokens must be one of 'cls', 'cls\\+patch'"),
        ({"distance": "kl"}, SSLRobustValueError, "distance must be one of"),
        ({"attack_target": "both"}, SSLRobustValueError, "attack_target must be one of"),
        ({"amp": "fp16"}, SSLRobustValueError, "amp must be one of 'bf16'"),
        ({"steps": 2.5}, SSLRobustTypeError, "steps must be an int"),
        ({"epochs": 0}, SSLRobustValueError, "epochs must be >= 1"),
        ({"lr": 0.0}, SSLRobustValueError, "lr must be a finite float > 0"),
        ({"augment": "yes"}, SSLRobustTypeError, "augment must be a bool"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        DeACLConfig(**kwargs)


class _OtherWidth(nn.Module):
    """A teacher without ``embed_dim`` whose embeddings are narrower than the student's."""

    def __init__(self) -> None:
        super().__init__()
        self.vit = tiny_vit(0, embed_dim=16)

    def forward(self, x: Tensor) -> EncoderOutput:
        return self.vit(x)


def test_teacher_of_other_width_is_refused(images: Tensor) -> None:
    with pytest.raises(SSLRobustValueError, match=r"same embedding size.*embed_dim=16"):
        DeACLTrainer(tiny_vit(0), teacher=tiny_vit(0, embed_dim=16))
    trainer = DeACLTrainer(tiny_vit(0), teacher=_OtherWidth(), config=CFG)
    with pytest.raises(
        SSLRobustValueError, match=r"same shape; got teacher \(16,\), student \(32,\)"
    ):
        trainer.loss(images)


def test_trainer_rejects_bad_arguments() -> None:
    student = tiny_vit(0)
    with pytest.raises(SSLRobustTypeError, match="config must be a DeACLConfig"):
        DeACLTrainer(student, config={"eps": 4 / 255})  # type: ignore[arg-type]
    with pytest.raises(SSLRobustTypeError, match=r"student must be an nn\.Module"):
        DeACLTrainer(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(SSLRobustValueError, match="teacher must not be the student"):
        DeACLTrainer(student, teacher=student)
    with pytest.raises(SSLRobustTypeError, match=r"optimizer must be a torch\.optim\.Optimizer"):
        DeACLTrainer(student, optimizer="sgd")  # type: ignore[arg-type]


def test_training_step_rejects_bad_images() -> None:
    trainer = trainer_pair()
    with pytest.raises(SSLRobustValueError, match="0–255"):
        trainer.training_step(torch.full((2, 3, 16, 16), 200.0))
    with pytest.raises(SSLRobustTypeError, match="uint8"):
        trainer.training_step(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))

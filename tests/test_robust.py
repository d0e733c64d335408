"""RobustTrainer: FARE / TaskAT losses against hand formulas, combinations, pass counts,
frozen and co-trained heads, errors, resume, torchrun."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _helpers_deacl import synthetic_images, weights_hash
from _helpers_robust import batch, heads
from conftest import tiny_vit
from torch import Tensor, nn

from ssl_robust import SSLRobustTypeError, SSLRobustValueError
from ssl_robust.adaptors import LinearClassifier, TaskModel
from ssl_robust.attacks import PGD, EmbedAttack
from ssl_robust.defenses import (
    FARE,
    DeACL,
    RobustConfig,
    RobustTrainer,
    TaskAT,
    combine_losses,
    fare_distance,
)
from ssl_robust.losses import depth_loss
from ssl_robust.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_thread")

HELPERS = Path(__file__).resolve().parent / "_helpers_robust.py"
ROOT = HELPERS.parents[1]
NO_AUG = RobustConfig(epochs=3, warmup_epochs=0, augment=False)


def _trainer(objectives: list[Any], combine: str = "avg", **kw: Any) -> RobustTrainer:
    return RobustTrainer(
        tiny_vit(1), teacher=tiny_vit(0), objectives=objectives, combine=combine,  # type: ignore[arg-type]
        config=kw.pop("config", NO_AUG), **kw,
    )  # fmt: skip


# ----------------------------------------------------------------------------- FARE
def test_fare_distance_formula() -> None:
    g = torch.Generator().manual_seed(0)
    s = tiny_vit(0)(synthetic_images(3, seed=0))
    t = tiny_vit(1)(synthetic_images(3, seed=0))
    cls = ((s.cls - t.cls) ** 2).sum(1)
    patch = ((s.patches - t.patches) ** 2).sum(2).mean(1)
    assert torch.allclose(fare_distance(s, t, tokens="cls"), cls)
    assert torch.allclose(fare_distance(s, t, tokens="patch"), patch)
    assert torch.allclose(fare_distance(s, t, tokens="cls+patch"), cls + patch)
    a = torch.randn(2, 5, generator=g)
    assert torch.allclose(fare_distance(a, a + 1), torch.full((2,), 5.0))


@pytest.mark.parametrize("tokens", ["cls", "patch", "cls+patch"])
def test_fare_loss_equals_hand_computation(tokens: str) -> None:
    x = synthetic_images(4, seed=1)
    trainer = _trainer([FARE(tokens=tokens, steps=2, eps=4 / 255, step_size=1 / 255)])  # type: ignore[arg-type]
    start = trainer.generator.get_state()
    loss = trainer.loss(x)
    student, teacher = trainer.student, trainer.teacher
    with torch.no_grad():
        t = teacher(x)

    class Fare(EmbedAttack):  # the attack maximizes FARE's own distance, written out
        def loss(self, output: Any, target: Any, step: int) -> Tensor:
            return fare_distance(output, t, tokens=tokens)

        def prepare_target(self, images: Tensor, target: Any) -> Tensor:
            return torch.zeros(images.shape[0])

        def check_output(self, output: Any, target: Tensor) -> None:
            pass

    adv = Fare(student, eps=4 / 255, step_size=1 / 255, steps=2, select="last",
               generator=torch.Generator().set_state(start))(x)  # fmt: skip
    with torch.no_grad():
        a = student(adv)
    parts = []
    if tokens != "patch":
        parts.append(((a.cls - t.cls) ** 2).sum(1))
    if tokens != "cls":
        parts.append(((a.patches - t.patches) ** 2).sum(2).mean(1))
    expected = sum(parts).mean()  # type: ignore[union-attr]
    assert torch.allclose(loss.detach(), expected, rtol=1e-5)
    assert not torch.equal(adv, x) and float((adv - x).abs().max()) <= 4 / 255 + 1e-6


# ----------------------------------------------------------------------------- TaskAT
def test_task_at_loss_is_task_loss_on_adversarial_images_plus_anchor() -> None:
    hs = heads()
    b = batch(4, seed=2)
    trades = 0.5
    task_at = TaskAT(heads={"classification": hs["classification"]}, steps=2, trades=trades)
    fare = FARE(tokens="cls", steps=1)
    trainer = _trainer([fare, task_at])
    start = trainer.generator.get_state()
    loss = trainer.loss(b)
    x, y = b["image"], b["label"]
    gen = torch.Generator().set_state(start)
    student, teacher, head = trainer.student, trainer.teacher, hs["classification"]
    with torch.no_grad():
        t = teacher(x)
    adv_fare = EmbedAttack(student, eps=4 / 255, step_size=1 / 255, steps=1, select="last",
                           generator=gen)(x, t.cls)  # fmt: skip
    adv_task = PGD(TaskModel(student, head), eps=4 / 255, step_size=1 / 255, steps=2,
                   early_stop=True, generator=gen)(x, y)  # fmt: skip
    with torch.no_grad():
        fare_loss = ((student(adv_fare).cls - t.cls) ** 2).sum(1)
        logits_adv, logits = head(student(adv_task), (16, 16)), head(student(x), (16, 16))
        ce = F.cross_entropy(logits_adv, y, reduction="none")
        kl = (F.softmax(logits, 1) * (F.log_softmax(logits, 1) - F.log_softmax(logits_adv, 1))).sum(
            1
        )
    expected = (fare_loss.mean() + (ce + trades * kl).mean()) / 2
    assert torch.allclose(loss.detach(), expected, rtol=1e-4)


@pytest.mark.parametrize("weight", [1.0, 2.0, {"depth": 3.0}])
def test_segmentation_and_depth_terms_follow_the_task_losses(weight: Any) -> None:
    hs = heads()
    b = batch(3, seed=4)
    pair = {"segmentation": hs["segmentation"], "depth": hs["depth"]}
    tat = TaskAT(heads=pair, steps=0, eps=0.0, weight=weight)
    w = weight if isinstance(weight, dict) else {"segmentation": weight, "depth": weight}
    trainer = _trainer([FARE(eps=0.0, steps=0), tat])
    loss = trainer.loss(b)  # eps 0: the "adversarial" images are the clean ones
    s = trainer.student
    with torch.no_grad():
        out = s(b["image"])
        t = trainer.teacher(b["image"]).cls
        seg = hs["segmentation"](out, (16, 16))
        seg_loss = torch.stack([F.cross_entropy(seg[i : i + 1], b["mask"][i : i + 1])
                                for i in range(3)])  # fmt: skip
        view = get_task("depth").encoder_view(s)
        depth = hs["depth"](view(b["image"]), (16, 16))[:, 0]
        d_loss = depth_loss(depth, b["depth"], (b["depth"] > 1e-3) & (b["depth"] <= 10.0))
    fare = ((out.cls - t) ** 2).sum(1)
    expected = (fare.mean() + w.get("segmentation", 1.0) * seg_loss.mean()
                + w["depth"] * d_loss.mean()) / 3  # fmt: skip
    assert torch.allclose(loss.detach(), expected, rtol=1e-4)


def test_per_task_weights_are_checked() -> None:
    pair = {"segmentation": heads()["segmentation"], "depth": heads()["depth"]}
    assert TaskAT(heads=pair, weight={"depth": 3.0}).weights == {"segmentation": 1.0, "depth": 3.0}
    assert TaskAT(heads=pair, weight=2.0).weights == {"segmentation": 2.0, "depth": 2.0}
    with pytest.raises(SSLRobustValueError, match=r"weight names tasks without a head: \['cl"):
        TaskAT(heads=pair, weight={"classification": 2.0})
    with pytest.raises(SSLRobustValueError, match=r"weight\['depth'\] must be a finite float > 0"):
        TaskAT(heads=pair, weight={"depth": 0.0})


# ----------------------------------------------------------------------------- combine
def test_combine_formulas() -> None:
    adv = [torch.tensor([1.0, 5.0, 3.0]), torch.tensor([4.0, 2.0, 2.0])]
    clean = [torch.tensor([0.0, 0.0, 2.5]), torch.tensor([0.0, 1.5, 0.0])]
    assert float(combine_losses(adv, how="avg")) == pytest.approx((9 / 3 + 8 / 3) / 2)
    # per sample: increases (1, 4) -> 2nd; (5, 0.5) -> 1st; (0.5, 2) -> 2nd, not the larger 3
    assert float(combine_losses(adv, clean, how="max")) == pytest.approx((4 + 5 + 2) / 3)
    with pytest.raises(SSLRobustValueError, match="combine must be one of 'avg', 'max', 'random'"):
        combine_losses(adv, how="min")


def test_max_picks_per_sample_largest_increase_not_largest_loss() -> None:
    hs = heads()
    b = batch(4, seed=5)
    trainer = _trainer([FARE(steps=1), TaskAT(heads={"classification": hs["classification"]},
                                             steps=1)], combine="max")  # fmt: skip
    inputs_seen: dict[str, Any] = {}
    original = trainer._losses

    def spy(inputs: Any, feats: Any, active: Any) -> Any:
        loss, stats = original(inputs, feats, active)
        inputs_seen["terms"] = [
            o.terms(inputs, feats[0], {0: feats[1 + n]}, with_clean=True)
            for n, o in enumerate(trainer.objectives)
        ]
        return loss, stats

    trainer._losses = spy  # type: ignore[method-assign]
    loss = trainer.loss(b)
    terms = inputs_seen["terms"]
    adv = torch.stack([terms[0].adversarial[0], terms[1].adversarial[0]])
    clean = torch.stack([terms[0].clean[0], terms[1].clean[0]])
    pick = (adv - clean).argmax(0)
    expected = adv.gather(0, pick[None])[0].mean()
    assert torch.allclose(loss.detach(), expected.detach(), rtol=1e-5)


def test_random_runs_one_attack_per_step_seeded() -> None:
    hs = heads()
    b = batch(4, seed=6)

    def run(seed: int) -> list[str]:
        trainer = _trainer(
            [FARE(steps=1), TaskAT(heads={k: hs[k] for k in ("classification", "segmentation")},
                                   steps=1)],
            combine="random", config=RobustConfig(seed=seed, augment=False),
        )  # fmt: skip
        chosen: list[str] = []
        for obj in trainer.objectives:
            original = obj.attack

            def spy(index: int, inputs: Any, obj: Any = obj, original: Any = original) -> Tensor:
                chosen.append(obj.perturbations()[index])
                return original(index, inputs)  # type: ignore[no-any-return]

            obj.attack = spy  # type: ignore[method-assign]
        for _ in range(6):
            trainer.training_step(b)
        return chosen

    first = run(0)
    assert len(first) == 6  # exactly one attack per step
    assert set(first) > {first[0]}  # more than one perturbation drawn over 6 steps
    assert run(0) == first  # seeded
    assert run(1) != first


def test_max_with_one_perturbation_warns_and_acts_as_avg() -> None:
    x = synthetic_images(4, seed=7)
    with pytest.warns(UserWarning, match="single perturbation.*acts as 'avg'"):
        with_max = _trainer([FARE(steps=1)], combine="max")
    avg = _trainer([FARE(steps=1)], combine="avg")
    assert torch.equal(with_max.loss(x), avg.loss(x))


# ----------------------------------------------------------------------------- passes
def test_teacher_once_each_attack_once_and_one_student_pass() -> None:
    hs = heads()
    b = batch(4, seed=8)
    tat = TaskAT(heads=hs, steps=2)
    trainer = _trainer([FARE(tokens="cls+patch", steps=3), tat])
    trainer.loss(b)  # the first call also probes the shapes once
    teacher_calls: list[bool] = []
    student_calls: list[tuple[bool, int]] = []
    trainer.teacher.register_forward_hook(
        lambda m, i, o: teacher_calls.append(torch.is_grad_enabled())
    )
    trainer.student.register_forward_hook(
        lambda m, i, o: student_calls.append((m.training, i[0].shape[0]))
    )
    attack_calls: list[str] = []
    for obj in trainer.objectives:
        original = obj.attack

        def spy(i: int, inputs: Any, o: Any = obj, f: Any = original) -> Tensor:
            attack_calls.append(o.perturbations()[i])
            return f(i, inputs)  # type: ignore[no-any-return]

        obj.attack = spy  # type: ignore[method-assign]
    trainer.training_step(b)
    assert teacher_calls == [False]
    assert attack_calls == ["fare", "classification", "segmentation", "depth"]
    train = [c for c in student_calls if c[0]]
    assert train == [(True, 5 * 4)]  # clean + 4 adversarial groups, one forward (depth too)
    # every other student forward belongs to an attack (eval mode): FARE 3 steps + scoring,
    # each task attack <= 2 steps + scoring (early stop may shrink the batch)
    assert all(not c[0] for c in student_calls if c not in train)
    assert 4 <= len(student_calls) - 1 <= 4 + 3 * 3


def test_batchnorm_student_runs_one_pass_per_group() -> None:
    class BNStudent(nn.Module):
        embed_dim = 8

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 4, 4)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x: Tensor) -> Tensor:
            return self.bn(self.conv(x)).mean((2, 3))

    trainer = RobustTrainer(BNStudent(), objectives=[FARE(steps=1), DeACL(steps=1)],
                            config=NO_AUG)  # fmt: skip
    sizes: list[int] = []
    trainer.student.register_forward_hook(
        lambda m, i, o: sizes.append(i[0].shape[0]) if m.training else None
    )
    trainer.training_step(synthetic_images(4, seed=0))
    assert sizes == [4, 4, 4]  # clean, FARE's, DeACL's: one pass per kind


# ----------------------------------------------------------------------------- heads
def test_frozen_heads_get_no_grad_and_do_not_change() -> None:
    hs = heads()
    before = {k: copy.deepcopy(h.state_dict()) for k, h in hs.items()}
    trainer = _trainer([FARE(steps=1), TaskAT(heads=hs, steps=1)])
    student_before = weights_hash(trainer.student)
    trainer.training_step(batch(4, seed=9))
    for k, h in hs.items():
        assert all(p.grad is None and not p.requires_grad for p in h.parameters())
        assert all(torch.equal(v, before[k][n]) for n, v in h.state_dict().items())
        assert not h.training
    assert weights_hash(trainer.student) != student_before
    assert len(trainer.optimizer.param_groups) == 1


def test_co_trained_heads_learn_at_their_own_lr() -> None:
    hs = heads()
    before = copy.deepcopy(hs["classification"].state_dict())
    tat = TaskAT(heads={"classification": hs["classification"]}, steps=1, train_heads=True,
                 head_lr=0.123)  # fmt: skip
    trainer = _trainer([FARE(steps=1), tat])
    assert trainer.optimizer.param_groups[1]["lr"] == pytest.approx(0.123)
    trainer.training_step(batch(4, seed=9))
    after = hs["classification"].state_dict()
    assert any(not torch.equal(v, before[k]) for k, v in after.items())
    assert all(p.grad is not None for p in hs["classification"].parameters())


# ----------------------------------------------------------------------------- data
def test_fit_with_one_loader_per_task_alternates_them() -> None:
    hs = heads()
    tat = TaskAT(heads={"classification": hs["classification"], "depth": hs["depth"]}, steps=1)
    trainer = _trainer([FARE(steps=1), tat], config=RobustConfig(epochs=1, warmup_epochs=0))
    full = batch(4, seed=10)
    cls_loader = [(full["image"], full["label"])] * 2  # (images, label) pairs
    depth_loader = [{"image": full["image"], "depth": full["depth"]}]  # dict batches
    seen: list[Any] = []
    original = trainer.training_step

    def spy(b: Any, *, tasks: Any = None) -> dict[str, float]:
        seen.append(tasks)
        return original(b, tasks=tasks)

    trainer.training_step = spy  # type: ignore[method-assign]
    history = trainer.fit({"classification": cls_loader, "depth": depth_loader}, progress=False)
    assert seen == [("classification",), ("depth",)] * 2  # depth's single batch is cycled
    assert {"classification_adv", "depth_adv", "fare"} <= set(history[0])
    with pytest.raises(SSLRobustValueError, match=r"no loader for \['depth'\]"):
        trainer.fit({"classification": cls_loader}, progress=False)


def test_missing_target_names_keys_and_task() -> None:
    hs = heads()
    trainer = _trainer([FARE(steps=1), TaskAT(heads={"segmentation": hs["segmentation"]})])
    b = batch(2)
    del b["mask"]
    with pytest.raises(
        SSLRobustValueError,
        match=r"no 'mask' target.*segmentation head.*\['depth', 'image', 'label'\]",
    ):
        trainer.training_step(b)
    with pytest.raises(SSLRobustValueError, match=r"segmentation.*need their targets"):
        trainer.training_step(b["image"])


def test_augmentation_moves_masks_with_images() -> None:
    hs = heads()
    trainer = _trainer([FARE(steps=0, eps=0.0), TaskAT(heads={"segmentation": hs["segmentation"]},
                                                     steps=0, eps=0.0)],
                       config=RobustConfig(augment=True))  # fmt: skip
    stats = trainer.training_step(batch(4, seed=11))
    assert torch.isfinite(torch.tensor(list(stats.values()))).all()


# ----------------------------------------------------------------------------- errors
def test_bad_objectives_and_combine_are_refused_with_the_valid_names() -> None:
    with pytest.raises(
        SSLRobustValueError,
        match="unknown objective 'trades'; valid objectives are: deacl, fare, task_at",
    ):
        RobustTrainer(tiny_vit(0), objectives=["trades"])
    with pytest.raises(SSLRobustValueError, match="combine must be one of 'avg', 'max', 'random'"):
        RobustTrainer(tiny_vit(0), objectives=["fare"], combine="sum")  # type: ignore[arg-type]
    with pytest.raises(SSLRobustValueError, match="TaskAT needs a distillation anchor"):
        RobustTrainer(tiny_vit(0), objectives=[TaskAT(heads={"depth": heads()["depth"]})])
    with pytest.raises(SSLRobustTypeError, match="objectives must be a list"):
        RobustTrainer(tiny_vit(0), objectives=FARE())  # type: ignore[arg-type]
    with pytest.raises(
        SSLRobustValueError, match="tokens must be one of 'cls', 'patch', 'cls\\+patch'"
    ):
        FARE(tokens="all")  # type: ignore[arg-type]
    with pytest.raises(SSLRobustValueError, match="heads\\['depth'\\] is a classification head"):
        TaskAT(heads={"depth": LinearClassifier(32, 3)})


def test_head_of_another_width_names_both_sizes() -> None:
    with pytest.raises(
        SSLRobustValueError,
        match="classification head expects embeddings of size 16 but the student produces 32",
    ):
        RobustTrainer(
            tiny_vit(0),
            objectives=[FARE(), TaskAT(heads={"classification": LinearClassifier(16, 3)})],
        )


class _Bare(nn.Module):
    """An encoder returning a bare (B, D) tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.vit = tiny_vit(0)

    def forward(self, x: Tensor) -> Tensor:
        return self.vit(x).cls


def test_fare_on_patch_tokens_of_a_bare_tensor_encoder_is_refused() -> None:
    trainer = RobustTrainer(_Bare(), objectives=[FARE(tokens="patch", steps=1)], config=NO_AUG)
    with pytest.raises(
        SSLRobustTypeError,
        match=r"FARE\(tokens='patch'\) needs encoders returning an EncoderOutput.*shape \(1, 32\)",
    ):
        trainer.loss(synthetic_images(2, seed=0))
    ok = RobustTrainer(_Bare(), objectives=[FARE(tokens="cls", steps=1)], config=NO_AUG)
    assert torch.isfinite(ok.loss(synthetic_images(2, seed=0)))


# ----------------------------------------------------------------------------- resume
def _multitask(config: RobustConfig, **fare: Any) -> RobustTrainer:
    hs = heads()
    tat = TaskAT(heads={"classification": hs["classification"], "depth": hs["depth"]}, steps=1,
                 train_heads=True)  # fmt: skip
    return RobustTrainer(tiny_vit(0), objectives=[FARE(steps=1, **fare), tat], combine="random",
                         config=config)  # fmt: skip


def test_resume_is_bit_exact_with_co_trained_heads(tmp_path: Path) -> None:
    cfg = RobustConfig(epochs=2, warmup_epochs=1)
    data = [batch(4, seed=12), batch(4, seed=13)]
    straight = _multitask(cfg)
    straight.fit(data, progress=False)
    first = _multitask(cfg)
    first.fit(data, epochs=1, checkpoint_dir=tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["robust_checkpoint.pt"]
    resumed = _multitask(cfg)
    resumed.fit(data, checkpoint_dir=tmp_path, progress=False)
    assert resumed.epoch == 2
    assert weights_hash(resumed.student) == weights_hash(straight.student)
    heads_of = [t.objectives[1].heads["depth"] for t in (resumed, straight)]  # type: ignore[attr-defined]
    assert weights_hash(heads_of[0]) == weights_hash(heads_of[1])


def test_checkpoint_of_other_objectives_lists_the_differences(tmp_path: Path) -> None:
    data = [batch(4, seed=12)]
    _multitask(NO_AUG).fit(data, epochs=1, checkpoint_dir=tmp_path, progress=False)
    other = _multitask(NO_AUG, eps=2 / 255)
    with pytest.raises(
        SSLRobustValueError, match=r"objectives\[0\]\.eps: stored 0\.0156.*now 0\.0078"
    ):
        other.fit(data, epochs=1, checkpoint_dir=tmp_path, progress=False)
    fewer = RobustTrainer(tiny_vit(0), objectives=[FARE(steps=1)], combine="random", config=NO_AUG)
    with pytest.raises(
        SSLRobustValueError, match=r"objectives: stored \['fare', 'task_at'\], now \['fare'\]"
    ):
        fewer.fit(data, epochs=1, checkpoint_dir=tmp_path, progress=False)


# ----------------------------------------------------------------------------- torchrun
def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def test_two_ranks_equal_one_rank_within_float_tolerance(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    procs = [
        subprocess.run([*run, str(HELPERS), "ddp", str(tmp_path)], env=_env(),
                       capture_output=True, text=True, timeout=120),
        subprocess.run([sys.executable, str(HELPERS), "single", str(tmp_path)], env=_env(),
                       capture_output=True, text=True, timeout=120),
    ]  # fmt: skip
    for proc in procs:
        assert proc.returncode == 0, proc.stderr[-3000:]
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    start = tiny_vit(0).state_dict()
    moved = 0
    for key, value in single.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # ranks identical
        assert torch.allclose(ranks[0][key], value, atol=1e-5, rtol=1e-4), key
        if key.startswith("student.") and not torch.equal(value, start[key[8:]]):
            moved += 1
    assert moved > 0  # it trained


def test_bf16_multitask_step() -> None:
    hs = heads()
    trainer = _trainer(
        [FARE(tokens="cls+patch", steps=1), TaskAT(heads=hs, steps=1)],
        config=RobustConfig(amp="bf16", augment=False),
    )
    stats = trainer.training_step(batch(2, seed=14))
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())

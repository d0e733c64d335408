"""DeACLTrainer.fit: robustness gain, checkpoints, bit-exact resume, torchrun (gloo), bad input."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _helpers_deacl import (
    RESUME_CONFIG,
    resume_batches,
    synthetic_images,
    weights_hash,
)
from conftest import tiny_vit
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from ssl_robust import SSLRobustTypeError, SSLRobustValueError
from ssl_robust.attacks import EmbedAttack
from ssl_robust.defenses import DeACLConfig, DeACLTrainer, warmup_cosine

HELPERS = Path(__file__).resolve().parent / "_helpers_deacl.py"
ROOT = HELPERS.parents[1]
X2 = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
SMALL = DeACLConfig(steps=1, epochs=3, warmup_epochs=1, augment=False)

pytestmark = pytest.mark.usefixtures("one_thread")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # the same thread count as the in-process runs
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _adversarial_cos(encoder: nn.Module, x: Tensor, eps: float) -> float:
    """Mean cos(f(x_adv), f(x)) under a 10-step cosine EmbedAttack (1 = fully robust)."""
    g = torch.Generator().manual_seed(0)
    attack = EmbedAttack(
        encoder, distance="cosine", eps=eps, step_size=eps / 4, steps=10, generator=g
    )
    adv = attack(x)
    with torch.no_grad():
        return float(F.cosine_similarity(encoder(adv).cls, encoder(x).cls).mean())


def test_short_fit_raises_robustness_and_keeps_clean_alignment() -> None:
    eps = 8 / 255
    train = synthetic_images(64, seed=0)
    held_out = synthetic_images(32, seed=1)
    labels = torch.zeros(64, dtype=torch.long)
    loader = DataLoader(TensorDataset(train, labels), batch_size=32)  # yields [images, labels]
    student = tiny_vit(0)
    before = _adversarial_cos(student.eval(), held_out, eps)
    cfg = DeACLConfig(eps=eps, step_size=eps / 4, steps=3, epochs=3, warmup_epochs=0, lr=0.02)
    trainer = DeACLTrainer(student, config=cfg)
    history = trainer.fit(loader, progress=False)
    after = _adversarial_cos(trainer.student.eval(), held_out, eps)
    # the adversarial distance 1 - cos shrinks by more than half
    assert 1 - after < 0.5 * (1 - before), (before, after)
    with torch.no_grad():
        s, t = trainer.student(held_out).cls, trainer.teacher(held_out).cls
    assert float(F.cosine_similarity(s, t).mean()) > 0.9
    # not collapsed: per-image deviations from the mean still follow the teacher's
    centered = F.cosine_similarity(s - s.mean(0), t - t.mean(0)).mean()
    assert float(centered) > 0.5
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0]
    assert history[-1]["adv_cos"] > history[0]["adv_cos"] - 1e-3


def test_checkpoint_resume_in_fresh_process_is_bit_exact(tmp_path: Path) -> None:
    straight = DeACLTrainer(tiny_vit(0), config=RESUME_CONFIG)
    straight.fit(resume_batches(), epochs=2, progress=False)

    first = DeACLTrainer(tiny_vit(0), config=RESUME_CONFIG)
    first.fit(resume_batches(), epochs=1, checkpoint_dir=tmp_path, progress=False)
    assert weights_hash(first.student) != weights_hash(straight.student)
    state = torch.load(tmp_path / "deacl_checkpoint.pt", weights_only=True)
    assert set(state) == {
        "format", "config", "epoch", "student", "optimizer", "scheduler", "generator"
    }  # fmt: skip
    assert state["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["deacl_checkpoint.pt"]  # no temp files

    proc = subprocess.run(
        [sys.executable, str(HELPERS), "resume", str(tmp_path)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    epoch, digest = (tmp_path / "resumed.txt").read_text().split()
    assert epoch == "2"
    assert digest == weights_hash(straight.student)


def test_torchrun_two_gloo_processes_end_identical(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, str(HELPERS), "ddp", str(tmp_path)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    written = sorted(p.name for p in tmp_path.iterdir())
    assert proc.returncode == 0, f"{written}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    ranks = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert ranks[0] == ranks[1]  # student and teacher hashes, epochs run, sampler epoch
    student_hash, teacher_hash, epochs_run, sampler_epoch = ranks[0]
    assert epochs_run == "1" and sampler_epoch == "0"
    assert teacher_hash == weights_hash(tiny_vit(0))  # rank 0's teacher everywhere
    assert student_hash != teacher_hash  # trained
    ckpt = torch.load(tmp_path / "ckpt" / "deacl_checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert not any(k.startswith("module.") for k in ckpt["student"])


def test_callbacks_schedule_and_logging(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[int, bool]] = []
    trainer = DeACLTrainer(tiny_vit(0), config=SMALL)
    batches = [synthetic_images(4, seed=2)]
    with caplog.at_level(logging.INFO, logger="ssl_robust.defenses"):
        history = trainer.fit(
            batches, epochs=2, callbacks=[lambda e, s: calls.append((e, s.training))]
        )
        history += trainer.fit(batches, callbacks=[lambda e, s: calls.append((e, s.training))])
    assert calls == [(0, False), (1, False), (2, False), (3, False)]
    assert trainer.student.training and trainer.epoch == 3
    lrs = [h["lr"] for h in history]
    expected = [0.05 * warmup_cosine(e, epochs=3, warmup_epochs=1) for e in range(3)]
    assert lrs == pytest.approx(expected)
    assert "DeACL epoch 2/2" in caplog.text and "clean_cos=" in caplog.text
    assert trainer.fit(batches) == []  # already done


def test_checkpoint_of_other_config_is_refused_unless_overwrite(tmp_path: Path) -> None:
    batches = [synthetic_images(4, seed=2)]
    DeACLTrainer(tiny_vit(0), config=SMALL).fit(
        batches, epochs=1, checkpoint_dir=tmp_path, progress=False
    )
    other = DeACLConfig(steps=1, epochs=3, warmup_epochs=1, augment=False, gamma=1.0)
    trainer = DeACLTrainer(tiny_vit(0), config=other)
    with pytest.raises(SSLRobustValueError, match=r"another run.*gamma.*overwrite=True"):
        trainer.fit(batches, epochs=1, checkpoint_dir=tmp_path, progress=False)
    trainer.fit(batches, epochs=1, checkpoint_dir=tmp_path, overwrite=True, progress=False)
    state = torch.load(tmp_path / "deacl_checkpoint.pt", weights_only=True)
    assert state["config"]["gamma"] == 1.0


def test_export_student_is_a_plain_dino_state_dict(tmp_path: Path) -> None:
    trainer = DeACLTrainer(tiny_vit(0), config=SMALL)
    trainer.training_step(synthetic_images(4, seed=2))
    path = trainer.export_student(tmp_path / "robust.pth")
    weights = torch.load(path, weights_only=True)
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight"} <= set(weights)
    assert "blocks.0.attn.qkv.weight" in weights
    fresh = tiny_vit(7).eval()
    fresh.load_state_dict(weights, strict=True)
    x = synthetic_images(2, seed=3)
    with torch.no_grad():
        assert torch.equal(fresh(x).cls, trainer.student.eval()(x).cls)


@pytest.mark.parametrize(
    ("batches", "error", "match"),
    [
        (
            [{"img": torch.rand(2, 3, 16, 16)}],
            SSLRobustValueError,
            r"no 'image': its keys are \['img'\]",
        ),
        (
            [(torch.zeros(2, dtype=torch.long), torch.rand(2, 3, 16, 16))],
            SSLRobustTypeError,
            "float",
        ),
        ([["a", "b"]], SSLRobustTypeError, "must be a tensor.*got str"),
        ([X2 * 255], SSLRobustValueError, "0–255"),
        ([], SSLRobustValueError, "no batches"),
    ],
)
def test_fit_rejects_bad_loaders(batches: list[object], error: type, match: str) -> None:
    trainer = DeACLTrainer(tiny_vit(0), config=SMALL)
    with pytest.raises(error, match=match):
        trainer.fit(batches, epochs=1, progress=False)


def test_fit_rejects_bad_arguments() -> None:
    trainer = DeACLTrainer(tiny_vit(0), config=SMALL)
    batches = [synthetic_images(2, seed=0)]
    with pytest.raises(SSLRobustValueError, match=r"epochs must be <= config\.epochs=3"):
        trainer.fit(batches, epochs=4)
    with pytest.raises(SSLRobustTypeError, match="callbacks must be callables"):
        trainer.fit(batches, callbacks=[3])  # type: ignore[list-item]
    assert trainer.epoch == 0 and math.isfinite(trainer.optimizer.param_groups[0]["lr"])

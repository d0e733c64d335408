"""The multi-task remedy on the embedded default: the shipped weights and a fresh short
fine-tune, judged by the paper's protocol (fresh linear heads, task attacks at 8/255)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader

from ssl_robust import PGD, SegPGD, evaluate
from ssl_robust.adaptors import TaskModel, fit
from ssl_robust.bench import default_spec
from ssl_robust.bench.spec import DEFAULT_MULTITASK_WEIGHTS
from ssl_robust.data import create_dataset
from ssl_robust.defenses import FARE, RobustConfig, RobustTrainer, TaskAT
from ssl_robust.encoders import Encoder, create_encoder
from ssl_robust.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_thread")

OPTS = {"image_size": 32, "contrast": 0.35}


def _heads(encoder: Encoder, loader: DataLoader, epochs: int) -> dict[str, TaskModel]:
    info = loader.dataset.info  # type: ignore[attr-defined]
    models = {}
    for task, lr in (("classification", 0.01), ("segmentation", 1e-3)):
        torch.manual_seed(0)
        models[task] = TaskModel(encoder, get_task(task).make_head(encoder.embed_dim, info))
        fit(models[task], loader, epochs=epochs, lr=lr, progress=False)
    return models


def _attacked(encoder: Encoder, train: DataLoader, test: DataLoader) -> dict[str, float]:
    """PGD accuracy and SegPGD mIoU at 8/255 (10 steps) with FRESH heads on ``encoder``."""
    models = _heads(encoder, train, epochs=4)
    out = {}
    for task, cls in (("classification", PGD), ("segmentation", SegPGD)):
        attack = lambda m, cls=cls: cls(m, eps=8 / 255, step_size=2 / 255, steps=10)  # noqa: E731
        out[task] = evaluate(models[task], test, attacks={"a": attack}, seed=0).headline["model"][
            "a"
        ]
    return out


def test_fresh_short_multitask_finetune_moves_task_attack_metrics_up() -> None:
    train_data = create_dataset("shapes", split="train", size=128, seed=0, **OPTS)
    test_data = create_dataset("shapes", split="val", size=48, seed=0, **OPTS)
    train = DataLoader(train_data, batch_size=64, shuffle=True,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    test = DataLoader(test_data, batch_size=48)
    teacher = create_encoder("vit_tiny_shapes", pretrained=True).eval()
    heads = {t: m.adaptor for t, m in _heads(copy.deepcopy(teacher), train, epochs=3).items()}
    trainer = RobustTrainer(
        copy.deepcopy(teacher),
        teacher=teacher,
        objectives=[
            FARE(tokens="cls+patch", steps=2, weight=0.05),
            TaskAT(heads=heads, eps=8 / 255, step_size=3 / 255, steps=2),
        ],
        config=RobustConfig(epochs=2, warmup_epochs=1, lr=0.05, augment=False),
    )
    trainer.fit(train, progress=False)
    before = _attacked(teacher, train, test)
    after = _attacked(trainer.student.eval(), train, test)
    assert after["classification"] > before["classification"], (before, after)
    assert after["segmentation"] > before["segmentation"] + 0.05, (before, after)


@pytest.mark.skipif(not DEFAULT_MULTITASK_WEIGHTS.is_file(), reason="weights not built")
def test_default_spec_loads_the_shipped_multitask_weights() -> None:
    entry = default_spec().encoders[2]
    assert entry.encoder_type == "multitask" and entry.deacl is not None
    assert entry.deacl.checkpoint == str(DEFAULT_MULTITASK_WEIGHTS)
    assert default_spec(fine_tune=True).encoders[2].deacl.checkpoint is None  # type: ignore[union-attr]
    tuned = create_encoder("vit_tiny_shapes").eval()
    tuned.load_state_dict(torch.load(DEFAULT_MULTITASK_WEIGHTS, weights_only=True))  # strict
    base = create_encoder("vit_tiny_shapes", pretrained=True).eval()
    x = torch.stack(
        [create_dataset("shapes", split="val", size=8, **OPTS)[i]["image"] for i in range(8)]
    )
    with torch.no_grad():
        cos = torch.cosine_similarity(tuned(x).cls, base(x).cls, dim=1).mean()
    assert 0.3 < float(cos) < 0.9999  # moved, yet related to the teacher


def test_the_multitask_example_runs_and_prints_before_and_after() -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "multitask_finetune.py"
    out = subprocess.run([sys.executable, str(script), "--epochs", "1"], capture_output=True,
                         text=True, check=True, timeout=600).stdout  # fmt: skip
    rows = {" ".join(ln.split()[:-2]): ln.split()[-2:] for ln in out.splitlines()
            if ln.startswith(("clas ", "segm "))}  # fmt: skip
    assert set(rows) == {"clas clean accuracy", "clas PGD accuracy", "segm clean mIoU",
                         "segm SegPGD mIoU"}  # fmt: skip
    assert "epoch 1:" in out and "fresh heads" in out

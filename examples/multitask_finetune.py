"""Multi-task robust fine-tuning: FARE as the anchor plus PGD and SegPGD against the task heads.

The bundled ``vit_tiny_shapes`` encoder (no downloads) is fine-tuned on the synthetic ``shapes``
data, whose dict batches carry a label and a mask for the same images. Linear heads are first
fitted on the frozen teacher; ``RobustTrainer`` then minimizes FARE's distance to the teacher
(CLS and patch tokens) plus each head's task loss on its own attack's images (combine="avg").
The evaluation follows the paper's protocol: FRESH linear heads are fitted on each encoder, then
attacked with 10-step PGD / SegPGD at eps 8/255. Prints before vs after.

    PYTHONPATH=. python examples/multitask_finetune.py [--epochs 2] [--out runs/multitask]

With ``--out`` the checkpoint is kept there (run again to resume) and the robust weights are
exported to ``OUT/robust_student.pth``.
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch.utils.data import DataLoader

from ssl_robust import PGD, SegPGD, evaluate
from ssl_robust.adaptors import TaskModel, fit
from ssl_robust.data import create_dataset
from ssl_robust.defenses import FARE, RobustConfig, RobustTrainer, TaskAT
from ssl_robust.encoders import Encoder, create_encoder
from ssl_robust.tasks import get_task

TASKS = ("classification", "segmentation")
EPS = 8 / 255


def heads_on(encoder: Encoder, loader: DataLoader, epochs: int) -> dict[str, TaskModel]:
    """Fresh linear heads fitted on the frozen ``encoder``, one per task."""
    info = loader.dataset.info  # type: ignore[attr-defined]
    models = {}
    for task in TASKS:
        torch.manual_seed(0)
        head = get_task(task).make_head(encoder.embed_dim, info)
        models[task] = TaskModel(encoder, head)
        lr = 0.01 if task == "classification" else 1e-3
        fit(models[task], loader, epochs=epochs, lr=lr, progress=False)
    return models


def robustness(encoder: Encoder, train: DataLoader, test: DataLoader) -> dict[str, list[float]]:
    """Clean and attacked accuracy / mIoU with fresh heads."""
    models = heads_on(encoder, train, epochs=4)
    rows = {}
    for task, attack_cls in (("classification", PGD), ("segmentation", SegPGD)):
        attack = lambda m, cls=attack_cls: cls(m, eps=EPS, step_size=2 / 255, steps=10)  # noqa: E731
        res = evaluate(models[task], test, attacks={"attack": attack}, seed=0)
        rows[task] = [res.headline["model"]["clean"], res.headline["model"]["attack"]]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="multi-task robust fine-tuning on shapes")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default=None, help="checkpoint/export folder (optional)")
    args = parser.parse_args()
    torch.manual_seed(0)

    opts = {"image_size": 32, "contrast": 0.35}
    train_data = create_dataset("shapes", split="train", size=256, seed=0, **opts)
    test_data = create_dataset("shapes", split="val", size=64, seed=0, **opts)
    train = DataLoader(train_data, batch_size=64, shuffle=True,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    test = DataLoader(test_data, batch_size=64)

    teacher = create_encoder("vit_tiny_shapes", pretrained=True).eval()
    student = copy.deepcopy(teacher)
    heads = {task: model.adaptor for task, model in heads_on(student, train, epochs=3).items()}

    trainer = RobustTrainer(
        student,
        teacher=teacher,
        objectives=[
            FARE(tokens="cls+patch", eps=4 / 255, step_size=1 / 255, steps=2, weight=0.05),
            TaskAT(heads=heads, eps=EPS, step_size=3 / 255, steps=2),
        ],
        combine="avg",
        config=RobustConfig(epochs=args.epochs, warmup_epochs=1, lr=0.05, augment=False),
    )
    for record in trainer.fit(train, checkpoint_dir=args.out, progress=False):
        print(f"epoch {record['epoch']:.0f}: loss {record['loss']:.3f}, "
              f"PGD loss {record['classification_adv']:.3f}, "
              f"SegPGD loss {record['segmentation_adv']:.3f}")  # fmt: skip

    before = robustness(teacher, train, test)
    after = robustness(trainer.student.eval(), train, test)
    print(f"\nfresh heads, eps={EPS:.4f}, 10-step attacks, {len(test_data)} test images")
    print(f"{'':26}{'before':>8}{'after':>8}")
    for task, metric, attack in (("classification", "accuracy", "PGD"),
                                 ("segmentation", "mIoU", "SegPGD")):  # fmt: skip
        for i, what in enumerate(("clean", attack)):
            label = f"{task[:4]} {what} {metric}"
            print(f"{label:<26}{before[task][i]:8.3f}{after[task][i]:8.3f}")
    if args.out is not None:
        print(f"robust weights: {trainer.export_student(f'{args.out}/robust_student.pth')}")


if __name__ == "__main__":
    main()

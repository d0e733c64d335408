"""Cost of one multi-task RobustTrainer step against the sum of its parts, and against DeACL.

Parts, each timed alone on the same batch: the frozen teacher's forward (no grad), each attack
(FARE's EmbedAttack, PGD, SegPGD, DepthPGD on the student with the heads), and one student
forward + backward over the clean and all adversarial images (with the heads' losses). The
multi-task step (FARE anchor + TaskAT on three heads, combine="avg") should cost no more than
1.1x their sum: the loop adds no pass of its own. Also the cost of a DeACL step (the preset,
5 attack steps) on the same batch. Timings are CPU-process medians over repeats, measured in one
process, the variants interleaved; augmentation is off.

    PYTHONPATH=. python benchmarks/robust_step.py [--repeats 5] [--threads 1] [--batch 32]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ssl_robust.adaptors import LinearClassifier, LinearDepther, LinearSegmenter
from ssl_robust.data import create_dataset
from ssl_robust.defenses import (
    FARE,
    DeACLConfig,
    DeACLTrainer,
    RobustConfig,
    RobustTrainer,
    TaskAT,
)
from ssl_robust.defenses.objectives import StepInputs
from ssl_robust.encoders import create_encoder


def _clock(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="steps of every attack")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    data = create_dataset("shapes", size=args.batch, image_size=32, contrast=0.35)
    batch = torch.utils.data.default_collate([data[i] for i in range(args.batch)])
    enc = create_encoder("vit_tiny_shapes", pretrained=True)
    torch.manual_seed(0)
    d = enc.embed_dim
    heads = {
        "classification": LinearClassifier(d, 4),
        "segmentation": LinearSegmenter(d, 5),
        "depth": LinearDepther(d, bins=64),
    }
    cfg = RobustConfig(augment=False, epochs=1, warmup_epochs=0)
    fare = FARE(tokens="cls+patch", steps=args.steps)
    task_at = TaskAT(heads=heads, steps=args.steps, eps=8 / 255, step_size=2 / 255)
    multi = RobustTrainer(enc, objectives=[fare, task_at], config=cfg)
    deacl = DeACLTrainer(
        create_encoder("vit_tiny_shapes", pretrained=True),
        config=DeACLConfig(augment=False, epochs=1, warmup_epochs=0),
    )
    x, targets = multi._prepare(batch)
    multi.loss(batch)  # the one-time shape probe, outside the timings

    def teacher() -> None:
        with torch.no_grad():
            multi.teacher(x)

    with torch.no_grad():
        t_out = multi.teacher(x)
    inputs = StepInputs(x, t_out, targets)
    attacks = {
        label: (lambda i=i, j=j: multi.objectives[i].attack(j, inputs))
        for i, j, label in multi.perturbations
    }
    advs = [multi.objectives[i].attack(j, inputs) for i, j, _ in multi.perturbations]

    def student() -> None:
        multi.student.train()
        feats = multi._student_pass([x, *advs])
        loss, _ = multi._losses(inputs, feats, list(range(len(advs))))
        multi.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]

    parts: dict[str, list[float]] = {"teacher": [], "student fwd+bwd": []}
    parts.update({f"attack {k}": [] for k in attacks})
    step: list[float] = []
    deacl_step: list[float] = []
    for _ in range(args.repeats):
        parts["teacher"].append(_clock(teacher))
        for k, fn in attacks.items():
            parts[f"attack {k}"].append(_clock(fn))
        parts["student fwd+bwd"].append(_clock(student))
        step.append(_clock(lambda: multi.training_step(batch)))
        deacl_step.append(_clock(lambda: deacl.training_step(batch)))
    med = {k: statistics.median(v) for k, v in parts.items()}
    total = sum(med.values())
    s, dl = statistics.median(step), statistics.median(deacl_step)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch}, "
          f"{args.steps}-step attacks, CPU-process seconds (median of {args.repeats})")  # fmt: skip
    for k, v in med.items():
        print(f"  {k:<28}{v:8.3f} s")
    print(f"  {'sum of parts':<28}{total:8.3f} s")
    print(f"  {'multi-task step':<28}{s:8.3f} s   ({s / total:.2f}x the sum of its parts)")
    print(f"  {'DeACL step (5-step attack)':<28}{dl:8.3f} s   (multi-task = {s / dl:.1f}x DeACL)")


if __name__ == "__main__":
    main()

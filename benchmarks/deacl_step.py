"""Cost of one DeACL training step against a naive implementation (CPU, small ViT).

Naive step (how research code often writes it): the attack calls ``loss.backward()``, so every
attack step also fills the parameter gradients; the teacher is an unfrozen copy whose embedding
is computed with autograd for the attack target and again for the loss; the student runs the
clean and the adversarial batch in two separate forwards.

DeACLTrainer.training_step: the teacher runs once per batch under ``no_grad``; the attack
(EmbedAttack on the shared PGD core) differentiates with respect to the perturbation only; the
student runs clean + adversarial as one concatenated forward.

Both take the same number of attack steps on the same images; augmentation is off in both.
Timings are medians over repeats, the two variants interleaved, measured in one process.

    PYTHONPATH=. python benchmarks/deacl_step.py [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_robust.defenses import DeACLConfig, DeACLTrainer
from ssl_robust.encoders import VisionTransformer


def naive_step(
    student: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    cfg: DeACLConfig,
    generator: torch.Generator,
) -> float:
    target = teacher(images).cls  # with autograd, teacher not frozen
    delta = (torch.rand(images.shape, generator=generator) * 2 - 1) * cfg.eps
    for _ in range(cfg.steps):
        delta.requires_grad_(True)
        adv = (images + delta).clamp(0, 1)
        loss = (1 - F.cosine_similarity(student(adv).cls, target.detach())).mean()
        loss.backward()  # also fills every parameter's .grad
        grad = delta.grad
        assert grad is not None
        delta = (delta + cfg.step_size * grad.sign()).clamp(-cfg.eps, cfg.eps).detach()
    adversarial = (images + delta).clamp(0, 1)
    optimizer.zero_grad()
    teacher_out = teacher(images).cls  # recomputed, with grad
    clean = student(images).cls
    adv_out = student(adversarial).cls  # a second, separate forward
    loss = -F.cosine_similarity(clean, teacher_out).mean() - cfg.gamma * (
        F.cosine_similarity(adv_out, clean).mean()
    )
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def make_vit(seed: int) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=4, num_heads=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg = DeACLConfig(augment=False, epochs=1, warmup_epochs=0)
    images = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    trainer = DeACLTrainer(make_vit(0), config=cfg)
    naive_student = make_vit(0).train()
    naive_teacher = copy.deepcopy(naive_student)
    naive_opt = torch.optim.SGD(naive_student.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    gen = torch.Generator().manual_seed(0)

    def ours() -> None:
        trainer.training_step(images)

    def naive() -> None:
        naive_step(naive_student, naive_teacher, naive_opt, images, cfg, gen)

    for fn in (ours, naive):  # warm-up
        fn()
    times: dict[str, list[float]] = {"ours": [], "naive": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("naive", naive)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    # Each repeat times both variants back to back; the median of the per-repeat ratios is
    # robust to load drifting during the run (other processes on the machine).
    paired = statistics.median(o / n for o, n in zip(times["ours"], times["naive"], strict=True))
    print(
        f"ViT img 32, patch 4, D 192, depth 4; batch {args.batch}; attack steps {cfg.steps}; "
        f"threads {args.threads}; median of {args.repeats}"
    )
    print(f"naive step     : {med['naive'] * 1e3:8.1f} ms")
    print(f"DeACL step     : {med['ours'] * 1e3:8.1f} ms")
    print(f"ratio of medians DeACL / naive : {med['ours'] / med['naive']:.3f}")
    print(f"median of paired ratios        : {paired:.3f}")


if __name__ == "__main__":
    main()

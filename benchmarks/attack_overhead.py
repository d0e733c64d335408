"""Overhead of PGD and EmbedAttack over a bare forward + autograd.grad loop.

The bare loop is the least an attack of ``steps`` steps must do: ``steps`` times a forward and
``torch.autograd.grad`` with respect to the input (no step, no projection, no bookkeeping),
with the model frozen (eval mode, ``requires_grad=False``). EmbedAttack's bare loop also
computes the clean embedding once. The ratio ours / bare is printed (target: <= 1.03).

Run:  python benchmarks/attack_overhead.py [--batch 32] [--steps 20] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _common import interleaved, random_batch, small_vit, timing_parser

from ssl_robust.adaptors import LinearClassifier, TaskModel
from ssl_robust.attacks import PGD, EmbedAttack


def main() -> None:
    a = timing_parser(__doc__, clock="cpu").parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    enc = small_vit().to(device)
    model = TaskModel(enc, LinearClassifier(enc.embed_dim, 10)).to(device).eval()
    model.requires_grad_(False)
    x, y = random_batch(a.batch, device)

    def bare_pgd() -> None:
        for _ in range(a.steps):
            xi = x.clone().requires_grad_(True)
            loss = F.cross_entropy(model(xi), y, reduction="none").sum()
            torch.autograd.grad(loss, xi)

    def bare_embed() -> None:
        with torch.no_grad():
            ref = enc(x).cls
        for _ in range(a.steps):
            xi = x.clone().requires_grad_(True)
            loss = (enc(xi).cls - ref).pow(2).sum()
            torch.autograd.grad(loss, xi)

    pgd = PGD(model, steps=a.steps, generator=torch.Generator().manual_seed(0))
    emb = EmbedAttack(enc, steps=a.steps, generator=torch.Generator().manual_seed(0))
    fns = {
        "bare_pgd": bare_pgd,
        "PGD": lambda: pgd.run(x, y),
        "bare_embed": bare_embed,
        "EmbedAttack": lambda: emb.run(x),
    }
    ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.bf16)
    with ctx:
        t = interleaved(fns, a.repeats, a.clock)
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(
        f"device={device} batch={a.batch} steps={a.steps} threads={a.threads} bf16={a.bf16} "
        f"clock={a.clock}"
    )
    for name in fns:
        print(f"{name:<12} {t[name] * 1000:9.1f} ms")
    print(f"PGD / bare loop:         {t['PGD'] / t['bare_pgd']:.3f}")
    print(f"EmbedAttack / bare loop: {t['EmbedAttack'] / t['bare_embed']:.3f}")


if __name__ == "__main__":
    main()

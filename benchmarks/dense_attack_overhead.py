"""Overhead of SegPGD / DepthPGD over a bare forward + autograd.grad loop (same TaskModel).

Both sides run the same model on the same batch for the same number of gradient steps with the
same loss; the bare loop does only forward, loss, ``torch.autograd.grad`` w.r.t. the
perturbation and the signed step + clamp. The ratio is attack time / bare time: everything the
library adds (input checks, state freeze/restore, best-iterate tracking, success/score
bookkeeping, the final scoring forward). A second ratio compares with the bare loop plus the
one no-grad scoring forward the core performs by contract (DESIGN.md), and a third compares
with a bare loop on a trivial loss (``output.sum()``), i.e. it also counts the cost of the
task loss itself.

Run: ``python benchmarks/dense_attack_overhead.py [--batch 16] [--steps 20] [--repeats 7]``.
Times are medians over interleaved repeats, measured in this one process, on CPU; the
default clock is the process CPU time with one intra-op thread, which other processes on a
shared machine do not inflate (``--clock wall`` for wall time).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ssl_robust.adaptors import LinearDepther, LinearSegmenter, TaskModel
from ssl_robust.attacks import DepthPGD, SegPGD
from ssl_robust.encoders import VisionTransformer
from ssl_robust.losses.depth import _depth_loss

EPS, STEP = 8 / 255, 2 / 255


def bare_loop(
    model: torch.nn.Module,
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    score_forward: bool = False,
) -> torch.Tensor:
    delta = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * EPS
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        d = delta.detach().requires_grad_(True)
        loss = loss_fn(model(x + d))
        (g,) = torch.autograd.grad(loss.sum(), d)
        delta = (d.detach() + STEP * g.sign()).clamp(-EPS, EPS)
        delta = (x + delta).clamp(0, 1) - x
    if score_forward:  # what the core adds by contract: one no-grad forward on the result
        with torch.no_grad():
            loss_fn(model(x + delta))
    return x + delta


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def timed(fn: Callable[[], object], clock: Callable[[], float]) -> float:
    t0 = clock()
    fn()
    return clock() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="cpu",
        help="cpu: process CPU time (stable on a shared machine with --threads 1); wall: wall",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    torch.manual_seed(0)
    enc = VisionTransformer(img_size=args.size, patch_size=4, embed_dim=64, depth=4, num_heads=4)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    masks = torch.randint(0, 5, (args.batch, args.size, args.size), generator=g)
    masks[:, :2] = 255
    depth = torch.rand(args.batch, args.size, args.size, generator=g) * 5 + 0.5
    seg = TaskModel(enc, LinearSegmenter(64, 5)).eval().requires_grad_(False)
    dep = TaskModel(enc, LinearDepther(64)).eval().requires_grad_(False)
    valid = masks != 255
    dmask = (depth > 1e-3) & (depth <= 10.0)

    def seg_ce(out: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(out, masks.masked_fill(~valid, 0), reduction="none")
        return (ce * valid).flatten(1).sum(1) / valid.flatten(1).sum(1)

    cases = {
        "SegPGD": (
            lambda: SegPGD(seg, steps=args.steps, generator=torch.Generator().manual_seed(0))(
                x, masks
            ),
            lambda: bare_loop(seg, x, seg_ce, args.steps),
            lambda: bare_loop(seg, x, seg_ce, args.steps, score_forward=True),
            lambda: bare_loop(seg, x, lambda o: o.flatten(1).sum(1), args.steps),
        ),
        "DepthPGD": (
            lambda: DepthPGD(dep, steps=args.steps, generator=torch.Generator().manual_seed(0))(
                x, depth
            ),
            lambda: bare_loop(dep, x, lambda o: _depth_loss(o[:, 0], depth, dmask), args.steps),
            lambda: bare_loop(
                dep,
                x,
                lambda o: _depth_loss(o[:, 0], depth, dmask),
                args.steps,
                score_forward=True,
            ),
            lambda: bare_loop(dep, x, lambda o: o.flatten(1).sum(1), args.steps),
        ),
    }
    print(
        f"batch={args.batch} size={args.size} steps={args.steps} repeats={args.repeats} "
        f"threads={args.threads} clock={args.clock} torch={torch.__version__}"
    )
    print(
        "| attack | attack s | bare, same loss s | ratio | bare + scoring forward s | ratio "
        "| bare, sum loss s | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, fns in cases.items():
        for fn in fns:  # warm-up
            fn()
        times: list[list[float]] = [[] for _ in fns]
        for _ in range(args.repeats):
            for fn, acc in zip(fns, times, strict=True):
                acc.append(timed(fn, clock))
        a, b, s, t = (statistics.median(v) for v in times)
        print(
            f"| {name} | {a:.3f} | {b:.3f} | {a / b:.3f} | {s:.3f} | {a / s:.3f} | {t:.3f} "
            f"| {a / t:.3f} |"
        )


if __name__ == "__main__":
    main()

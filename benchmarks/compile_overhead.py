"""What ``torch.compile`` of the encoder does to the cost of PGD (ratio vs eager, one process).

Builds the benchmark ViT classifier twice: eager, and with ``torch.compile(encoder)`` (inductor
by default) inside the same ``TaskModel``. The first compiled attack pays the compilation; it
is timed apart (``compile+first``). Afterwards both attacks run interleaved and the ratio
compiled / eager of the median attack time is printed. Both attacks start from the same
generator, and the script also prints the largest difference between their adversarial images
(compiled kernels may round differently).

The attack runs without early stop so every step sees the full batch (one compiled graph; early
stop shrinks the batch and makes dynamo compile a dynamic-shape graph once more).

Run:  python benchmarks/compile_overhead.py [--batch 32] [--steps 20] [--repeats 5]
          [--threads 1] [--backend inductor] [--device cpu] [--bf16]
"""

from __future__ import annotations

import copy
import time

import torch
from _common import interleaved, random_batch, small_vit, timing_parser

from ssl_robust.adaptors import LinearClassifier, TaskModel
from ssl_robust.attacks import PGD


def main() -> None:
    p = timing_parser(__doc__, clock="wall")
    p.add_argument("--backend", default="inductor")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    enc = small_vit().to(device)
    torch.manual_seed(1)
    head = LinearClassifier(enc.embed_dim, 10).to(device)
    eager = TaskModel(enc, head).eval()
    compiled_enc = torch.compile(copy.deepcopy(enc), backend=a.backend)
    compiled = TaskModel(compiled_enc, copy.deepcopy(head)).eval()
    x, y = random_batch(a.batch, device)

    def attack(model: TaskModel) -> torch.Tensor:
        g = torch.Generator(device=device).manual_seed(0)
        return PGD(model, steps=a.steps, generator=g)(x, y)

    ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.bf16)
    with ctx:
        start = time.perf_counter()
        first = attack(compiled)
        if device.type == "cuda":
            torch.cuda.synchronize()
        compile_s = time.perf_counter() - start
        diff = float((first - attack(eager)).abs().max())
        t = interleaved(
            {"eager": lambda: attack(eager), "compiled": lambda: attack(compiled)},
            a.repeats,
            a.clock,
        )
    print(
        f"torch={torch.__version__} device={device} backend={a.backend} batch={a.batch} "
        f"steps={a.steps} threads={a.threads} bf16={a.bf16} clock={a.clock}"
    )
    print(f"compile + first attack: {compile_s:8.1f} s")
    print(f"eager PGD:              {t['eager'] * 1000:8.1f} ms")
    print(f"compiled PGD:           {t['compiled'] * 1000:8.1f} ms")
    print(f"compiled / eager:       {t['compiled'] / t['eager']:.3f}")
    print(f"max |adv_compiled - adv_eager|: {diff:.2e}")


if __name__ == "__main__":
    main()

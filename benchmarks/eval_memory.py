"""Peak memory of the benchmark runner at 64 and 512 evaluation images (should be flat).

Each size runs in its own subprocess (a fresh Python) through ``run_benchmark``: a tiny
random ViT (``vit_test``), ``shapes`` at 64 px, all three tasks, 2 attack steps, heads trained
for one epoch on 32 images, no curves, no DeACL. The subprocess reports its peak resident set
size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), which includes torch itself; the ratio
512 / 64 is the figure that matters (target: at most 1.15).

Run:  python benchmarks/eval_memory.py [--sizes 64 512] [--image-size 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads({threads})
from ssl_robust.bench import run_benchmark
from ssl_robust.bench.spec import (AttackSpec, BenchSpec, DatasetSpec, EncoderSpecEntry,
    EvalSpec, HeadSpec)
tasks = ("classification", "segmentation", "depth")
spec = BenchSpec(
    encoders=(EncoderSpecEntry(name="tiny", registry="vit_test"),),
    datasets=(DatasetSpec(name="shapes", dataset="shapes", tasks=tasks,
                          image_size={image_size}, options={{"size": {n} + 64}}),),
    attack=AttackSpec(steps=2, curve_eps=()),
    heads={{t: HeadSpec(epochs=1, train_size=32, batch_size=16) for t in tasks}},
    eval=EvalSpec(subset={n}, batch_size=32, gallery=4),
)
start = time.perf_counter()
run_benchmark(spec, out=sys.argv[1], progress=False, render=False)
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"n": {n}, "peak_mib": peak_kib / 1024, "seconds": time.perf_counter() - start}}))
"""


def measure(n: int, image_size: int, threads: int) -> dict[str, float]:
    code = CHILD.format(n=n, image_size=image_size, threads=threads)
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run(
            [sys.executable, "-c", code, out], capture_output=True, text=True, check=True
        )
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch

    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.image_size} px images")
    rows = [measure(n, args.image_size, args.threads) for n in args.sizes]
    for r in rows:
        print(f"{int(r['n']):>5} images: peak RSS {r['peak_mib']:7.1f} MiB, {r['seconds']:.1f} s")
    print(f"peak memory ratio {rows[-1]['n']:.0f}/{rows[0]['n']:.0f} images: "
          f"{rows[-1]['peak_mib'] / rows[0]['peak_mib']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()

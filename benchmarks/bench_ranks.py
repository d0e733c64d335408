"""Wall time of a small CPU benchmark under torchrun: 2 ranks vs 1 rank.

Runs ``python -m torch.distributed.run --nproc_per_node K -m ssl_robust bench --config C``
for K = 1 and 2 (one torch thread per rank) on a tiny config (``vit_test``, ``shapes`` at 32
px, all three tasks, 5 attack steps, 128 evaluation images, no DeACL) and reports the wall
time of each and their ratio, and checks that both wrote the same metric values. Heads are
trained on every rank, so only the evaluation is split: the ratio reflects that share.

Run:  python benchmarks/bench_ranks.py [--subset 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """
threads = 1
[attack]
steps = 5
curve_eps = []
[eval]
subset = {subset}
batch_size = 16
gallery = 0
[heads.classification]
epochs = 1
train_size = 64
[heads.segmentation]
epochs = 1
train_size = 64
[heads.depth]
epochs = 1
train_size = 64
batch_size = 16
[[encoders]]
name = "tiny"
registry = "vit_test"
[[datasets]]
name = "shapes"
dataset = "shapes"
tasks = ["classification", "segmentation", "depth"]
image_size = 32
options = {{ size = {size} }}
"""


def run(ranks: int, config: Path, out: Path, port: int) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
           "--master_port", str(port), "-m", "ssl_robust", "bench", "--config", str(config),
           "--out", str(out), "--no-progress"]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subset", type=int, default=128)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "c.toml"
        config.write_text(CONFIG.format(subset=args.subset, size=args.subset + 64))
        times = {k: run(k, config, Path(tmp) / f"r{k}", 29600 + k) for k in (1, 2)}
        rows = {
            k: json.loads((Path(tmp) / f"r{k}" / "results.json").read_text())["rows"] for k in times
        }
    same = all(
        abs(a[key] - b[key]) <= 1e-6 * max(1.0, abs(b[key]))
        for a, b in zip(rows[1], rows[2], strict=True)
        for key in ("clean", "embed_attack", "task_attack")
    )
    print(f"1 rank: {times[1]:.1f} s, 2 ranks: {times[2]:.1f} s, ratio 2/1 = "
          f"{times[2] / times[1]:.2f}; same metric values: {same}")  # fmt: skip


if __name__ == "__main__":
    main()

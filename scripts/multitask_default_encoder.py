"""Multi-task fine-tune the default encoder: ``ssl_robust/assets/vit_tiny_shapes_multitask.pt``.

The embedded benchmark (``ssl-robust bench`` without ``--config``) evaluates the bundled
``vit_tiny_shapes`` encoder, its DeACL version and its multi-task version. The multi-task weights
ship in the package and the default spec loads them (``DefenseSpec(checkpoint=...)``). This
script makes them from scratch with the command line, exactly as a user would:

    ssl-robust finetune --config configs/finetune.toml --out DIR

(the recipe of ``configs/finetune.toml``: linear classification, segmentation and depth heads
fitted on the frozen teacher on 512 ``shapes`` training scenes; then 6 epochs on 2048 scenes,
batch 32 (384 steps), of FARE on the CLS and patch tokens, eps 4/255, 3 steps, weight 0.05,
plus PGD / SegPGD / DepthPGD at eps 8/255, 3 steps of 3/255, against those heads, the depth
loss weighted 3x, combined by their mean; SGD lr 0.015, seed 0),
then copies ``DIR/student.pt`` to the assets. One CPU thread (``OMP_NUM_THREADS=1``) reproduces
the shipped file; other thread counts give slightly different floating-point results.

Run:  OMP_NUM_THREADS=1 python scripts/multitask_default_encoder.py [--out PATH]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from ssl_robust.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "finetune.toml"


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--out", default=str(ROOT / "ssl_robust" / "assets" / "vit_tiny_shapes_multitask.pt")
    )
    args = p.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        code = cli(["finetune", "--config", str(CONFIG), "--out", tmp, "--no-progress"])
        if code != 0:
            raise SystemExit(code)
        shutil.copyfile(Path(tmp) / "student.pt", args.out)
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

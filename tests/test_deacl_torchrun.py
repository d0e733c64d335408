"""``torchrun -m ssl_robust deacl``: the configured batch is the global batch; errors exit."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from _helpers_deacl import deacl_toml

from ssl_robust.encoders import create_encoder


def _torchrun(tmp_path, batch: int, port: int) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / f"deacl{batch}.toml"
    cfg.write_text(deacl_toml(tmp_path / f"run{batch}", batch_size=batch))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(port), "-m", "ssl_robust", "deacl", "--config", str(cfg),
           "--no-progress"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)


def test_two_ranks_split_the_global_batch_and_rank0_exports(tmp_path) -> None:
    proc = _torchrun(tmp_path, 8, 29531)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch=1") == 1  # only rank 0 reports and writes
    enc = create_encoder("vit_test", checkpoint_path=tmp_path / "run8" / "student.pt")
    assert enc(torch.rand(1, 3, 16, 16)).cls.shape == (1, 32)


def test_an_indivisible_global_batch_fails_cleanly_on_every_rank(tmp_path) -> None:
    proc = _torchrun(tmp_path, 7, 29533)
    assert proc.returncode != 0
    assert "data.batch_size=7 must be divisible by the number of ranks (2)" in proc.stderr

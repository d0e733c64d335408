"""Metrics follow torchmetrics' conventions: tensors, forward, state_dict, .to(), sync."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _helpers_metrics import feed, metrics, shard_data, values
from torch import Tensor

from ssl_robust import SSLRobustTypeError
from ssl_robust.metrics import Accuracy, DepthMetrics, MeanIoU, Metric

HELPERS = Path(__file__).resolve().parent / "_helpers_metrics.py"
ROOT = HELPERS.parents[1]

BATCHES = [shard_data(0, 2), shard_data(1, 2)]


def _all_metrics() -> dict[str, Metric]:  # type: ignore[type-arg]
    return metrics()  # type: ignore[return-value]


def _as_tensors(value: object) -> list[Tensor]:
    return list(value.values()) if isinstance(value, dict) else [value]  # type: ignore[list-item]


def test_compute_returns_tensors_and_a_dict_of_tensors_for_depth() -> None:
    ms = _all_metrics()
    feed(ms, BATCHES[0])
    for name, m in ms.items():
        out = m.compute()
        if name == "depth":
            assert isinstance(out, dict) and set(out) == {"rmse", "abs_rel", "delta1"}
        for t in _as_tensors(out):
            assert isinstance(t, Tensor) and t.ndim == 0 and t.dtype == torch.float64


def test_forward_returns_the_batch_value_and_accumulates() -> None:
    ms, per_batch, whole = _all_metrics(), [_all_metrics(), _all_metrics()], _all_metrics()
    feed(whole, {k: torch.cat([b[k] for b in BATCHES]) for k in BATCHES[0]})
    for i, b in enumerate(BATCHES):
        feed(per_batch[i], b)
        batch_out = {
            "acc": ms["acc"](b["logits"], b["labels"]),
            "miou": ms["miou"](b["seg_pred"], b["seg_target"]),
            "depth": ms["depth"](b["depth_pred"], b["depth_target"]),
        }
        assert {k: float(v) for k, v in values(per_batch[i]).items()} == pytest.approx(
            {k: float(v) for k, v in _flat(batch_out).items()}
        )
    # after two forwards, compute() covers both batches, as update() would
    assert values(ms) == pytest.approx(values(whole))


def _flat(out: dict[str, object]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for name, v in out.items():
        if isinstance(v, dict):
            flat.update({f"{name}.{k}": float(x) for k, x in v.items()})
        else:
            flat[name] = float(v)  # type: ignore[arg-type]
    return flat


def test_state_dict_round_trip_and_reset() -> None:
    ms = _all_metrics()
    feed(ms, BATCHES[1])
    fresh = _all_metrics()
    for name, m in ms.items():
        state = m.state_dict()
        assert set(state) == set(m._defaults) and state  # every state tensor, nothing else
        fresh[name].load_state_dict(state)
    assert values(fresh) == pytest.approx(values(ms))
    feed(fresh, BATCHES[0])  # a loaded metric keeps accumulating
    feed(ms, BATCHES[0])
    assert values(fresh) == pytest.approx(values(ms))
    for m in ms.values():
        m.reset()
    assert all(math.isnan(v) for v in values(ms).values())


def test_to_moves_the_state_and_dtype_survives() -> None:
    m = MeanIoU(3)
    m.update(BATCHES[0]["seg_pred"], BATCHES[0]["seg_target"])
    moved = m.to("meta")
    assert moved is m and m.confusion.device.type == "meta"
    assert m.confusion.dtype == torch.long
    m.reset()
    assert m.confusion.device.type == "meta"  # reset keeps the device
    depth = DepthMetrics()
    depth.update(torch.ones(1, 2, 2), torch.ones(1, 2, 2))  # the state follows the inputs
    assert depth.to("meta").images.device.type == "meta"
    halved = DepthMetrics().half().to(torch.float32)  # dtype casts leave the exact sums alone
    assert halved.rmse.dtype == torch.float64 and halved.images.dtype == torch.long


def test_higher_is_better() -> None:
    assert Accuracy.higher_is_better is True
    assert MeanIoU.higher_is_better is True
    assert DepthMetrics.higher_is_better is None
    assert DepthMetrics.higher_is_better_by_key == {
        "rmse": False,
        "abs_rel": False,
        "delta1": True,
    }


def test_sync_on_compute_must_be_a_bool() -> None:
    with pytest.raises(SSLRobustTypeError, match="sync_on_compute must be a bool"):
        Accuracy(sync_on_compute="no")  # type: ignore[arg-type]


def test_single_process_sync_is_a_snapshot_that_update_invalidates() -> None:
    m = Accuracy()
    m.update(torch.tensor([1, 0]), torch.tensor([1, 1]))
    m.sync()
    assert float(m.compute()) == 0.5
    m.update(torch.tensor([1]), torch.tensor([1]))
    assert float(m.compute()) == pytest.approx(2 / 3)


@pytest.mark.slow
def test_two_gloo_ranks_local_and_rank0_only_compute_do_not_hang(tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH")) if p
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, str(HELPERS), str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    single = _all_metrics()
    feed(single, shard_data(-1, 1))
    rank0_local = _all_metrics()
    feed(rank0_local, shard_data(0, 2))
    assert r0["local_rank0_only"] == pytest.approx(values(rank0_local))
    assert r0["sync_then_rank0_only"] == pytest.approx(values(single))
    assert r0["compute_on_all_ranks"] == pytest.approx(values(single))
    assert r1["compute_on_all_ranks"] == pytest.approx(values(single))
    assert "local_rank0_only" not in r1
    assert (r0["local_state_after_sync"], r1["local_state_after_sync"]) == (3, 7)

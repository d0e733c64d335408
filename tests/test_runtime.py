"""Process helpers: atomic writes, ranks without a group, device parsing, progress bars."""

from __future__ import annotations

import json
import os

import pytest
import torch

from ssl_robust import runtime


def test_atomic_writes_leave_no_temporary_file(tmp_path) -> None:
    runtime.atomic_write_json({"a": [1, 2]}, tmp_path / "sub" / "r.json")
    runtime.atomic_save({"w": torch.ones(2)}, tmp_path / "w.pt")
    assert json.loads((tmp_path / "sub" / "r.json").read_text()) == {"a": [1, 2]}
    assert torch.equal(torch.load(tmp_path / "w.pt", weights_only=True)["w"], torch.ones(2))
    assert sorted(os.listdir(tmp_path)) == ["sub", "w.pt"]
    plain = tmp_path / "plain"
    plain.write_text("x")  # atomic files get the mode of ordinary files (not mkstemp's 0600)
    assert (tmp_path / "w.pt").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_atomic_write_keeps_the_old_file_when_serialization_fails(tmp_path) -> None:
    path = runtime.atomic_write_json({"ok": 1}, tmp_path / "r.json")
    with pytest.raises(TypeError):
        runtime.atomic_write_json({"bad": object()}, path)
    assert json.loads(path.read_text()) == {"ok": 1}
    assert os.listdir(tmp_path) == ["r.json"]


def test_single_process_rank_and_device() -> None:
    assert runtime.rank_world() == (0, 1) and runtime.is_main()
    runtime.barrier()  # no group: nothing to wait for
    assert runtime.init_distributed("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be a torch device string"):
        runtime.parse_device("gpu0")
    with pytest.raises(ValueError, match="not supported"):
        runtime.parse_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            runtime.parse_device("cuda:1")


def test_progress_bar_disabled_is_none_and_tick_is_null_safe() -> None:
    assert runtime.progress_bar(3, "x", enabled=False) is None
    runtime.tick(None, 1, loss="1.0")

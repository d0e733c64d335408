"""The metric base: ``update`` / ``compute`` / ``reset`` with sum-reducible state."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Metric"]


class Metric:
    """Base class of the metrics (torchmetrics-style, without the dependency).

    State is a set of tensors that add up across batches and processes. ``update`` accumulates,
    ``compute`` turns the state into the result and, when a ``torch.distributed`` process group
    is initialized with more than one process, first sums the state over all ranks (the local
    state is left unchanged), and ``reset`` zeroes it.
    """

    def __init__(self) -> None:
        self._defaults: dict[str, Tensor] = {}
        self._state: dict[str, Tensor] = {}

    def add_state(self, name: str, default: Tensor) -> None:
        """Register a sum-reducible state tensor."""
        self._defaults[name] = default.clone()
        self._state[name] = default.clone()

    def reset(self) -> None:
        """Forget everything seen so far."""
        for name, default in self._defaults.items():
            self._state[name] = default.clone()

    def _to(self, device: torch.device) -> None:
        for name, value in self._state.items():
            if value.device != device:
                self._state[name] = value.to(device)

    def synced_state(self) -> dict[str, Tensor]:
        """The state summed over all processes (a copy; local state unchanged)."""
        state = {k: v.clone() for k, v in self._state.items()}
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for value in state.values():
                dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return state

    def update(self, pred: Tensor, target: Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

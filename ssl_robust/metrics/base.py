"""The metric base, on torchmetrics' conventions without depending on it.

``update`` accumulates, ``compute`` returns tensors, ``forward`` returns the value of one batch
and accumulates it, ``reset`` forgets. The state is a set of registered buffers that add up
across batches and processes, so ``.to(device)``, ``state_dict`` and ``load_state_dict`` work
as on any ``nn.Module``.

Distributed semantics (``torch.distributed``, more than one process):

- ``sync_on_compute=True`` (default): ``compute()`` sums the state over all ranks first. That
  all-reduce is a collective: either every rank calls ``compute()``, or every rank calls
  :meth:`Metric.sync` and then any rank (rank 0 alone, say) calls ``compute()``, which uses the
  synced snapshot and talks to nobody.
- ``sync_on_compute=False``: ``compute()`` is local and safe to call on one rank.

The local state is never overwritten by a sync: updates after it keep counting correctly.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

import torch.distributed as dist
from torch import Tensor, nn

from .. import _checks

__all__ = ["Metric"]

ResultT = TypeVar("ResultT")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class Metric(nn.Module, Generic[ResultT]):
    """Base class of the metrics: sum-reducible tensor state, torchmetrics-style API.

    Subclasses register their state with :meth:`add_state` (int64 or float64 tensors, which
    both gloo and NCCL all-reduce), accumulate it in ``update`` and turn a state dict into the
    result in ``_compute``.

    Args:
        sync_on_compute: sum the state over all ``torch.distributed`` ranks in ``compute()``
            (a collective: see the module docstring). ``False`` computes on the local state.

    Attributes:
        higher_is_better: whether a larger value is better (``None`` when the result mixes
            directions, as :class:`DepthMetrics` does).
    """

    higher_is_better: ClassVar[bool | None] = None
    is_differentiable: ClassVar[bool] = False

    def __init__(self, *, sync_on_compute: bool = True) -> None:
        super().__init__()
        if not isinstance(sync_on_compute, bool):
            raise _checks.SSLRobustTypeError(
                f"sync_on_compute must be a bool; got {sync_on_compute!r}"
            )
        self.sync_on_compute = sync_on_compute
        self._defaults: dict[str, Tensor] = {}
        self._synced: dict[str, Tensor] | None = None

    def add_state(self, name: str, default: Tensor) -> None:
        """Register a sum-reducible state tensor (a persistent buffer)."""
        self._defaults[name] = default.detach().clone()
        self.register_buffer(name, default.detach().clone(), persistent=True)

    def _state(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in self._defaults}

    def accumulate(self, name: str, value: Tensor) -> None:
        """Add ``value`` to the state ``name`` (moving the state to value's device if needed)."""
        current: Tensor = getattr(self, name)
        if current.device != value.device:
            current = current.to(value.device)
        setattr(self, name, current + value.to(current.dtype))
        self._synced = None

    def reset(self) -> None:
        """Forget everything seen so far (the state keeps its device)."""
        for name, default in self._defaults.items():
            setattr(self, name, default.to(getattr(self, name).device))
        self._synced = None

    def sync(self) -> None:
        """Sum the state over all ranks into a snapshot used by the next ``compute()``.

        A collective: every rank calls it. Afterwards ``compute()`` may run on any subset of
        ranks without communicating, until the next ``update`` or ``reset``. Without an
        initialized process group (or with one process) it only snapshots the local state.
        """
        self._sync()

    def _sync(self) -> dict[str, Tensor]:
        state = {k: v.clone() for k, v in self._state().items()}
        if _distributed():
            for value in state.values():
                dist.all_reduce(value, op=dist.ReduceOp.SUM)
        self._synced = state
        return state

    def synced_state(self) -> dict[str, Tensor]:
        """The state ``compute()`` uses: summed over ranks or local (a copy).

        Local when ``sync_on_compute=False`` or without a multi-process group; the snapshot of
        the last :meth:`sync` when it is still current; otherwise an all-reduce (collective).
        """
        if not self.sync_on_compute or not _distributed():
            return {k: v.clone() for k, v in self._state().items()}
        synced = self._sync() if self._synced is None else self._synced
        return {k: v.clone() for k, v in synced.items()}

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Accumulate one batch."""
        raise NotImplementedError

    def _compute(self, state: dict[str, Tensor]) -> ResultT:
        raise NotImplementedError

    def compute(self) -> ResultT:
        """The result over everything seen since the last ``reset`` (tensors)."""
        return self._compute(self.synced_state())

    def forward(self, pred: Tensor, target: Tensor) -> ResultT:
        """Accumulate one batch and return the metric of that batch alone (never synced)."""
        saved = {k: v.clone() for k, v in self._state().items()}
        self.reset()
        self.update(pred, target)
        batch = self._compute({k: v.clone() for k, v in self._state().items()})
        for name, value in saved.items():
            self.accumulate(name, value.to(getattr(self, name).device))
        return batch

    def __call__(self, pred: Tensor, target: Tensor) -> ResultT:  # typed call for mypy users
        out: ResultT = super().__call__(pred, target)
        return out

    def _apply(self, fn: Any, recurse: bool = True) -> Metric[ResultT]:
        """``.to()``, ``.cuda()``, ``.half()``: the state moves but keeps its dtype (exact sums)."""
        dtypes = {name: getattr(self, name).dtype for name in self._defaults}
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        for name, dtype in dtypes.items():
            value = getattr(self, name)
            if value.dtype != dtype:
                setattr(self, name, value.to(dtype))
        return self

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._synced = None

"""What every part of a benchmark run is given: the spec, the store, the device, the options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.base import SampleDataset
from .data import InMemory, open_dataset
from .spec import BenchSpec, DatasetSpec
from .store import ResultsStore

__all__ = ["MEMORY_BYTES", "RunContext"]

#: Largest training split (in tensor bytes) the runner keeps in memory once loaded.
MEMORY_BYTES = 256 * 1024**2


@dataclass
class RunContext:
    """The inputs shared by the parts of one run (no behaviour of its own).

    Attributes:
        spec: the benchmark.
        store: the results store (``store.out`` is the output directory).
        device: this rank's device.
        progress: show progress bars.
    """

    spec: BenchSpec
    store: ResultsStore
    device: torch.device
    progress: bool
    datasets: dict[tuple[str, str, int | None, int], SampleDataset] = field(default_factory=dict)

    def training_data(
        self, ds: DatasetSpec, split: str, *, subset: int | None, seed: int
    ) -> SampleDataset:
        """A training split of a spec dataset, opened once per run and, when it fits in
        ``MEMORY_BYTES``, held in memory once loaded (:class:`~ssl_robust.bench.data.InMemory`)
        for every epoch, head and encoder. (Evaluation data is streamed, never held.)"""
        key = (ds.name, split, subset, seed)
        if key not in self.datasets:
            data = open_dataset(ds, split, subset=subset, seed=seed)
            first: list[torch.Tensor] = list(data[0].values()) if len(data) else []  # type: ignore[arg-type]
            size = sum(t.numel() * t.element_size() for t in first)
            self.datasets[key] = InMemory(data) if size * len(data) <= MEMORY_BYTES else data
        return self.datasets[key]

    def attack_options(self, eps: float | None = None) -> dict[str, Any]:
        """The spec's attack settings as Attack keywords (``eps`` overridden if given)."""
        a = self.spec.attack
        return dict(
            eps=a.eps if eps is None else eps,
            step_size=a.step_size,
            steps=a.steps,
            random_start=a.random_start,
        )

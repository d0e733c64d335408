"""What every part of a benchmark run is given: the spec, the store, the device, the options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .spec import BenchSpec
from .store import ResultsStore

__all__ = ["RunContext"]


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

    def attack_options(self, eps: float | None = None) -> dict[str, Any]:
        """The spec's attack settings as Attack keywords (``eps`` overridden if given)."""
        a = self.spec.attack
        return dict(
            eps=a.eps if eps is None else eps,
            step_size=a.step_size,
            steps=a.steps,
            random_start=a.random_start,
        )

"""Process plumbing shared by the whole package: atomic writes, ranks, progress bars.

One helper each, used by the benchmark, DeACL and the evaluation loop:

- :func:`atomic_save` / :func:`atomic_write_json`: write to a unique temporary file in the
  target folder, flush it to disk, then ``os.replace`` it, so a reader (or a crash) never sees
  a half-written file and two processes never share a temporary name.
- :func:`rank_world`, :func:`is_main`, :func:`barrier`, :func:`init_distributed`: the rank and
  world size under ``torch.distributed`` (0 and 1 without a process group), and setting the
  group up from ``torchrun``'s environment (gloo on CPU, nccl on CUDA, one GPU per rank).
- :func:`progress_bar`: a tqdm bar on rank 0 when asked for and tqdm is installed, else None.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = atomic_write_json({"a": 1}, Path(d) / "x.json")
    ...     path.read_text()
    '{\\n "a": 1\\n}'
    >>> rank_world()
    (0, 1)
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch
import torch.distributed as dist

from . import _checks

__all__ = [
    "atomic_save",
    "atomic_write_json",
    "barrier",
    "broadcast_module",
    "global_batch_loader",
    "init_distributed",
    "is_main",
    "parse_device",
    "progress_bar",
    "rank_world",
    "shutdown_distributed",
    "tick",
]


@contextlib.contextmanager
def _atomic(path: Path, mode: str) -> Iterator[IO[Any]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(obj: object, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (unique temporary file, then rename)."""
    path = Path(path)
    with _atomic(path, "wb") as f:
        torch.save(obj, f)
    return path


def atomic_write_json(obj: object, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (non-JSON numbers as floats)."""
    path = Path(path)
    with _atomic(path, "w") as f:
        f.write(json.dumps(obj, indent=1, default=float))
    return path


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def global_batch_loader(
    dataset: torch.utils.data.Dataset[Any], *, global_batch: int, seed: int, name: str
) -> torch.utils.data.DataLoader[Any]:
    """A training DataLoader whose batches, over all ranks together, hold ``global_batch``.

    One process: shuffled by a generator seeded with ``seed``. Under torch.distributed: a
    ``DistributedSampler`` (seeded) gives each rank its share, ``global_batch // world`` per
    rank. Incomplete last batches are dropped.

    Raises:
        SSLRobustValueError: ``global_batch`` not divisible by the number of ranks (``name``
            is the option to fix).

    Example:
        >>> import torch
        >>> data = torch.utils.data.TensorDataset(torch.arange(10.0))
        >>> loader = global_batch_loader(data, global_batch=4, seed=0, name="batch_size")
        >>> [len(b[0]) for b in loader]
        [4, 4]
    """
    _, world = rank_world()
    if global_batch % world:
        raise _checks.SSLRobustValueError(
            f"{name}={global_batch} must be divisible by the number of ranks ({world}): it is "
            "the global batch, split evenly"
        )
    sampler: torch.utils.data.Sampler[int] | None = (
        torch.utils.data.distributed.DistributedSampler(dataset, seed=seed) if world > 1 else None
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=global_batch // world,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )


def is_main() -> bool:
    """True on rank 0 (and in a single process): the process that writes files."""
    return rank_world()[0] == 0


def barrier() -> None:
    """``dist.barrier()`` when more than one process runs; nothing otherwise."""
    if rank_world()[1] > 1:
        dist.barrier()


def parse_device(device: str | torch.device) -> torch.device:
    """A checked :class:`torch.device`: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...

    Raises:
        SSLRobustValueError: not a device string, or a device this machine does not have
            (CUDA index beyond the GPUs present, MPS unavailable).

    Example:
        >>> parse_device("cpu")
        device(type='cpu')
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise _checks.SSLRobustValueError(
            f"device must be a torch device string such as 'cpu', 'cuda', 'cuda:1' or 'mps'; "
            f"got {device!r}"
        ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise _checks.SSLRobustValueError(f"device {str(dev)!r}: torch sees no CUDA device")
        if dev.index is not None and dev.index >= count:
            raise _checks.SSLRobustValueError(
                f"device {str(dev)!r}: this machine has {count} CUDA device(s) "
                f"(cuda:0 to cuda:{count - 1})"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise _checks.SSLRobustValueError(f"device {str(dev)!r}: MPS is not available")
    elif dev.type != "cpu":
        raise _checks.SSLRobustValueError(
            f"device {str(dev)!r} is not supported; use 'cpu', 'cuda[:N]' or 'mps'"
        )
    return dev


def init_distributed(device: str | torch.device = "cpu") -> torch.device:
    """Join the process group ``torchrun`` describes, and return this rank's device.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) and without an initialized
    group, initializes one: ``gloo`` for CPU runs, ``nccl`` for CUDA runs, where each rank
    takes the GPU ``LOCAL_RANK`` (``cuda:N`` in ``device`` is then overridden). In a plain
    process nothing is initialized and ``device`` is returned checked.

    Example:
        >>> init_distributed("cpu")
        device(type='cpu')
    """
    dev = parse_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if world > 1 and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        _OWN_GROUP[0] = True
    return dev


_OWN_GROUP = [False]  # whether init_distributed created the default process group


def shutdown_distributed(*, ok: bool = True) -> None:
    """Tear down the process group :func:`init_distributed` created (nothing otherwise).

    With ``ok`` the ranks first meet at a barrier, so none exits while another still
    communicates; after an error there is no barrier (the other ranks may be gone). Leaving a
    gloo group to the interpreter's exit can abort the process ("terminate called without an
    active exception"), which torchrun reports as a failed rank.
    """
    if not _OWN_GROUP[0] or not dist.is_initialized():
        return
    try:
        if ok:
            dist.barrier()
    finally:
        dist.destroy_process_group()
        _OWN_GROUP[0] = False


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Make every parameter and buffer of ``module`` equal to rank ``src``'s (no-op alone)."""
    if rank_world()[1] <= 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=src)


def progress_bar(total: int | None, desc: str, *, enabled: bool = True, unit: str = "it") -> Any:
    """A tqdm bar (rank 0 only) when ``enabled`` and tqdm is installed; None otherwise.

    Callers use it as ``bar.update(n)`` / ``bar.close()`` behind ``if bar is not None``; see
    :func:`tick` for the null-safe update.
    """
    if not enabled or not is_main():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional extra
        return None
    return tqdm(total=total, desc=desc, unit=unit, leave=False)


def tick(bar: Any, n: int = 1, **postfix: object) -> None:
    """Advance ``bar`` (from :func:`progress_bar`) by ``n``; nothing when it is None."""
    if bar is None:
        return
    bar.update(n)
    if postfix:
        bar.set_postfix(**postfix)

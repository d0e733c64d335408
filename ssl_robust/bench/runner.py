"""The benchmark runner: heads, attacks and metrics for every encoder × dataset × task.

For each encoder (standard, or DeACL fine-tuned from another entry) and each dataset it trains
(and caches) one linear head per task, then evaluates on one fixed evaluation subset per
dataset, identical for every encoder and attack: clean, under EmbedAttack (CLS tokens for
classification, patch tokens for dense tasks) and under the task attack (PGD / SegPGD /
DepthPGD). EmbedAttack examples depend only on the encoder and the images, so they are computed
once per encoder × dataset × token type and reused by every head on that data. Every finished
cell is written to ``results.json`` at once, and a rerun skips the cells already there.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import __version__, _checks
from ..adaptors import LinearClassifier, LinearDepther, LinearSegmenter, TaskModel, fit
from ..attacks import PGD, Attack, DepthPGD, EmbedAttack, SegPGD
from ..data import create_dataset, eval_transform
from ..data.base import DatasetInfo, SampleDataset
from ..encoders import Encoder, create_encoder
from ..metrics import Accuracy, DepthMetrics, MeanIoU
from .spec import BenchSpec, DatasetSpec, EncoderSpecEntry, HeadSpec

__all__ = ["TASK_ATTACK", "TASK_METRIC", "run_benchmark"]

logger = logging.getLogger("ssl_robust.bench")

#: The metric reported per task (results.json "metric").
TASK_METRIC = {"classification": "accuracy", "segmentation": "miou", "depth": "rmse"}
#: The task attack per task.
TASK_ATTACK = {"classification": "PGD", "segmentation": "SegPGD", "depth": "DepthPGD"}
_TARGET_KEY = {"classification": "label", "segmentation": "mask", "depth": "depth"}
_TOKENS = {"classification": "cls", "segmentation": "patch", "depth": "patch"}


# --------------------------------------------------------------------------- helpers
def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if _rank_world()[1] > 1:
        dist.barrier()


def _atomic_write_json(obj: object, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


def _atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled or _rank_world()[0] != 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ModuleNotFoundError:
        return None
    return tqdm(total=total, desc=desc, leave=False)


@dataclass
class _EvalData:
    """An evaluation subset held in memory (this rank's shard)."""

    images: Tensor
    targets: dict[str, Tensor]
    info: DatasetInfo


def _open(ds: DatasetSpec, split: str, *, subset: int | None, seed: int) -> SampleDataset:
    opts = dict(ds.options)
    transform = None
    if ds.dataset == "shapes":
        opts.setdefault("image_size", ds.image_size)
    else:
        transform = eval_transform(ds.image_size)
    return create_dataset(
        ds.dataset, ds.root, split, transform=transform, subset=subset, seed=seed, **opts
    )


def _info(dataset: SampleDataset) -> DatasetInfo:
    info = getattr(dataset, "info", None)
    while info is None and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
        info = getattr(dataset, "info", None)
    if not isinstance(info, DatasetInfo):
        raise _checks.SSLRobustValueError("the dataset does not describe itself (no .info)")
    return info


def _load_tensors(dataset: SampleDataset, indices: list[int], keys: tuple[str, ...]) -> dict[str, Tensor]:
    samples = [dataset[i] for i in indices]
    out = {"image": torch.stack([s["image"] for s in samples]) if samples else torch.empty(0)}
    for key in keys:
        out[key] = torch.stack([s[key] for s in samples])  # type: ignore[literal-required]
    return out


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class _PairDataset(torch.utils.data.Dataset[tuple[Tensor, Tensor]]):
    """(image, target) pairs of one task, for head training."""

    def __init__(self, dataset: SampleDataset, key: str) -> None:
        self.dataset, self.key = dataset, key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        s = self.dataset[i]
        return s["image"], s[self.key]  # type: ignore[literal-required]


# --------------------------------------------------------------------------- the runner
class _Runner:
    def __init__(self, spec: BenchSpec, out: Path, *, progress: bool) -> None:
        self.spec = spec
        self.out = out
        self.progress = progress
        self.rank, self.world = _rank_world()
        self.device = torch.device(spec.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise _checks.SSLRobustValueError("device='cuda' but torch sees no CUDA device")
        self.results: dict[str, Any] = {"rows": [], "curves": [], "deacl_history": [], "galleries": []}
        self.timings: dict[str, Any] = {"embed_attacks": []}
        self.encoders: dict[str, Encoder] = {}
        self.eval_data: dict[str, _EvalData] = {}

    # ---------------------------------------------------------------- persistence
    def _results_path(self) -> Path:
        return self.out / "results.json"

    def _save(self) -> None:
        if self.rank == 0:
            _atomic_write_json(self.results, self._results_path())

    def prepare_out(self, force: bool) -> None:
        path = self._results_path()
        fingerprint = self.spec.fingerprint()
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError:
                old = {}
            if old.get("fingerprint") != fingerprint and not force:
                raise _checks.SSLRobustValueError(
                    f"{self.out} holds results of a different benchmark config (fingerprint "
                    f"{old.get('fingerprint')} vs {fingerprint}); pass force=True (--force) to "
                    "discard them, or choose another output directory"
                )
            if old.get("fingerprint") == fingerprint:
                for key in self.results:
                    self.results[key] = list(old.get(key, []))
            elif self.rank == 0:
                for sub in ("heads", "encoders", "deacl", "galleries", "figures"):
                    shutil.rmtree(self.out / sub, ignore_errors=True)
        _barrier()
        self.results["fingerprint"] = fingerprint
        self.results["config"] = self.spec.to_dict()
        self.results["versions"] = {
            "ssl_robust": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        if self.rank == 0:
            for sub in ("heads", "encoders", "galleries"):
                (self.out / sub).mkdir(parents=True, exist_ok=True)
        _barrier()

    def _done(self, task: str, dataset: str, encoder: str) -> bool:
        return any(
            r["task"] == task and r["dataset"] == dataset and r["encoder"] == encoder
            for r in self.results["rows"]
        )

    # ---------------------------------------------------------------- data
    def data(self, ds: DatasetSpec) -> _EvalData:
        if ds.name not in self.eval_data:
            dataset = _open(ds, ds.eval_split, subset=self.spec.eval.subset, seed=self.spec.eval.seed)
            info = _info(dataset)
            missing = [t for t in ds.tasks if t not in info.tasks]
            if missing:
                raise _checks.SSLRobustValueError(
                    f"dataset {ds.name!r} ({ds.dataset}) has no {missing} targets; it supports "
                    f"{list(info.tasks)}"
                )
            shard = list(range(len(dataset)))[self.rank :: self.world]
            keys = tuple(_TARGET_KEY[t] for t in ds.tasks)
            tensors = _load_tensors(dataset, shard, keys)
            images = tensors.pop("image")
            self.eval_data[ds.name] = _EvalData(images, tensors, info)
        return self.eval_data[ds.name]

    # ---------------------------------------------------------------- encoders
    def encoder(self, entry: EncoderSpecEntry) -> Encoder:
        if entry.name in self.encoders:
            return self.encoders[entry.name]
        if entry.deacl is None:
            enc = create_encoder(
                entry.registry, weights=entry.weights, pretrained=entry.pretrained, **entry.options
            )
        else:
            enc = self._deacl_encoder(entry)
        enc = enc.to(self.device).eval()
        enc.requires_grad_(False)
        self.encoders[entry.name] = enc
        return enc

    def _entry(self, name: str) -> EncoderSpecEntry:
        return next(e for e in self.spec.encoders if e.name == name)

    def _deacl_encoder(self, entry: EncoderSpecEntry) -> Encoder:
        from ..defenses import DeACLConfig, DeACLTrainer

        assert entry.deacl is not None
        d = entry.deacl
        base = self.encoder(self._entry(d.base))
        exported = self.out / "encoders" / f"{entry.name}.pt"
        student = copy.deepcopy(base).cpu().requires_grad_(True)
        if d.checkpoint is not None:
            state = torch.load(d.checkpoint, map_location="cpu", weights_only=True)
            student.load_state_dict(state.get("student", state))
            return student
        if exported.exists():
            student.load_state_dict(torch.load(exported, map_location="cpu", weights_only=True))
            return student
        ds = next(x for x in self.spec.datasets if x.name == d.dataset)
        train = _open(ds, ds.train_split, subset=d.train_size, seed=self.spec.seed)
        images = _ImagesOnly(train)
        sampler = (
            torch.utils.data.distributed.DistributedSampler(images, seed=self.spec.seed)
            if self.world > 1
            else None
        )
        loader = torch.utils.data.DataLoader(
            images,
            batch_size=d.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            drop_last=True,
            generator=torch.Generator().manual_seed(self.spec.seed),
        )
        config = DeACLConfig(**{"eps": self.spec.attack.eps / 2, **dict(d.config)})
        trainer = DeACLTrainer(student.to(self.device), config=config)
        history = _DeACLHistory(self, entry, base, ds)
        log = trainer.fit(
            loader,
            checkpoint_dir=self.out / "deacl" / entry.name,
            callbacks=[history],
            progress=self.progress,
        )
        for rec in log:
            for h in self.results["deacl_history"]:
                if h["encoder"] == entry.name and h["epoch"] == rec["epoch"]:
                    h.update({k: float(v) for k, v in rec.items() if k != "epoch"})
        if self.rank == 0:
            trainer.export_student(exported)
        self._save()
        return trainer.student

    # ---------------------------------------------------------------- heads
    def head(self, enc_entry: EncoderSpecEntry, ds: DatasetSpec, task: str, info: DatasetInfo) -> TaskModel:
        enc = self.encoder(enc_entry)
        dim = enc.embed_dim
        head: nn.Module
        with torch.random.fork_rng(devices=[]):  # seeded init, the caller's RNG untouched
            torch.manual_seed(self.spec.seed)
            if task == "classification":
                head = LinearClassifier(dim, info.num_classes)
            elif task == "segmentation":
                head = LinearSegmenter(dim, info.seg_classes)
            else:
                head = LinearDepther(dim, min_depth=info.min_depth, max_depth=info.max_depth)
        model = TaskModel(enc, head).to(self.device)  # type: ignore[arg-type]
        path = self.out / "heads" / f"{enc_entry.name}__{ds.name}__{task}.pt"
        if path.exists():
            head.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
            return model.eval()
        hs = self.spec.heads.get(task, HeadSpec())
        train = _open(ds, ds.train_split, subset=hs.train_size, seed=self.spec.seed)
        loader = torch.utils.data.DataLoader(
            _PairDataset(train, _TARGET_KEY[task]),
            batch_size=hs.batch_size or _preset_batch(task),
            shuffle=True,
            generator=torch.Generator().manual_seed(self.spec.seed),
        )
        fit(
            model,
            _DeviceLoader(loader, self.device),
            preset=task,  # type: ignore[arg-type]
            epochs=hs.epochs,
            lr=hs.lr,
            weight_decay=hs.weight_decay,
            ignore_index=info.ignore_index,
            generator=torch.Generator().manual_seed(self.spec.seed),
            progress=self.progress,
        )
        if self.rank == 0:
            _atomic_save(head.state_dict(), path)
        return model.eval()

    # ---------------------------------------------------------------- attacks & metrics
    def _attack_opts(self, eps: float | None = None) -> dict[str, Any]:
        a = self.spec.attack
        eps = a.eps if eps is None else eps
        return dict(
            eps=eps,
            step_size=a.step_size,
            steps=a.steps,
            random_start=a.random_start,
            generator=torch.Generator().manual_seed(self.spec.seed),
        )

    def task_attack(self, task: str, model: TaskModel, info: DatasetInfo, eps: float | None = None) -> Attack:
        opts = self._attack_opts(eps)
        if task == "classification":
            return PGD(model, early_stop=True, **opts)
        if task == "segmentation":
            return SegPGD(
                model,
                ignore_index=info.ignore_index,
                success_threshold=self.spec.attack.segpgd_threshold,
                early_stop=True,
                **opts,
            )
        return DepthPGD(model, min_depth=info.min_depth, max_depth=info.max_depth, **opts)

    def run_attack(self, attack: Attack, images: Tensor, target: Tensor | None, desc: str) -> Tensor:
        bs = self.spec.eval.batch_size
        bar = _progress(len(images), desc, self.progress)
        out = []
        for sl in _batches(len(images), bs):
            x = images[sl].to(self.device)
            t = None if target is None else target[sl].to(self.device)
            out.append(attack(x, t).cpu())
            if bar is not None:
                bar.update(sl.stop - sl.start)
        if bar is not None:
            bar.close()
        return torch.cat(out) if out else images.clone()

    def predict(self, model: TaskModel, images: Tensor) -> Tensor:
        preds = []
        with torch.no_grad():
            for sl in _batches(len(images), self.spec.eval.batch_size):
                preds.append(model(images[sl].to(self.device)).float().cpu())
        return torch.cat(preds)

    def metric(self, task: str, info: DatasetInfo, pred: Tensor, target: Tensor) -> float:
        if task == "classification":
            m: Any = Accuracy()
        elif task == "segmentation":
            m = MeanIoU(info.seg_classes, ignore_index=info.ignore_index)
        else:
            m = DepthMetrics(min_depth=info.min_depth, max_depth=info.max_depth)
        m.update(pred, target)
        value = m.compute()
        return float(value["rmse"] if task == "depth" else value)

    # ---------------------------------------------------------------- one encoder × dataset
    def evaluate(self, entry: EncoderSpecEntry, ds: DatasetSpec) -> None:
        todo = [t for t in ds.tasks if not self._done(t, ds.name, entry.name)]
        if not todo:
            logger.info("skip %s × %s (done)", entry.name, ds.name)
            return
        data = self.data(ds)
        enc = self.encoder(entry)
        embed_adv: dict[str, Tensor] = {}
        for task in todo:
            tokens = _TOKENS[task]
            if tokens not in embed_adv:
                start = time.perf_counter()
                attack = EmbedAttack(enc, tokens=tokens, **self._attack_opts())  # type: ignore[arg-type]
                embed_adv[tokens] = self.run_attack(
                    attack, data.images, None, f"{entry.name}/{ds.name}/EmbedAttack[{tokens}]"
                )
                self.timings["embed_attacks"].append(
                    {
                        "encoder": entry.name,
                        "dataset": ds.name,
                        "tokens": tokens,
                        "seconds": time.perf_counter() - start,
                        "heads": sum(_TOKENS[t] == tokens for t in todo),
                    }
                )
            model = self.head(entry, ds, task, data.info)
            target = data.targets[_TARGET_KEY[task]]
            attack = self.task_attack(task, model, data.info)
            task_adv = self.run_attack(
                attack, data.images, target, f"{entry.name}/{ds.name}/{TASK_ATTACK[task]}"
            )
            preds = {
                "clean": self.predict(model, data.images),
                "embed": self.predict(model, embed_adv[tokens]),
                "task": self.predict(model, task_adv),
            }
            row = {
                "task": task,
                "dataset": ds.name,
                "encoder": entry.name,
                "encoder_type": entry.encoder_type,
                "metric": TASK_METRIC[task],
                "clean": self.metric(task, data.info, preds["clean"], target),
                "embed_attack": self.metric(task, data.info, preds["embed"], target),
                "task_attack": self.metric(task, data.info, preds["task"], target),
            }
            logger.info(
                "%s %s %s: clean %.3f, EmbedAttack %.3f, %s %.3f",
                entry.name, ds.name, task, row["clean"], row["embed_attack"],
                TASK_ATTACK[task], row["task_attack"],
            )
            self._curves(entry, ds, task, model, data, embed_adv[tokens], task_adv, preds)
            self._gallery(entry, ds, task, data, embed_adv[tokens], task_adv, preds)
            self.results["rows"].append(row)
            self._save()

    def _curves(
        self, entry: EncoderSpecEntry, ds: DatasetSpec, task: str, model: TaskModel,
        data: _EvalData, embed_adv: Tensor, task_adv: Tensor, preds: dict[str, Tensor],
    ) -> None:
        a = self.spec.attack
        if not a.curve_eps:
            return
        n = min(a.curve_subset, len(data.images))
        images, target = data.images[:n], data.targets[_TARGET_KEY[task]][:n]
        clean = self.metric(task, data.info, preds["clean"][:n], target)
        main = {
            "embed_attack": self.metric(task, data.info, preds["embed"][:n], target),
            "task_attack": self.metric(task, data.info, preds["task"][:n], target),
        }
        eps_list = sorted(e for e in a.curve_eps if e != a.eps)
        for kind in ("embed_attack", "task_attack"):
            values = []
            for eps in eps_list:
                if kind == "embed_attack":
                    atk: Attack = EmbedAttack(model.encoder, tokens=_TOKENS[task], **self._attack_opts(eps))  # type: ignore[arg-type]
                    adv = self.run_attack(atk, images, None, f"curve EmbedAttack ε={eps * 255:.0f}/255")
                else:
                    atk = self.task_attack(task, model, data.info, eps)
                    adv = self.run_attack(atk, images, target, f"curve {TASK_ATTACK[task]} ε={eps * 255:.0f}/255")
                values.append(self.metric(task, data.info, self.predict(model, adv), target))
            self.results["curves"].append(
                {
                    "task": task, "dataset": ds.name, "encoder": entry.name,
                    "encoder_type": entry.encoder_type, "metric": TASK_METRIC[task],
                    "attack": kind, "eps": [0.0, *eps_list, a.eps],
                    "values": [clean, *values, main[kind]],
                }
            )

    def _gallery(
        self, entry: EncoderSpecEntry, ds: DatasetSpec, task: str, data: _EvalData,
        embed_adv: Tensor, task_adv: Tensor, preds: dict[str, Tensor],
    ) -> None:
        n = min(self.spec.eval.gallery, len(data.images))
        if n == 0 or self.rank != 0:
            return

        def labels(p: Tensor) -> Tensor:
            if task == "depth":
                return p[:n].reshape(n, *p.shape[-2:])
            return p[:n].argmax(1)

        rel = Path("galleries") / f"{ds.name}__{task}__{entry.name}.pt"
        _atomic_save(
            {
                "images": data.images[:n], "embed_adv": embed_adv[:n], "task_adv": task_adv[:n],
                "target": data.targets[_TARGET_KEY[task]][:n],
                "pred_clean": labels(preds["clean"]), "pred_embed": labels(preds["embed"]),
                "pred_task": labels(preds["task"]),
            },
            self.out / rel,
        )
        self.results["galleries"].append(
            {"task": task, "dataset": ds.name, "encoder": entry.name,
             "encoder_type": entry.encoder_type, "file": str(rel)}
        )


def _preset_batch(task: str) -> int:
    from ..adaptors.training import PRESETS

    return PRESETS[task].batch_size


class _ImagesOnly(torch.utils.data.Dataset[Tensor]):
    def __init__(self, dataset: SampleDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Tensor:
        return self.dataset[i]["image"]


class _DeviceLoader:
    """Re-iterable loader that moves (images, target) batches to a device."""

    def __init__(self, loader: torch.utils.data.DataLoader[Any], device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self.loader:
            yield x.to(self.device), y.to(self.device)

    def __len__(self) -> int:
        return len(self.loader)


class _DeACLHistory:
    """Per-epoch robustness of the student during DeACL (the paper's Fig. 2)."""

    def __init__(self, runner: _Runner, entry: EncoderSpecEntry, teacher: Encoder, ds: DatasetSpec) -> None:
        self.runner, self.entry, self.teacher, self.ds = runner, entry, teacher, ds
        data = runner.data(ds)
        n = min(runner.spec.attack.curve_subset, len(data.images))
        self.images = data.images[:n]
        self.labels = data.targets.get("label")
        self.labels = None if self.labels is None else self.labels[:n]
        self.train: tuple[Tensor, Tensor] | None = None
        if self.labels is not None:
            train = _open(ds, ds.train_split, subset=512, seed=runner.spec.seed + 1)
            t = _load_tensors(train, list(range(len(train))), ("label",))
            self.train = (t["image"], t["label"])

    def __call__(self, epoch: int, student: nn.Module) -> None:
        r = self.runner
        enc = student.module if hasattr(student, "module") else student
        enc = enc.eval()
        x = self.images.to(r.device)
        with torch.no_grad():
            clean = enc(x).cls
            teach = self.teacher(x).cls
        attack = EmbedAttack(enc, distance="cosine", **r._attack_opts())
        adv = r.run_attack(attack, self.images, None, f"DeACL epoch {epoch} EmbedAttack")
        with torch.no_grad():
            adv_emb = enc(adv.to(r.device)).cls
        rec: dict[str, Any] = {
            "encoder": self.entry.name,
            "epoch": epoch,
            "clean_alignment": float(torch.cosine_similarity(clean, teach, dim=1).mean()),
            "embed_cosine": float(torch.cosine_similarity(adv_emb, clean, dim=1).mean()),
        }
        if self.train is not None and self.labels is not None:
            probe = _quick_probe(enc, *self.train, r.device)
            with torch.no_grad():
                rec["clean_accuracy"] = float((probe(clean).argmax(1).cpu() == self.labels).float().mean())
                rec["embed_accuracy"] = float((probe(adv_emb).argmax(1).cpu() == self.labels).float().mean())
        r.results["deacl_history"] = [
            h for h in r.results["deacl_history"]
            if not (h["encoder"] == self.entry.name and h["epoch"] == epoch)
        ] + [rec]
        r._save()


def _quick_probe(enc: nn.Module, images: Tensor, labels: Tensor, device: torch.device) -> Callable[[Tensor], Tensor]:
    """A linear probe fitted on frozen CLS features (full batch Adam), for DeACL curves."""
    with torch.no_grad():
        feats = torch.cat([enc(images[sl].to(device)).cls for sl in _batches(len(images), 128)])
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    lin = nn.Linear(feats.shape[1], int(labels.max()) + 1).to(device)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2)
    y = labels.to(device)
    with torch.enable_grad():
        for _ in range(200):
            opt.zero_grad()
            nn.functional.cross_entropy(lin((feats - mean) / std), y).backward()
            opt.step()
    return lambda f: lin((f - mean) / std)


def run_benchmark(
    spec: BenchSpec,
    *,
    out: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    render: bool = True,
) -> dict[str, Any]:
    """Run the benchmark described by ``spec`` and write its outputs.

    Args:
        spec: the benchmark (see :func:`~ssl_robust.bench.load_spec`,
            :func:`~ssl_robust.bench.default_spec`).
        out: output directory (default ``spec.out``).
        force: discard results of a different config found in ``out``.
        progress: tqdm bars (when tqdm is installed).
        render: write ``tables.md``, ``results.csv`` and the figures when done.

    Returns:
        The content of ``results.json``.

    Raises:
        SSLRobustValueError: ``out`` holds results of another config (without ``force``), a
            dataset lacking a task's targets, unknown names.
        FileNotFoundError: a dataset root or weights file is missing.
    """
    out_dir = Path(out if out is not None else spec.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    runner = _Runner(spec, out_dir, progress=progress)
    runner.prepare_out(force)
    start = time.perf_counter()
    for entry in spec.encoders:
        for ds in spec.datasets:
            runner.evaluate(entry, ds)
    saved = sum(e["seconds"] * (e["heads"] - 1) for e in runner.timings["embed_attacks"])
    runner.timings.update(
        total_seconds=time.perf_counter() - start,
        embed_attack_seconds=sum(e["seconds"] for e in runner.timings["embed_attacks"]),
        embed_attack_saved_seconds=saved,
    )
    runner.results.setdefault("timings", {})
    runner.results["timings"] = runner.timings
    runner._save()
    _barrier()
    if render and runner.rank == 0:
        from .report import render_report

        with contextlib.suppress(ModuleNotFoundError):
            render_report(out_dir)
    return runner.results

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
import json
import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .. import __version__, _checks
from ..adaptors import LinearClassifier, LinearDepther, LinearSegmenter, TaskModel, fit
from ..attacks import PGD, Attack, DepthPGD, EmbedAttack, SegPGD
from ..data.base import DatasetInfo
from ..encoders import Encoder, create_encoder
from ..metrics import Accuracy, DepthMetrics, MeanIoU
from ._deacl import deacl_encoder
from ._io import (
    DeviceLoader,
    EvalData,
    PairDataset,
    atomic_save,
    atomic_write_json,
    barrier,
    batches,
    dataset_info,
    load_tensors,
    open_dataset,
    preset_batch,
    progress_bar,
    rank_world,
)
from .spec import BenchSpec, DatasetSpec, EncoderSpecEntry, HeadSpec

__all__ = ["TASK_ATTACK", "TASK_METRIC", "run_benchmark"]

logger = logging.getLogger("ssl_robust.bench")

#: The metric reported per task (results.json "metric").
TASK_METRIC = {"classification": "accuracy", "segmentation": "miou", "depth": "rmse"}
#: The task attack per task.
TASK_ATTACK = {"classification": "PGD", "segmentation": "SegPGD", "depth": "DepthPGD"}
_TARGET_KEY = {"classification": "label", "segmentation": "mask", "depth": "depth"}
_TOKENS: dict[str, Literal["cls", "patch"]] = {
    "classification": "cls",
    "segmentation": "patch",
    "depth": "patch",
}


# --------------------------------------------------------------------------- the runner
class _Runner:
    def __init__(self, spec: BenchSpec, out: Path, *, progress: bool) -> None:
        self.spec = spec
        self.out = out
        self.progress = progress
        self.rank, self.world = rank_world()
        self.device = torch.device(spec.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise _checks.SSLRobustValueError("device='cuda' but torch sees no CUDA device")
        self.results: dict[str, Any] = {
            "rows": [],
            "curves": [],
            "deacl_history": [],
            "galleries": [],
        }
        self.timings: dict[str, Any] = {"embed_attacks": []}
        self.encoders: dict[str, Encoder] = {}
        self.eval_data: dict[str, EvalData] = {}

    # ---------------------------------------------------------------- persistence
    def _results_path(self) -> Path:
        return self.out / "results.json"

    def _save(self) -> None:
        if self.rank == 0:
            atomic_write_json(self.results, self._results_path())

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
        barrier()
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
        barrier()

    def _done(self, task: str, dataset: str, encoder: str) -> bool:
        return any(
            r["task"] == task and r["dataset"] == dataset and r["encoder"] == encoder
            for r in self.results["rows"]
        )

    # ---------------------------------------------------------------- data
    def data(self, ds: DatasetSpec) -> EvalData:
        if ds.name not in self.eval_data:
            dataset = open_dataset(
                ds, ds.eval_split, subset=self.spec.eval.subset, seed=self.spec.eval.seed
            )
            info = dataset_info(dataset)
            missing = [t for t in ds.tasks if t not in info.tasks]
            if missing:
                raise _checks.SSLRobustValueError(
                    f"dataset {ds.name!r} ({ds.dataset}) has no {missing} targets; it supports "
                    f"{list(info.tasks)}"
                )
            shard = list(range(len(dataset)))[self.rank :: self.world]
            keys = tuple(_TARGET_KEY[t] for t in ds.tasks)
            tensors = load_tensors(dataset, shard, keys)
            images = tensors.pop("image")
            self.eval_data[ds.name] = EvalData(images, tensors, info)
        return self.eval_data[ds.name]

    # ---------------------------------------------------------------- encoders
    def encoder(self, entry: EncoderSpecEntry) -> Encoder:
        if entry.name in self.encoders:
            return self.encoders[entry.name]
        enc: Encoder
        if entry.deacl is None:
            with torch.random.fork_rng(devices=[]):  # weightless encoders: seeded random init
                torch.manual_seed(self.spec.seed)
                enc = create_encoder(
                    entry.registry,
                    checkpoint_path=entry.weights,
                    pretrained=entry.pretrained,
                    **entry.options,
                )
        else:
            base = self.encoder(self._entry(entry.deacl.base))
            enc = deacl_encoder(self, entry, base)
        enc = enc.to(self.device).eval()
        enc.requires_grad_(False)
        self.encoders[entry.name] = enc
        return enc

    def _entry(self, name: str) -> EncoderSpecEntry:
        return next(e for e in self.spec.encoders if e.name == name)

    # ---------------------------------------------------------------- heads
    def head(
        self, enc_entry: EncoderSpecEntry, ds: DatasetSpec, task: str, info: DatasetInfo
    ) -> TaskModel:
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
        train = open_dataset(ds, ds.train_split, subset=hs.train_size, seed=self.spec.seed)
        loader = torch.utils.data.DataLoader(
            PairDataset(train, _TARGET_KEY[task]),
            batch_size=hs.batch_size or preset_batch(task),
            shuffle=True,
            generator=torch.Generator().manual_seed(self.spec.seed),
        )
        fit(
            model,
            DeviceLoader(loader, self.device),
            preset=task,  # type: ignore[arg-type]
            epochs=hs.epochs,
            lr=hs.lr,
            weight_decay=hs.weight_decay,
            ignore_index=info.ignore_index,
            generator=torch.Generator().manual_seed(self.spec.seed),
            progress=self.progress,
        )
        if self.rank == 0:
            atomic_save(head.state_dict(), path)
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

    def task_attack(
        self, task: str, model: TaskModel, info: DatasetInfo, eps: float | None = None
    ) -> Attack:
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

    def run_attack(
        self, attack: Attack, images: Tensor, target: Tensor | None, desc: str
    ) -> Tensor:
        bs = self.spec.eval.batch_size
        bar = progress_bar(len(images), desc, self.progress)
        out = []
        for sl in batches(len(images), bs):
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
            for sl in batches(len(images), self.spec.eval.batch_size):
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
            task_attack = self.task_attack(task, model, data.info)
            task_adv = self.run_attack(
                task_attack, data.images, target, f"{entry.name}/{ds.name}/{TASK_ATTACK[task]}"
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
                entry.name,
                ds.name,
                task,
                row["clean"],
                row["embed_attack"],
                TASK_ATTACK[task],
                row["task_attack"],
            )
            self._curves(entry, ds, task, model, data, embed_adv[tokens], task_adv, preds)
            self._gallery(entry, ds, task, data, embed_adv[tokens], task_adv, preds)
            self.results["rows"].append(row)
            self._save()

    def _curves(
        self,
        entry: EncoderSpecEntry,
        ds: DatasetSpec,
        task: str,
        model: TaskModel,
        data: EvalData,
        embed_adv: Tensor,
        task_adv: Tensor,
        preds: dict[str, Tensor],
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
                    atk: Attack = EmbedAttack(
                        model.encoder, tokens=_TOKENS[task], **self._attack_opts(eps)
                    )  # type: ignore[arg-type]
                    adv = self.run_attack(
                        atk, images, None, f"curve EmbedAttack ε={eps * 255:.0f}/255"
                    )
                else:
                    atk = self.task_attack(task, model, data.info, eps)
                    adv = self.run_attack(
                        atk, images, target, f"curve {TASK_ATTACK[task]} ε={eps * 255:.0f}/255"
                    )
                values.append(self.metric(task, data.info, self.predict(model, adv), target))
            self.results["curves"].append(
                {
                    "task": task,
                    "dataset": ds.name,
                    "encoder": entry.name,
                    "encoder_type": entry.encoder_type,
                    "metric": TASK_METRIC[task],
                    "attack": kind,
                    "eps": [0.0, *eps_list, a.eps],
                    "values": [clean, *values, main[kind]],
                }
            )

    def _gallery(
        self,
        entry: EncoderSpecEntry,
        ds: DatasetSpec,
        task: str,
        data: EvalData,
        embed_adv: Tensor,
        task_adv: Tensor,
        preds: dict[str, Tensor],
    ) -> None:
        n = min(self.spec.eval.gallery, len(data.images))
        if n == 0 or self.rank != 0:
            return

        def labels(p: Tensor) -> Tensor:
            if task == "depth":
                return p[:n].reshape(n, *p.shape[-2:])
            return p[:n].argmax(1)

        rel = Path("galleries") / f"{ds.name}__{task}__{entry.name}.pt"
        atomic_save(
            {
                "images": data.images[:n],
                "embed_adv": embed_adv[:n],
                "task_adv": task_adv[:n],
                "target": data.targets[_TARGET_KEY[task]][:n],
                "pred_clean": labels(preds["clean"]),
                "pred_embed": labels(preds["embed"]),
                "pred_task": labels(preds["task"]),
            },
            self.out / rel,
        )
        self.results["galleries"].append(
            {
                "task": task,
                "dataset": ds.name,
                "encoder": entry.name,
                "encoder_type": entry.encoder_type,
                "file": str(rel),
            }
        )


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
    barrier()
    if render and runner.rank == 0:
        from .report import render_report

        with contextlib.suppress(ModuleNotFoundError):
            render_report(out_dir)
    return runner.results

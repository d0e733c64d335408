"""``ssl-robust``: the command line (also ``python -m ssl_robust``).

Commands:
    bench   run the benchmark (the embedded default without --config)
    finetune  robust fine-tuning of one encoder (DeACL, FARE, multi-task) from a TOML config
    deacl   DeACL robust fine-tuning (``finetune`` with method = "deacl", the older form)
    report  re-render tables and figures from an output directory's results.json
    list    the registered tasks, encoders, datasets, attack suites and defenses (origins)
    data    ``data check NAME ROOT [--split S]``: check a dataset folder (exit 2 if unusable)

Errors the user can fix (a bad config, a missing file, a failed download, a missing optional
package) print one line on stderr and exit with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import __version__, _checks

__all__ = ["main"]


def _dry_run_problems(args: argparse.Namespace) -> int:
    """``--dry-run`` of a config file: every problem at once, with its fix (exit 2)."""
    from .bench.problems import check_device, config_problems
    from .bench.spec import read_toml

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.config:
        raw = dict(read_toml(Path(args.config)))
        if args.suite:
            attack = dict(raw.get("attack", {}) or {})
            attack["suite"] = args.suite
            raw["attack"] = attack
        problems = config_problems(raw, device=args.device, world_size=world)
    else:
        problems = check_device({"device": "cpu"}, args.device)
    if not problems:
        return 0
    print(f"ssl-robust bench --dry-run: {len(problems)} problem(s) found:", file=sys.stderr)
    for i, problem in enumerate(problems, 1):
        print(f"{i}. {problem}", file=sys.stderr)
    return 2


def _bench(args: argparse.Namespace) -> int:
    from .bench import default_spec, load_spec, run_benchmark

    if args.dry_run and _dry_run_problems(args):
        return 2
    spec = load_spec(args.config) if args.config else default_spec()
    if args.device:
        spec = replace(spec, device=args.device)
    if args.suite:
        spec = replace(spec, attack=replace(spec.attack, suite=args.suite))
    if args.check:
        spec = replace(spec, attack=replace(spec.attack, check=True))
    out = Path(args.out) if args.out else Path(spec.out)
    if args.dry_run:
        from .bench.plan import plan_benchmark

        world = int(os.environ.get("WORLD_SIZE", "1"))
        print(plan_benchmark(spec, world_size=world).summary())
        print(
            f"config OK: device, names, datasets, weights and memory checked; outputs would "
            f"go to {out}"
        )
        return 0
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    if main_rank:
        print(
            f"ssl-robust bench: {len(spec.encoders)} encoder(s) × {len(spec.datasets)} "
            f"dataset(s) → {out}"
        )
    results = run_benchmark(spec, out=out, force=args.force, progress=not args.no_progress)
    if main_rank:
        print(_summary(results))
        print(f"wrote {out / 'results.json'}, {out / 'tables.md'} and figures in {out / 'figures'}")
    return 0


def _summary(results: dict[str, Any]) -> str:
    strong = any(r.get("strong_attack") is not None for r in results["rows"])
    lines = [
        f"{'task':<15}{'dataset':<12}{'encoder':<26}{'metric':<9}{'clean':>7}{'embed':>7}{'task':>7}"
        + (f"{'strong':>8}" if strong else "")
    ]
    for r in results["rows"]:
        lines.append(
            f"{r['task']:<15}{r['dataset']:<12}{r['encoder']:<26}{r['metric']:<9}"
            f"{r['clean']:>7.3f}{r['embed_attack']:>7.3f}{r['task_attack']:>7.3f}"
            + (f"{r['strong_attack']:>8.3f}" if r.get("strong_attack") is not None else "")
        )
    t = results.get("timings", {})
    if "total_seconds" in t:
        lines.append(f"total {t['total_seconds']:.0f} s")
    return "\n".join(lines)


@dataclass(frozen=True)
class _DeACLEncoder:
    registry: str
    checkpoint_path: str | None = None
    pretrained: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None  # deprecated name of checkpoint_path

    def __post_init__(self) -> None:
        if self.weights is None:
            return
        if self.checkpoint_path is not None:
            raise _checks.SSLRobustValueError(
                "[encoder]: give checkpoint_path only (weights is its deprecated name), not both"
            )
        warnings.warn(
            "the [encoder] key 'weights' of a DeACL config is deprecated; rename it to "
            "'checkpoint_path' (the keyword of create_encoder)",
            FutureWarning,
            stacklevel=2,
        )
        object.__setattr__(self, "checkpoint_path", self.weights)


@dataclass(frozen=True)
class _DeACLData:
    dataset: str
    root: str | None = None
    split: str = "train"
    subset: int | None = None
    image_size: int = 224
    batch_size: int = 128
    options: dict[str, Any] = field(default_factory=dict)


def _teacher_heads(
    student: Any, dataset: Any, tasks: tuple[str, ...], raw: Any, seed: int, device: Any
) -> dict[str, Any]:
    """Linear heads fitted on the (not yet fine-tuned) student, for TaskAT."""
    import torch

    from .adaptors import PRESETS, TaskModel, fit
    from .bench.data import dataset_info
    from .bench.spec import HeadSpec, _build
    from .tasks import get_task

    if not isinstance(raw, dict):
        raise _checks.SSLRobustTypeError("heads must be a table keyed by task")
    unknown = sorted(set(raw) - set(tasks))
    if unknown:
        raise _checks.SSLRobustValueError(
            f"[heads] tables for tasks that are not trained: {unknown}; finetune.tasks = "
            f"{list(tasks)}"
        )
    info = dataset_info(dataset)
    _checks.check_tasks_present(tasks, info, dataset=f"{info.name!r} (multitask fine-tuning)")
    heads = {}
    for task in tasks:
        spec = get_task(task)
        hs = _build(HeadSpec, raw.get(task, {}), f"heads.{task}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = spec.make_head(student.embed_dim, info, **hs.options)
        data = dataset
        if hs.train_size is not None and hs.train_size < len(dataset):
            data = torch.utils.data.Subset(dataset, range(hs.train_size))
        loader = torch.utils.data.DataLoader(
            data,
            batch_size=hs.batch_size or PRESETS[task].batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        model = TaskModel(spec.encoder_view(student), head).to(device)
        fit(model, loader, preset=spec.name, epochs=hs.epochs, lr=hs.lr,
            weight_decay=hs.weight_decay, ignore_index=info.ignore_index,
            generator=torch.Generator().manual_seed(seed), progress=False)  # fmt: skip
        heads[task] = head
    return heads


def _finetune(args: argparse.Namespace) -> int:
    from .bench.data import open_images
    from .bench.spec import _build, read_toml, recipe_from_table
    from .defenses.recipes import make_trainer
    from .encoders import create_encoder
    from .runtime import global_batch_loader, init_distributed, is_main

    legacy = args.command == "deacl"
    path = Path(args.config)
    if not path.is_file():
        what = "DeACL" if legacy else "fine-tuning"
        raise FileNotFoundError(f"{what} config {str(path)!r} does not exist")
    raw = read_toml(path)
    table = "deacl" if legacy else "finetune"
    valid = {"encoder", "data", table, "out", "device"} | (set() if legacy else {"heads"})
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise _checks.SSLRobustValueError(
            f"unknown keys {unknown} in {path}; valid keys: {', '.join(sorted(valid))}"
        )
    enc = _build(_DeACLEncoder, raw.get("encoder"), "encoder")
    data = _build(_DeACLData, raw.get("data"), "data")
    settings = dict(raw.get(table, {}))
    if legacy:
        if "method" in settings:
            raise _checks.SSLRobustValueError(
                "[deacl] has no method key; use `ssl-robust finetune` with [finetune] method"
            )
        settings["method"] = "deacl"
    recipe = recipe_from_table(settings, table)
    seed = int(recipe.loop.get("seed", 0))
    out = Path(args.out or raw.get("out", "deacl_run" if legacy else "finetune_run"))
    device = init_distributed(args.device or raw.get("device", "cpu"))
    student = create_encoder(
        enc.registry, checkpoint_path=enc.checkpoint_path, pretrained=enc.pretrained, **enc.options
    ).to(device)
    dataset = open_images(
        data.dataset,
        data.root,
        data.split,
        image_size=data.image_size,
        options=data.options,
        subset=data.subset,
        seed=seed,
    )
    heads = {}
    if recipe.tasks_needed():
        heads = _teacher_heads(
            student, dataset, recipe.tasks_needed(), raw.get("heads", {}), seed, device
        )
    elif raw.get("heads"):
        raise _checks.SSLRobustValueError(
            f"[heads] is only read by method = 'multitask'; got method = {recipe.method!r}"
        )
    loader = global_batch_loader(
        dataset, global_batch=data.batch_size, seed=seed, name="data.batch_size"
    )
    trainer = make_trainer(recipe, student, heads=heads)
    history = trainer.fit(
        loader, checkpoint_dir=out, overwrite=args.force, progress=not args.no_progress
    )
    if not is_main():
        return 0
    exported = trainer.export_student(out / "student.pt")
    for rec in history:
        print(
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items())
        )
    print(
        f"wrote {exported}: load it with "
        f"create_encoder({enc.registry!r}, checkpoint_path={str(exported)!r})"
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from .bench.report import load_results, render_report

    out = render_report(Path(args.dir))
    print(_report_summary(load_results(Path(args.dir)), out))
    return 0


def _report_summary(results: dict[str, Any], out: dict[str, Any]) -> str:
    """What ``ssl-robust report`` prints: what the results hold and the files written, as
    plain paths."""
    rows = results["rows"]

    def names(key: str) -> str:
        return ", ".join(dict.fromkeys(str(r[key]) for r in rows)) or "none"

    figures = out["figures"]
    where = f" in {Path(figures[0]).parent}" if figures else ""
    return "\n".join(
        [
            f"{len(rows)} result row(s) — tasks: {names('task')}; datasets: "
            f"{names('dataset')}; encoders: {names('encoder')}",
            f"tables:  {out['tables']['markdown']}",
            f"csv:     {out['tables']['csv']}",
            f"figures: {len(figures)}{where}"
            + ("" if figures else " (matplotlib missing or nothing to plot)"),
        ]
    )


def _list(args: argparse.Namespace) -> int:
    from .bench.suites import defense_origin, get_defense, list_defenses, list_suites, suite_origin
    from .data import dataset_entry, dataset_origin, list_datasets
    from .encoders import encoder_origin, encoder_spec, list_encoders
    from .registry import plugin_failures
    from .tasks import get_task, list_tasks, task_origin

    print("tasks (fit, evaluate, strong_attack, [[datasets]] tasks = [...]):")
    for name in list_tasks():
        task = get_task(name)
        print(f"  {name:<22}{task.metric_label} {task.arrow}, target '{task.target_key}' "
              f"[{task_origin(name)}]")  # fmt: skip
    print("encoders (create_encoder(name), [encoder] registry = name):")
    names = list_encoders()
    width = max(len(n) for n in names) + 2
    for name in names:
        spec = encoder_spec(name)
        weights = "bundled" if spec.bundled else ("download" if spec.url else "random init")
        if spec.factory is not None:
            weights = "factory"
        print(f"  {name:<{width}}{spec.description} [weights: {weights}] "
              f"[{encoder_origin(name)}]")  # fmt: skip
    for prefix, module, what in (
        ("timm/<model name>", "timm", "any timm ViT, e.g. timm/vit_small_patch14_dinov2.lvd142m"),
        (
            "hf/<repo id>",
            "transformers",
            "Hugging Face DINO / DINOv2, e.g. hf/facebook/dinov2-small",
        ),
    ):
        installed = importlib.util.find_spec(module) is not None
        state = "installed" if installed else f"needs pip install ssl-robust[{module}]"
        print(f"  {prefix:<{width}}{what} [{state}]")
    print("datasets (create_dataset(name, root, split)):")
    for name in list_datasets():
        desc = dataset_entry(name).description
        print(f"  {name:<22}{desc + ' ' if desc else ''}[{dataset_origin(name)}]")
    print("attack suites (attack.suite = ['paper', ...], --suite paper,...):")
    print(f"  {'paper':<22}EmbedAttack and the task attack (always run) [built-in]")
    for name in list_suites():
        print(f"  {name:<22}[{suite_origin(name)}]")
    print("defenses ([encoders.defense] method = name):")
    for name in list_defenses():
        desc = get_defense(name).description
        print(f"  {name:<22}{desc + ' ' if desc else ''}[{defense_origin(name)}]")
    for failure in plugin_failures():
        print(f"plugin failed to load: {failure}")
    return 0


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE; got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a plain string


def _data_check(args: argparse.Namespace) -> int:
    from .data import check_dataset

    root = None if args.root in (None, "-") else args.root
    report = check_dataset(
        args.name, root, split=args.split, read_all=args.all, **dict(args.option or [])
    )
    print(report.to_text())
    return 0 if report.usable else 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ssl-robust",
        description="Attack and defend self-supervised vision encoders across tasks.",
    )
    p.add_argument("--version", action="version", version=f"ssl-robust {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    p.add_argument(
        "--debug", action="store_true", help="show the full traceback of errors (and DEBUG logs)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (uninstalled code that registers tasks, encoders, datasets, "
        "attack suites or defenses); repeatable",
    )

    b = sub.add_parser(
        "bench",
        parents=[common],
        help="run the benchmark (the embedded default when no --config is given)",
        description="Train linear heads and evaluate clean / EmbedAttack / task-attack metrics "
        "for every encoder × dataset × task of a config. Without --config: the embedded "
        "default (built-in encoder, synthetic shapes data, no downloads, CPU).",
    )
    b.add_argument("--config", help="TOML benchmark config (see configs/ and docs/benchmark.md)")
    b.add_argument("--out", help="output directory (default: the config's `out`)")
    b.add_argument(
        "--device", help="override the config's device: cpu, cuda, cuda:N or mps (checked)"
    )
    b.add_argument(
        "--suite",
        help="attack suite: 'paper' (EmbedAttack + the paper's task attacks) or "
        "'paper,strong' (adds strong_attack, a worst case over APGD attacks per sample); "
        "overrides the config's attack.suite",
    )
    b.add_argument(
        "--check",
        action="store_true",
        help="run the attack-failure checks (check_evaluation) for every cell: writes "
        "checks.md and checks.json, marks warned/failed cells in tables.md (sets attack.check)",
    )
    b.add_argument(
        "--dry-run",
        action="store_true",
        help="check the whole config (device, names, dataset roots, weights files, memory) "
        "and list every problem with its fix (exit 2), or print the plan; nothing is "
        "trained or attacked",
    )
    b.add_argument(
        "--force", action="store_true", help="discard results of a different config in --out"
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.set_defaults(func=_bench)

    for name, help_text, description in (
        (
            "finetune",
            "robust fine-tuning of one encoder: DeACL, FARE or multi-task",
            "Fine-tune an encoder from a TOML config with [encoder], [data], [finetune] "
            "(method = deacl | fare | multitask, its [finetune.fare] / [finetune.task_at] / "
            "[finetune.deacl] tables) and, for multitask, [heads.<task>] tables (heads fitted "
            "on the teacher); see docs/robust_finetuning.md and configs/finetune.toml. Resumes "
            "from the checkpoint in the output directory.",
        ),
        (
            "deacl",
            "DeACL robust fine-tuning of one encoder (finetune with method = deacl)",
            "Fine-tune an encoder with DeACL from a TOML config with [encoder], [data] and "
            "[deacl] tables (see docs/robust_finetuning.md); resumes from the checkpoint in "
            "the output directory. The same as `ssl-robust finetune` with method = 'deacl'.",
        ),
    ):
        d = sub.add_parser(name, parents=[common], help=help_text, description=description)
        d.add_argument("--config", required=True, help="TOML config")
        d.add_argument("--out", help="output directory (default: the config's `out`)")
        d.add_argument("--device", help="cpu, cuda, cuda:N or mps (checked)")
        d.add_argument(
            "--force",
            action="store_true",
            help="restart even if --out holds a checkpoint of another config",
        )
        d.add_argument("--no-progress", action="store_true")
        d.set_defaults(func=_finetune)

    r = sub.add_parser(
        "report",
        parents=[common],
        help="re-render tables and figures from DIR/results.json",
        description="Write DIR/tables.md, DIR/results.csv and DIR/figures/*.png from "
        "DIR/results.json.",
    )
    r.add_argument("dir", help="a benchmark output directory")
    r.set_defaults(func=_report)

    ls = sub.add_parser(
        "list",
        parents=[common],
        help="print the registered tasks, encoders, datasets, attack suites and defenses",
        description="Print every registered name with where it comes from (built-in, or "
        "the plugin's distribution), and the timm/ and hf/ encoder name schemes.",
    )
    ls.set_defaults(func=_list)

    data = sub.add_parser(
        "data",
        help="check a dataset folder: `ssl-robust data check NAME ROOT [--split S]`",
        description="Commands on datasets on disk.",
    )
    data_sub = data.add_subparsers(dest="data_command", required=True)
    chk = data_sub.add_parser(
        "check",
        help="print the layout found, the samples per split, one sample's shapes, dtypes and "
        "ranges, and what is missing; exit code 2 when the data is unusable",
        description="Check a dataset folder the way the benchmark reads it (see "
        "docs/data.md for the accepted layouts). Exit code 0: usable; 2: unusable.",
    )
    chk.add_argument("name", help="dataset name (ssl-robust list shows them)")
    chk.add_argument("root", nargs="?", help="the dataset folder (omit for shapes)")
    chk.add_argument("--split", help="check this split only (default: train and val)")
    chk.add_argument(
        "--all",
        action="store_true",
        help="read every sample, not only the first (finds truncated or unreadable files)",
    )
    chk.add_argument(
        "--option",
        action="append",
        type=_option,
        metavar="KEY=VALUE",
        help="a reader option, VALUE in JSON where not a plain string, e.g. "
        '--option seg_classes=150 --option \'columns={"image": "img", "mask": "gt"}\'',
    )
    chk.set_defaults(func=_data_check)
    return p


# Errors a user can fix without reading code: a bad value or config, a missing file, a failed
# download (WeightsDownloadError is an OSError), a missing optional package.
_USER_ERRORS = (
    _checks.SSLRobustValueError,
    _checks.SSLRobustTypeError,
    OSError,
    ImportError,
)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ssl-robust`` console script.

    Returns the exit code: 0 on success, 2 for errors the user can fix (one line on stderr,
    the traceback only with ``--debug``), 130 when interrupted.
    """
    args = _parser().parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    from .runtime import shutdown_distributed

    ok = False
    try:
        from .registry import import_plugin

        for module in getattr(args, "plugin", []):
            import_plugin(module)
        code: int = args.func(args)
        ok = True
    except _USER_ERRORS as exc:
        if args.debug:
            raise
        print(
            f"ssl-robust {args.command}: error: {_one_line(exc)} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"ssl-robust {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        shutdown_distributed(ok=ok)  # under torchrun: leave the process group cleanly
    return code

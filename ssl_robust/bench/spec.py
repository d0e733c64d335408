"""The benchmark specification: a TOML file or the equivalent dataclasses.

A spec names the encoders (registry name + weights, or a DeACL fine-tuning of another entry),
the datasets and the tasks evaluated on each, the attack settings, the head-training presets,
the evaluation subset and the output directory. Unknown keys are refused with the list of valid
keys; budgets are on the [0, 1] image scale and may be written as fractions (``"8/255"``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .. import _checks
from ..registry import import_plugin
from ..tasks import check_task_name
from .suites import get_defense, list_suites

__all__ = [
    "DEFAULT_DEACL_WEIGHTS",
    "DEFAULT_MULTITASK",
    "DEFAULT_MULTITASK_WEIGHTS",
    "RECIPE_METHODS",
    "RUNNER_DATASET_KEYS",
    "RUNNER_ENCODER_KEYS",
    "SUITES",
    "AttackSpec",
    "BenchSpec",
    "DatasetSpec",
    "DeACLSpec",
    "EncoderSpecEntry",
    "EvalSpec",
    "HeadSpec",
    "check_dataset_options",
    "default_spec",
    "load_spec",
    "parse_suite",
    "recipe_from_table",
]

_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
_FRACTION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)\s*$")


def parse_budget(name: str, value: object) -> float:
    """A budget given as a number or a fraction string such as ``"8/255"`` (no eval)."""
    if isinstance(value, str):
        match = _FRACTION.match(value)
        if not match or float(match.group(2)) == 0:
            raise _checks.SSLRobustValueError(
                f"{name} must be a number or a fraction like '8/255'; got {value!r}"
            )
        value = float(match.group(1)) / float(match.group(2))
    return _checks.check_budget(name, value, norm="linf")


@dataclass(frozen=True)
class AttackSpec:
    """Attack settings shared by EmbedAttack and the task attacks (the paper's by default).

    Attributes:
        eps: Linf radius (8/255).
        step_size: step (2/255).
        steps: PGD steps (20).
        random_start: uniform start in the ball.
        curve_eps: extra budgets for the metric-vs-eps curves (``eps`` itself is always on
            the curve, clean at 0); empty for no curves.
        curve_subset: images used for the curves (a prefix of the evaluation subset).
        segpgd_threshold: SegPGD success threshold (share of correct pixels).
        suite: the attacks of every cell: ``["paper"]`` (clean, EmbedAttack and the paper's
            task attack) or ``["paper", "strong"]``, which adds the task's
            :func:`~ssl_robust.attacks.strong_attack` (a worst case per sample over APGD
            attacks: AutoAttack-style for classification, SEA-style for segmentation) as the
            ``strong_attack`` column.
        strong_steps: steps of each member of the strong attack (AutoAttack uses 100).
        check: run :func:`~ssl_robust.reliability.check_evaluation` for every cell (its task
            attack) and every EmbedAttack, on the first ``check_subset`` evaluation images;
            writes ``checks.md`` / ``checks.json`` and marks the cells of ``tables.md`` whose
            evaluation warned or failed.
        check_subset: images the checks use (a prefix of the evaluation subset).
        check_queries: Square's queries per image in the checks.
    """

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 20
    random_start: bool = True
    curve_eps: tuple[float, ...] = (2 / 255, 4 / 255)
    curve_subset: int = 64
    segpgd_threshold: float = 0.01
    suite: tuple[str, ...] = ("paper",)
    strong_steps: int = 100
    check: bool = False
    check_subset: int = 64
    check_queries: int = 500

    def __post_init__(self) -> None:
        object.__setattr__(self, "suite", parse_suite(self.suite))
        if not isinstance(self.check, bool):
            raise _checks.SSLRobustTypeError(
                f"attack.check must be true or false; got {self.check!r}"
            )
        _checks.check_int("attack.check_subset", self.check_subset, minimum=1)
        _checks.check_int("attack.check_queries", self.check_queries, minimum=1)
        _checks.check_int("attack.strong_steps", self.strong_steps, minimum=1)
        object.__setattr__(self, "eps", parse_budget("attack.eps", self.eps))
        object.__setattr__(self, "step_size", parse_budget("attack.step_size", self.step_size))
        _checks.check_int("attack.steps", self.steps, minimum=0)
        _checks.check_int("attack.curve_subset", self.curve_subset, minimum=1)
        curve = tuple(parse_budget("attack.curve_eps", e) for e in self.curve_eps)
        object.__setattr__(self, "curve_eps", curve)


@dataclass(frozen=True)
class HeadSpec:
    """Overrides of the head-training preset of one task (None keeps the paper's value).

    Attributes:
        epochs, lr, weight_decay, batch_size: as in :func:`ssl_robust.adaptors.fit`.
        train_size: training images used (a seeded subset of the train split; None = all).
        options: keywords of the head itself (e.g. ``{ bins = 64 }`` for the depth head).
    """

    epochs: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    train_size: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs is not None:
            _checks.check_int("heads.epochs", self.epochs, minimum=1)
        if self.batch_size is not None:
            _checks.check_int("heads.batch_size", self.batch_size, minimum=1)
        if self.train_size is not None:
            _checks.check_int("heads.train_size", self.train_size, minimum=1)
        if self.lr is not None:
            _checks.check_positive_float("heads.lr", self.lr)
        if self.weight_decay is not None:
            _checks.check_positive_float("heads.weight_decay", self.weight_decay, allow_zero=True)


@dataclass(frozen=True)
class DeACLSpec:
    """Robust fine-tuning of another encoder entry: DeACL (paper §3.3) or any registered
    defense (``[encoders.defense]``; ``[encoders.deacl]`` is the same table with
    ``method = "deacl"``).

    Attributes:
        base: name of the encoder entry to fine-tune.
        dataset: name of the dataset entry whose train split is used.
        train_size: training images (seeded subset).
        batch_size: batch size.
        config: the method's options. ``deacl``: :class:`~ssl_robust.defenses.DeACLConfig`
            fields (e.g. epochs, lr). ``fare`` / ``multitask``: the keys of the ``[finetune]``
            table of ``ssl-robust finetune`` (:func:`recipe_from_table`): the loop's
            :class:`~ssl_robust.defenses.RobustConfig` fields, ``combine``, ``anchor``,
            ``tasks`` and the ``fare``, ``task_at``, ``deacl`` sub-tables. ``multitask``
            trains against the base entry's own heads (fitted on it, as for its evaluation),
            so ``dataset`` must carry the targets of ``tasks``.
        checkpoint: use an existing checkpoint or exported student weights instead of
            training (then ``base`` gives the architecture).
        method: the defense (:func:`~ssl_robust.bench.register_defense`): ``"deacl"`` (the
            default), ``"fare"``, ``"multitask"`` or a registered one.
    """

    base: str
    dataset: str
    train_size: int | None = None
    batch_size: int = 128
    config: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    method: str = "deacl"

    def __post_init__(self) -> None:
        get_defense(self.method)
        _checks.check_int(f"{self.method}.batch_size", self.batch_size, minimum=1)
        if self.train_size is not None:
            _checks.check_int(f"{self.method}.train_size", self.train_size, minimum=1)
        if self.method in RECIPE_METHODS:
            self.recipe()  # every setting checked now

    def recipe(self) -> Any:
        """The :class:`~ssl_robust.defenses.FinetuneSpec` of a built-in method (``deacl``,
        ``fare``, ``multitask``), budgets parsed."""
        if not isinstance(self.config, Mapping):
            raise _checks.SSLRobustTypeError(
                f"{self.method}.config must be a table; got {self.config!r}"
            )
        if "method" in self.config:
            raise _checks.SSLRobustValueError(
                f"{self.method}.config has no 'method' key: the method is the table's"
            )
        return recipe_from_table({**self.config, "method": self.method}, f"{self.method}.config")


#: The defenses whose options :func:`recipe_from_table` reads (built into the library).
RECIPE_METHODS: tuple[str, ...] = ("deacl", "fare", "multitask")


def _budget_table(table: object, where: str) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise _checks.SSLRobustTypeError(f"{where} must be a table of keys; got {table!r}")
    out = dict(table)
    for key in ("eps", "step_size"):
        if key in out:
            out[key] = parse_budget(f"{where}.{key}", out[key])
    return out


def recipe_from_table(table: Mapping[str, Any], where: str = "finetune") -> Any:
    """A :class:`~ssl_robust.defenses.FinetuneSpec` from a TOML table: ``method``,
    ``combine``, ``anchor``, ``tasks``, the loop's fields (:class:`~ssl_robust.defenses.
    RobustConfig`; for ``method = "deacl"`` also the DeACL fields, as in ``[deacl]``) and the
    sub-tables ``deacl``, ``fare``, ``task_at``. Budgets may be fractions (``"4/255"``).

    Example:
        >>> recipe_from_table({"method": "fare", "epochs": 2, "warmup_epochs": 1,
        ...                    "fare": {"eps": "2/255"}}).fare
        {'eps': 0.00784313725490196}
    """
    from ..defenses import RobustConfig
    from ..defenses.recipes import FinetuneSpec

    table = _budget_table(table, where)
    spec_keys = ("method", "combine", "anchor", "tasks", "deacl", "fare", "task_at")
    loop_keys = {f.name for f in dataclasses.fields(RobustConfig)}
    method = table.get("method", "deacl")
    flat = {k: v for k, v in table.items() if k not in spec_keys}
    loop = {k: v for k, v in flat.items() if k in loop_keys}
    deacl = _budget_table(table.get("deacl", {}), f"{where}.deacl")
    extra = sorted(set(flat) - loop_keys)
    if method == "deacl":
        deacl.update({k: flat[k] for k in extra})
    elif extra:
        raise _checks.SSLRobustValueError(
            f"unknown key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))} in "
            f"{where}; valid keys: {', '.join((*spec_keys, *sorted(loop_keys)))} (objective "
            f"settings go in the {where}.fare, {where}.task_at and {where}.deacl tables)"
        )
    tasks = table.get("tasks", ("classification", "segmentation", "depth"))
    return FinetuneSpec(
        method=method,
        combine=table.get("combine", "avg"),
        anchor=table.get("anchor", "fare"),
        tasks=tuple(tasks) if isinstance(tasks, list) else tasks,
        loop=loop,
        deacl=deacl,
        fare=_budget_table(table.get("fare", {}), f"{where}.fare"),
        task_at=_budget_table(table.get("task_at", {}), f"{where}.task_at"),
    )


@dataclass(frozen=True)
class EncoderSpecEntry:
    """One encoder of the benchmark.

    Attributes:
        name: the key in results (unique).
        registry: :func:`~ssl_robust.encoders.create_encoder` name (for DeACL entries: taken
            from the base entry when empty).
        weights: checkpoint path (``create_encoder(weights=)``).
        pretrained: fetch / load the registry's pretrained weights.
        deacl: fine-tune another entry (DeACL, or ``deacl.method``): the encoder type
            becomes the method's name (``"deacl"``).
        defense: the same table under its general name (``[encoders.defense]``); stored
            in ``deacl``.
        options: extra ``create_encoder`` keywords (e.g. ``layer``, ``norm``).
    """

    name: str
    registry: str = ""
    weights: str | None = None
    pretrained: bool = False
    deacl: DeACLSpec | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    defense: DeACLSpec | None = None

    def __post_init__(self) -> None:
        if self.defense is not None:
            if self.deacl is not None:
                raise _checks.SSLRobustValueError(
                    f"encoder {self.name!r}: give [encoders.defense] or its older name "
                    "[encoders.deacl], not both"
                )
            object.__setattr__(self, "deacl", self.defense)
            object.__setattr__(self, "defense", None)
        _refuse_runner_keys(
            self.options, RUNNER_ENCODER_KEYS, f"encoders[{self.name!r}].options", "create_encoder"
        )

    @property
    def encoder_type(self) -> str:
        """``"standard"``, or the defense's name (``"deacl"``)."""
        return self.deacl.method if self.deacl is not None else "standard"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset and the tasks evaluated on it.

    Attributes:
        name: the key in results (unique).
        dataset: :func:`~ssl_robust.data.create_dataset` name.
        tasks: subset of classification / segmentation / depth the dataset supports.
        root: data folder (None for ``shapes``).
        train_split: split the heads are trained on.
        eval_split: split evaluated.
        image_size: images are resized (shorter side) and centre-cropped to this size.
        window: for tasks whose heads train on random crops (segmentation): the crop size
            of head training and the window of sliding-window evaluation (stride: half of
            it); a multiple of the patch size, at most ``image_size``. None: whole images.
        full_images: evaluate whole images (shorter side resized to ``image_size``, aspect
            kept, no centre crop), one image per batch (the sliding window batches the
            windows); the paper's full-resolution segmentation evaluation. Heads still train
            on the centre-cropped ``image_size`` images (and ``window`` crops of them).
        options: extra ``create_dataset`` keywords (``shapes``: size, ...).

    A dataset entry with no tasks is only read for DeACL fine-tuning (``deacl.dataset``).
    """

    name: str
    dataset: str
    tasks: tuple[str, ...]
    root: str | None = None
    train_split: str = "train"
    eval_split: str = "val"
    image_size: int = 224
    window: int | None = None
    full_images: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.window is not None:
            _checks.check_int("window", self.window, minimum=8)
            if self.window > self.image_size:
                raise _checks.SSLRobustValueError(
                    f"dataset {self.name!r}: window must be at most image_size="
                    f"{self.image_size}; got {self.window}"
                )
        for task in self.tasks:
            check_task_name(f"datasets[{self.name!r}].tasks", task)
        check_dataset_options(self.options, f"datasets[{self.name!r}].options")
        _checks.check_int("image_size", self.image_size, minimum=8)


@dataclass(frozen=True)
class EvalSpec:
    """The evaluation subset: ``subset`` images drawn once with ``seed`` from each eval split,
    evaluated in batches of ``batch_size`` (per rank under torchrun); the first ``gallery``
    images are kept for the galleries."""

    subset: int | None = 500
    seed: int = 0
    batch_size: int = 64
    gallery: int = 4

    def __post_init__(self) -> None:
        if self.subset is not None:
            _checks.check_int("eval.subset", self.subset, minimum=1)
        _checks.check_int("eval.seed", self.seed, minimum=0)
        _checks.check_int("eval.batch_size", self.batch_size, minimum=1)
        _checks.check_int("eval.gallery", self.gallery, minimum=0)


@dataclass(frozen=True)
class BenchSpec:
    """The whole benchmark.

    Attributes:
        encoders: the encoders, standard and DeACL.
        datasets: the datasets and their tasks.
        attack: attack settings.
        heads: per-task head-training overrides (keys: task names).
        eval: the evaluation subset.
        out: output directory.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (under torchrun with CUDA,
            each rank takes the GPU of its ``LOCAL_RANK``).
        seed: seed of head training and attacks.
        threads: CPU threads for torch (None keeps torch's default).
        plugins: modules imported before the config is checked (uninstalled code that
            registers tasks, encoders, datasets, suites or defenses).
    """

    encoders: tuple[EncoderSpecEntry, ...]
    datasets: tuple[DatasetSpec, ...]
    attack: AttackSpec = field(default_factory=AttackSpec)
    heads: Mapping[str, HeadSpec] = field(default_factory=dict)
    eval: EvalSpec = field(default_factory=EvalSpec)
    out: str = "ssl_robust_results"
    device: str = "cpu"
    seed: int = 0
    threads: int | None = None
    plugins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "plugins", tuple(self.plugins))
        if not self.encoders or not any(d.tasks for d in self.datasets):
            raise _checks.SSLRobustValueError(
                "a benchmark needs at least one encoder and one dataset with tasks"
            )
        for kind, entries in (("encoder", self.encoders), ("dataset", self.datasets)):
            names = [e.name for e in entries]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise _checks.SSLRobustValueError(f"duplicate {kind} names: {sorted(dup)}")
        enc_names = {e.name for e in self.encoders}
        data_names = {d.name for d in self.datasets}
        for e in self.encoders:
            if e.deacl is not None:
                if e.deacl.base not in enc_names or e.deacl.base == e.name:
                    raise _checks.SSLRobustValueError(
                        f"encoder {e.name!r}: deacl.base must name another encoder entry; got "
                        f"{e.deacl.base!r} (entries: {sorted(enc_names)})"
                    )
                if e.deacl.dataset not in data_names:
                    raise _checks.SSLRobustValueError(
                        f"encoder {e.name!r}: deacl.dataset must name a dataset entry; got "
                        f"{e.deacl.dataset!r} (entries: {sorted(data_names)})"
                    )
            elif not e.registry:
                raise _checks.SSLRobustValueError(f"encoder {e.name!r} needs registry=")
        for task in self.heads:
            check_task_name("heads", task)
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise _checks.SSLRobustValueError(
                f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps'; got {self.device!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``results.json`` stores as ``config``)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))  # type: ignore[no-any-return]

    def fingerprint(self) -> str:
        """Hash of everything that changes results (not ``out``/``device``/``threads``)."""
        d = self.to_dict()
        for key in ("out", "device", "threads", "plugins"):
            d.pop(key, None)
        for e in d["encoders"]:  # keys added later, at their defaults: the same hash as before
            if e.get("defense") is None:
                e.pop("defense", None)
            if isinstance(e.get("deacl"), dict) and e["deacl"].get("method") == "deacl":
                e["deacl"].pop("method")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


#: Keywords of ``create_dataset`` the runner sets itself, and where a config sets them.
RUNNER_DATASET_KEYS: dict[str, str] = {
    "name": "the dataset table's `dataset`",
    "root": "the dataset table's `root`",
    "split": "`train_split` / `eval_split` (deacl: `[data] split`)",
    "transform": "made by the runner from `image_size`",
    "subset": "`[eval] subset` / `[heads.<task>] train_size` (deacl: `[data] subset`)",
    "seed": "the seed of the subset draw, `[eval] seed` / the top-level `seed` (deacl: "
    "`[deacl] seed`); the shapes scenes have their own option, `scene_seed`",
}


def check_dataset_options(options: Mapping[str, Any], where: str) -> None:
    """Refuse ``options`` keys that the runner passes to ``create_dataset`` itself (one line
    naming each key and where it is set), instead of a ``TypeError`` about multiple values.

    Example:
        >>> check_dataset_options({"size": 64, "scene_seed": 7}, "datasets[0].options")
        >>> try:
        ...     check_dataset_options({"seed": 7}, "datasets[0].options")
        ... except ValueError as err:
        ...     print(str(err)[:62])
        datasets[0].options: 'seed' is set by the runner, not here: it
    """
    _refuse_runner_keys(options, RUNNER_DATASET_KEYS, where, "create_dataset")


#: Keywords of ``create_encoder`` the runner sets itself, and where a config sets them.
RUNNER_ENCODER_KEYS: dict[str, str] = {
    "name": "the encoder table's `registry`",
    "checkpoint_path": "the encoder table's `weights`",
    "weights": "a key of the encoder table itself",
    "pretrained": "a key of the encoder table itself",
}


def _refuse_runner_keys(
    options: object, reserved: Mapping[str, str], where: str, function: str
) -> None:
    if not isinstance(options, Mapping):
        raise _checks.SSLRobustTypeError(
            f"{where} must be a table of {function} keywords; got {type(options).__name__}"
        )
    clashes = [k for k in options if k in reserved]
    if clashes:
        raise _checks.SSLRobustValueError(
            f"{where}: "
            + "; ".join(
                f"{k!r} is set by the runner, not here: it is {reserved[k]}" for k in clashes
            )
        )


T = TypeVar("T")


def _build(cls: type[T], data: object, where: str, **nested: Any) -> T:
    """Instantiate dataclass ``cls`` from a mapping, refusing unknown keys by name."""
    if not isinstance(data, Mapping):
        raise _checks.SSLRobustTypeError(
            f"{where} must be a table of keys; got {type(data).__name__}"
        )
    valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise _checks.SSLRobustValueError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in "
            f"{where}; valid keys: {', '.join(valid)}"
        )
    kwargs = dict(data)
    kwargs.update({k: v for k, v in nested.items() if k in kwargs})
    for key in ("tasks", "curve_eps", "plugins"):
        if key in kwargs and isinstance(kwargs[key], list):
            kwargs[key] = tuple(kwargs[key])
    try:
        return cls(**kwargs)
    except TypeError as exc:  # missing required keys
        raise _checks.SSLRobustValueError(f"{where}: {exc}") from None


def spec_from_dict(data: Mapping[str, Any]) -> BenchSpec:
    """Build a :class:`BenchSpec` from parsed TOML (or JSON) data."""
    if not isinstance(data, Mapping):
        raise _checks.SSLRobustTypeError("a benchmark config must be a table of keys")
    plugins = data.get("plugins", [])
    if not isinstance(plugins, (list, tuple)) or not all(isinstance(p, str) for p in plugins):
        raise _checks.SSLRobustTypeError(f"plugins must be a list of module names; got {plugins!r}")
    for module in plugins:  # imported first: they register tasks, datasets, suites, ...
        import_plugin(module)
    encoders = []
    for i, raw in enumerate(data.get("encoders", [])):
        deacl = None
        defense = None
        if isinstance(raw, Mapping) and raw.get("deacl") is not None:
            deacl = _build(DeACLSpec, raw["deacl"], f"encoders[{i}].deacl")
        if isinstance(raw, Mapping) and raw.get("defense") is not None:
            defense = _build(DeACLSpec, raw["defense"], f"encoders[{i}].defense")
        encoders.append(
            _build(EncoderSpecEntry, raw, f"encoders[{i}]", deacl=deacl, defense=defense)
        )
    datasets = [
        _build(DatasetSpec, raw, f"datasets[{i}]") for i, raw in enumerate(data.get("datasets", []))
    ]
    heads_raw = data.get("heads", {})
    if not isinstance(heads_raw, Mapping):
        raise _checks.SSLRobustTypeError("heads must be a table keyed by task")
    heads = {task: _build(HeadSpec, raw, f"heads.{task}") for task, raw in heads_raw.items()}
    nested: dict[str, Any] = dict(encoders=tuple(encoders), datasets=tuple(datasets), heads=heads)
    if "attack" in data:
        nested["attack"] = _build(AttackSpec, data["attack"], "attack")
    if "eval" in data:
        nested["eval"] = _build(EvalSpec, data["eval"], "eval")
    top = dict(data)
    top.setdefault("encoders", [])
    top.setdefault("datasets", [])
    return _build(BenchSpec, top, "the config", **nested)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file (tomllib; tomli on Python 3.10) with clear errors."""
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                "reading TOML configs on Python 3.10 needs tomli: pip install tomli"
            ) from None
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
        return data
    except tomllib.TOMLDecodeError as exc:
        raise _checks.SSLRobustValueError(f"{path} is not valid TOML: {exc}") from None


#: The built-in attack suites (every registered one: ``list_suites()``).
SUITES: tuple[str, ...] = ("paper", "strong")


def parse_suite(value: object) -> tuple[str, ...]:
    """Check an attack suite: ``"paper"``, ``"paper,strong"`` or a list of those names
    (``"paper"`` and any registered suite, :func:`~ssl_robust.bench.register_suite`).

    Example:
        >>> parse_suite("paper,strong")
        ('paper', 'strong')
        >>> parse_suite(["paper"])
        ('paper',)
    """
    valid = ("paper", *list_suites())
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise _checks.SSLRobustTypeError(
            f"attack.suite must be a list of names from {list(valid)}; got {value!r}"
        )
    names = tuple(v.strip() for v in items)
    unknown = [v for v in names if v not in valid]
    if unknown:
        from ..registry import plugin_note

        raise _checks.SSLRobustValueError(
            f"attack.suite: unknown suite {unknown[0]!r}; valid suites are: "
            f"{', '.join(valid)}{plugin_note()}"
        )
    if "paper" not in names or len(set(names)) != len(names):
        raise _checks.SSLRobustValueError(
            f"attack.suite must contain 'paper' (the tables' columns) once, optionally with "
            f"{', '.join(repr(v) for v in valid[1:])}; got {list(names)}"
        )
    return tuple(s for s in valid if s in names)


def load_spec(path: str | Path) -> BenchSpec:
    """Read a TOML benchmark config (see ``configs/`` and docs/benchmark.md)."""
    return spec_from_dict(read_toml(Path(path)))


#: DeACL fine-tuned weights of the bundled encoder (scripts/deacl_default_encoder.py).
DEFAULT_DEACL_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "vit_tiny_shapes_deacl.pt"


#: Multi-task fine-tuned weights of the bundled encoder (scripts/multitask_default_encoder.py,
#: i.e. ``ssl-robust finetune --config configs/finetune.toml``).
DEFAULT_MULTITASK_WEIGHTS = (
    Path(__file__).resolve().parents[1] / "assets" / "vit_tiny_shapes_multitask.pt"
)

#: The multi-task recipe of the embedded default (the same settings as configs/finetune.toml):
#: FARE on the CLS and patch tokens as the anchor (weighted 0.05: its squared distances are
#: ~50 on this encoder) plus PGD / SegPGD / DepthPGD at 8/255 against heads fitted on the
#: teacher (the depth loss weighted 3×), 6 epochs of batch 32 on 2048 shapes scenes (384
#: steps), SGD lr 0.015.
DEFAULT_MULTITASK: dict[str, Any] = {
    "train_size": 2048,
    "batch_size": 32,
    "config": {
        "epochs": 6, "warmup_epochs": 1, "lr": 0.015, "augment": False,
        "fare": {"tokens": "cls+patch", "eps": 4 / 255, "step_size": 1 / 255, "steps": 3,
                 "weight": 0.05},
        "task_at": {"eps": 8 / 255, "step_size": 3 / 255, "steps": 3, "weight": {"depth": 3.0}},
    },
}  # fmt: skip


def default_spec(out: str = "ssl_robust_results", *, fine_tune: bool = False) -> BenchSpec:
    """The embedded default: runs on a laptop CPU in minutes, with no downloads.

    The built-in ``vit_tiny_shapes`` encoder (self-supervised on ``shapes``, weights shipped in
    the package), its DeACL fine-tuned version (the paper's finding: it protects against
    EmbedAttack only) and its multi-task fine-tuned version (the remedy: FARE + task-aware
    adversarial training, :data:`DEFAULT_MULTITASK`), evaluated on the synthetic ``shapes`` data
    for classification, segmentation and depth with the paper's attack settings. The DeACL
    weights ship in the package too (made by ``scripts/deacl_default_encoder.py`` with the
    settings below); ``fine_tune=True`` fine-tunes them in the runner instead, recording the
    per-epoch DeACL history (the paper's Fig. 2). The multi-task weights ship too, made by
    ``scripts/multitask_default_encoder.py`` (``ssl-robust finetune --config
    configs/finetune.toml``, the same recipe with heads fitted on its own 512 images).
    """
    shapes_opts = {"size": 4000, "contrast": 0.35}
    shipped = DEFAULT_DEACL_WEIGHTS.is_file() and not fine_tune
    multitask_shipped = DEFAULT_MULTITASK_WEIGHTS.is_file() and not fine_tune
    return BenchSpec(
        encoders=(
            EncoderSpecEntry(name="vit_tiny_shapes", registry="vit_tiny_shapes", pretrained=True),
            EncoderSpecEntry(
                name="vit_tiny_shapes_deacl",
                deacl=DeACLSpec(
                    base="vit_tiny_shapes",
                    dataset="shapes",
                    train_size=1024,
                    batch_size=128,
                    config={"epochs": 6, "warmup_epochs": 1, "lr": 0.05},
                    checkpoint=str(DEFAULT_DEACL_WEIGHTS) if shipped else None,
                ),
            ),
            EncoderSpecEntry(
                name="vit_tiny_shapes_multitask",
                defense=DeACLSpec(
                    method="multitask",
                    base="vit_tiny_shapes",
                    dataset="shapes",
                    checkpoint=str(DEFAULT_MULTITASK_WEIGHTS) if multitask_shipped else None,
                    **DEFAULT_MULTITASK,
                ),
            ),
        ),
        datasets=(
            DatasetSpec(
                name="shapes",
                dataset="shapes",
                tasks=("classification", "segmentation", "depth"),
                image_size=32,
                options=shapes_opts,
            ),
        ),
        heads={
            # The paper's presets, with fewer epochs and training images for a CPU, the
            # learning rates of the classification and depth heads adapted to the tiny encoder,
            # and 64 depth bins instead of DINOv2's 256 (5× less compute in the depth head and
            # DepthPGD, which dominated the run; bins 0.16 m apart over 0–10 m).
            "classification": HeadSpec(epochs=5, lr=0.01, train_size=2000),
            "segmentation": HeadSpec(epochs=8, lr=1e-3, train_size=2000),
            "depth": HeadSpec(
                epochs=10, lr=3e-3, batch_size=64, train_size=2000, options={"bins": 64}
            ),
        },
        # the ε curves on the first 32 evaluation images (the main results use all 128);
        # the strong suite with 10 steps per member instead of AutoAttack's 100, for a CPU;
        # the evaluation checks on the first 16 images, Square with 100 queries
        attack=AttackSpec(
            curve_subset=32,
            suite=("paper", "strong"),
            strong_steps=10,
            check=True,
            check_subset=16,
            check_queries=100,
        ),
        eval=EvalSpec(subset=128, seed=0, batch_size=64, gallery=4),
        out=out,
        threads=None,
    )

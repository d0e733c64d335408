"""ssl-robust finetune: the example config and its documentation, a tiny real multi-task run,
and the [encoders.defense] entry of the benchmark spec."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from _helpers_deacl import deacl_toml
from _helpers_docs import documented_config_keys, read_toml

import ssl_robust.defenses.recipes as recipes
from ssl_robust import SSLRobustValueError, cli
from ssl_robust.bench import DeACLSpec, list_defenses, spec_from_dict
from ssl_robust.bench.spec import HeadSpec
from ssl_robust.cli import main
from ssl_robust.defenses import FARE, DeACL, DeACLTrainer, RobustConfig, RobustTrainer, TaskAT
from ssl_robust.defenses.recipes import FinetuneSpec
from ssl_robust.encoders import create_encoder

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "finetune.toml"
DOCS = ROOT / "docs" / "robust_finetuning.md"


def _documented_keys() -> dict[str, set[str]]:
    """Keys of the tables in the docs' "The finetune config file" section, per TOML table."""
    return documented_config_keys(DOCS, "The finetune config file")


def _params(cls: type) -> set[str]:
    import inspect

    return {p for p in inspect.signature(cls).parameters if p not in ("heads", "attacks")}


def test_every_documented_key_is_accepted_and_every_accepted_key_documented() -> None:
    documented = _documented_keys()
    loop = {f.name for f in dataclasses.fields(RobustConfig)}
    accepted = {
        "": {"out", "device"},
        "finetune": {"method", "combine", "anchor", "tasks"} | loop,
        "finetune.fare": _params(FARE),
        "finetune.task_at": _params(TaskAT) - {"ignore_index"},
        "finetune.deacl": _params(DeACL) - {"weight"},
        "heads.<task>": {f.name for f in dataclasses.fields(HeadSpec)},
    }
    assert documented == accepted
    assert set(recipes._TASK_AT_KEYS) == accepted["finetune.task_at"]
    example = read_toml(EXAMPLE)
    assert {k for k, v in example.items() if not isinstance(v, dict)} == accepted[""]
    fin = example["finetune"]
    assert {k for k, v in fin.items() if not isinstance(v, dict)} <= accepted["finetune"]
    for sub in ("fare", "task_at", "deacl"):
        assert set(fin[sub]) <= accepted[f"finetune.{sub}"]
    for task, table in example["heads"].items():
        assert set(table) <= accepted["heads.<task>"], task


def test_example_config_reaches_the_trainer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    class Fake:
        def __init__(self, recipe: FinetuneSpec, heads: Any) -> None:
            seen.update(recipe=recipe, heads=heads)

        def fit(self, loader: Any, **kw: Any) -> list[dict[str, float]]:
            seen["batch_size"] = loader.batch_size
            return [{"epoch": 1.0, "loss": 0.0}]

        def export_student(self, path: Path) -> Path:
            return Path(path)

    monkeypatch.setattr(
        recipes, "make_trainer", lambda recipe, student, heads=None: Fake(recipe, heads)
    )

    def fake_heads(student: Any, dataset: Any, tasks: Any, raw: Any, seed: int, device: Any) -> Any:
        seen.update(head_tables=raw, tasks=tasks)
        return {t: None for t in tasks}

    monkeypatch.setattr(cli, "_teacher_heads", fake_heads)
    assert (
        main(["finetune", "--config", str(EXAMPLE), "--out", str(tmp_path), "--no-progress"]) == 0
    )
    raw = read_toml(EXAMPLE)
    recipe: FinetuneSpec = seen["recipe"]
    assert (
        recipe.method == raw["finetune"]["method"] and recipe.combine == raw["finetune"]["combine"]
    )
    assert recipe.fare["eps"] == pytest.approx(4 / 255) and recipe.task_at["eps"] == pytest.approx(
        8 / 255
    )
    assert recipe.fare["tokens"] == raw["finetune"]["fare"]["tokens"]
    assert recipe.loop["epochs"] == raw["finetune"]["epochs"]
    assert seen["tasks"] == tuple(raw["finetune"]["tasks"]) and seen["head_tables"] == raw["heads"]
    assert seen["batch_size"] == raw["data"]["batch_size"]


TINY = """
out = "{out}"
[encoder]
registry = "vit_test"
[data]
dataset = "shapes"
subset = 8
image_size = 16
batch_size = 8
options = {{ size = 16 }}
[finetune]
method = "{method}"
epochs = 1
warmup_epochs = 0
augment = false
tasks = ["segmentation", "depth"]
[finetune.fare]
tokens = "cls+patch"
steps = 1
[finetune.task_at]
steps = 1
{extra}
"""


def test_tiny_multitask_run_writes_a_loadable_student(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "f.toml"
    extra = "[heads.segmentation]\nepochs = 1\n[heads.depth]\nepochs = 1\noptions = { bins = 8 }"
    cfg.write_text(TINY.format(out=tmp_path / "run", method="multitask", extra=extra))
    assert main(["finetune", "--config", str(cfg), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "segmentation_adv=" in out and "depth_adv=" in out and "fare=" in out
    assert (tmp_path / "run" / "robust_checkpoint.pt").is_file()
    enc = create_encoder("vit_test", checkpoint_path=tmp_path / "run" / "student.pt")
    assert enc(torch.rand(1, 3, 16, 16)).cls.shape == (1, 32)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("[finetune.fare]\nradius = 1", "unknown key 'radius' in fare"),
        ("", "method must be one of 'deacl', 'fare', 'multitask'"),
        ("[heads.classification]\nepochs = 1", r"\[heads\] tables for tasks that are not trained"),
    ],
)
def test_bad_finetune_configs_exit_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, match: str
) -> None:
    cfg = tmp_path / "f.toml"
    method = "sam" if "method" in match else "multitask"
    text = TINY.format(out=tmp_path / "run", method=method, extra="")
    if "radius" in extra:
        text = text.replace("[finetune.fare]\n", "[finetune.fare]\nradius = 1\n")
    elif extra:
        text += extra
    cfg.write_text(text)
    assert main(["finetune", "--config", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssl-robust finetune: error:") and re.search(match, err), err


def test_deacl_alias_builds_the_deacl_preset(tmp_path: Path) -> None:
    recipe = recipes.FinetuneSpec(
        method="deacl", loop={"epochs": 2, "warmup_epochs": 0}, deacl={"gamma": 1.0}
    )
    trainer = recipes.make_trainer(recipe, create_encoder("vit_test"))
    assert type(trainer) is DeACLTrainer and trainer.config.gamma == 1.0
    assert isinstance(
        recipes.make_trainer(FinetuneSpec(method="fare"), create_encoder("vit_test")), RobustTrainer
    )
    cfg = tmp_path / "d.toml"
    cfg.write_text(deacl_toml(tmp_path / "run", extra='method = "fare"'))
    assert main(["deacl", "--config", str(cfg)]) == 2


# ----------------------------------------------------------------------------- bench spec
BENCH = """
[[encoders]]
name = "tiny"
registry = "vit_test"
[[encoders]]
name = "tiny_{method}"
[encoders.{table}]
{method_line}
base = "tiny"
dataset = "shapes"
config = {{ epochs = 1, warmup_epochs = 0{extra} }}
[[datasets]]
name = "shapes"
dataset = "shapes"
tasks = ["classification"]
image_size = 16
"""


@pytest.mark.parametrize("method", ["deacl", "fare", "multitask"])
def test_bench_defense_entry(method: str) -> None:
    extra = ', fare = { tokens = "patch", eps = "2/255" }' if method != "deacl" else ""
    text = BENCH.format(
        method=method, table="defense", method_line=f'method = "{method}"', extra=extra
    )
    import tomllib

    spec = spec_from_dict(tomllib.loads(text))
    entry = spec.encoders[1]
    assert entry.encoder_type == method and entry.deacl is not None
    recipe = entry.deacl.recipe()
    assert recipe.method == method and recipe.loop == {"epochs": 1, "warmup_epochs": 0}
    if method != "deacl":
        assert recipe.fare == {"tokens": "patch", "eps": pytest.approx(2 / 255)}


def test_old_deacl_table_still_accepted_and_bad_defense_options_refused() -> None:
    import tomllib

    old = BENCH.format(method="deacl", table="deacl", method_line="", extra="")
    entry = spec_from_dict(tomllib.loads(old)).encoders[1]
    assert entry.encoder_type == "deacl" and entry.deacl is not None
    with pytest.raises(SSLRobustValueError, match="unknown defense 'trades'"):
        DeACLSpec(base="a", dataset="b", method="trades")
    with pytest.raises(SSLRobustValueError, match=r"unknown key 'gamma' in fare.config"):
        DeACLSpec(base="a", dataset="b", method="fare", config={"gamma": 2.0})
    with pytest.raises(SSLRobustValueError, match=r"unknown key 'radius' in fare; valid"):
        DeACLSpec(base="a", dataset="b", method="fare", config={"fare": {"radius": 1}})
    assert {"deacl", "fare", "multitask"} <= set(list_defenses())


def test_tables_say_what_protects_what(tmp_path: Path) -> None:
    from ssl_robust.bench import write_tables

    def row(task: str, etype: str, clean: float, embed: float, attack: float) -> dict[str, Any]:
        metric = {"classification": "accuracy", "depth": "rmse"}[task]
        return {
            "task": task, "dataset": "shapes", "encoder": f"vit_{etype}", "encoder_type": etype,
            "metric": metric, "clean": clean, "embed_attack": embed, "task_attack": attack,
        }  # fmt: skip

    rows = [
        row("classification", "standard", 0.8, 0.3, 0.0),
        row("classification", "deacl", 0.8, 0.4, 0.0),
        row("classification", "multitask", 0.75, 0.42, 0.35),
        row("depth", "standard", 2.0, 4.0, 5.0),
        row("depth", "deacl", 2.5, 3.0, 4.6),
        row("depth", "multitask", 2.2, 2.9, 2.3),
    ]
    text = write_tables({"rows": rows}, tmp_path)["markdown"].read_text()
    section = text.split("## What protects what", 1)[1]
    assert (
        "DeACL protects against EmbedAttack on 2 of 2 tasks, the task attacks on 1 of 2" in section
    )
    assert (
        "multi-task protects against EmbedAttack on 2 of 2 tasks, the task attacks on 2 of 2"
        in section
    )
    assert (
        "classification (accuracy ↑), vit_multitask (multi-task): EmbedAttack +0.12, PGD +0.35"
        in section
    )
    vs_deacl = section.split("Against DeACL", 1)[1]
    assert (
        "depth (RMSE ↓), vit_multitask (multi-task): EmbedAttack ×0.97, DepthPGD ×0.50" in vs_deacl
    )
    assert "vit_deacl" not in vs_deacl


def test_the_docs_multitask_snippet_runs() -> None:
    text = DOCS.read_text().split("## Beyond DeACL: one loop, several objectives", 1)[1]
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(compile(code, "robust_finetuning.md", "exec"), scope)
    assert {"loss", "fare", "classification_adv", "segmentation_adv", "lr"} <= set(scope["stats"])


def test_bench_fine_tunes_a_multitask_entry_against_the_base_heads(tmp_path: Path) -> None:
    from ssl_robust.bench import (
        AttackSpec,
        BenchSpec,
        DatasetSpec,
        EncoderSpecEntry,
        EvalSpec,
        HeadSpec,
        run_benchmark,
    )

    tasks = ("classification", "segmentation", "depth")
    multitask = DeACLSpec(
        base="tiny", dataset="shapes", method="multitask", train_size=8, batch_size=8,
        config={"epochs": 1, "warmup_epochs": 0, "augment": False, "fare": {"steps": 1},
                "task_at": {"steps": 1}},
    )  # fmt: skip
    spec = BenchSpec(
        encoders=(
            EncoderSpecEntry(name="tiny", registry="vit_test"),
            EncoderSpecEntry(name="tiny_mt", defense=multitask),
        ),
        datasets=(
            DatasetSpec(
                name="shapes", dataset="shapes", tasks=tasks, image_size=16, options={"size": 32}
            ),
        ),
        attack=AttackSpec(steps=1, curve_eps=(), suite=("paper",)),
        heads={
            t: HeadSpec(
                epochs=1, train_size=16, batch_size=8, options={"bins": 8} if t == "depth" else {}
            )
            for t in tasks
        },
        eval=EvalSpec(subset=4, batch_size=4, gallery=0),
        threads=1,
    )
    results = run_benchmark(spec, out=tmp_path, progress=False, render=False)
    types = {(r["encoder"], r["encoder_type"]) for r in results["rows"]}
    assert types == {("tiny", "standard"), ("tiny_mt", "multitask")}
    assert (tmp_path / "multitask" / "tiny_mt" / "robust_checkpoint.pt").is_file()
    assert (tmp_path / "heads" / "tiny_mt__shapes__depth.pt").is_file()  # fresh heads
    tuned = torch.load(tmp_path / "encoders" / "tiny_mt.pt", weights_only=True)
    base = create_encoder("vit_test").state_dict()
    assert any(not torch.equal(tuned[k], base[k]) for k in base)


def test_the_default_benchmark_row_uses_the_recipe_of_the_example_config() -> None:
    """DEFAULT_MULTITASK (the embedded default's multi-task row) says it is the recipe of
    configs/finetune.toml: the shipped weights are made by that file, so the two must agree."""
    from ssl_robust.bench.spec import DEFAULT_MULTITASK, parse_budget

    example = read_toml(EXAMPLE)
    data, fin = example["data"], example["finetune"]
    assert DEFAULT_MULTITASK["train_size"] == data["subset"]
    assert DEFAULT_MULTITASK["batch_size"] == data["batch_size"]
    config = DEFAULT_MULTITASK["config"]
    for key in ("epochs", "warmup_epochs", "lr", "augment"):
        assert config[key] == fin[key], key
    for table in ("fare", "task_at"):
        for key, value in config[table].items():
            written = fin[table][key]
            if key in ("eps", "step_size"):
                written = parse_budget(key, written)
            assert value == pytest.approx(written), (table, key)

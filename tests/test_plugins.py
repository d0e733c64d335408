"""Registries open to other packages: register_task and TaskSpec defaults, duplicate names,
entry-point discovery (lazy, broken plugins only warn), and the real downstream package
examples/plugin_normals installed into a temporary folder and run through fit → evaluate →
strong_attack → ``ssl-robust bench --config``."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ssl_robust
from ssl_robust import TaskModel, TaskSpec, evaluate, fit, get_task, register_task, strong_attack
from ssl_robust.adaptors import LinearClassifier
from ssl_robust.data import DatasetInfo
from ssl_robust.encoders import VisionTransformer
from ssl_robust.metrics import Accuracy
from ssl_robust.registry import Registry
from ssl_robust.tasks import TaskAttack, list_tasks, table_number, task_origin

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "plugin_normals"


def _ce(out, y, info):
    return F.cross_entropy(out, y, reduction="none")


def _spec(name: str = "toy_knn", **kw) -> TaskSpec:
    fields = dict(
        name=name,
        target_key="label",
        make_head=lambda dim, info, **o: _Head(dim, info.num_classes or 3, name),
        loss=_ce,
        make_metric=lambda info: Accuracy(),
        higher_is_better=True,
        dense=False,
    )
    return TaskSpec(**{**fields, **kw})


class _Head(LinearClassifier):
    def __init__(self, dim: int, classes: int, task: str) -> None:
        super().__init__(dim, classes)
        self.task = task


@pytest.fixture
def toy_task():
    spec = register_task(_spec())
    yield spec
    from ssl_robust.tasks import _REGISTRY

    _REGISTRY.unregister(spec.name)


def _vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)


# ----------------------------------------------------------------------------- TaskSpec
def test_spec_defaults_are_derived_from_the_required_fields() -> None:
    spec = _spec()
    assert spec.tokens == "cls" and _spec(dense=True).tokens == "patch"
    assert (spec.metric_key, spec.metric_label, spec.metric_text) == ("metric",) * 3
    assert spec.attack_label == "TaskPGD" and spec.arrow == "↑"
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    info = DatasetInfo(name="t", tasks=("toy_knn",), num_classes=2)
    # per-sample quality = the metric on each sample alone; damage from the direction
    assert spec.sample_metric(logits, y, info).tolist() == [1.0, 0.0, 0.0]
    assert spec.damage(logits, y, info).tolist() == [-1.0, -0.0, -0.0]
    low = _spec(higher_is_better=False)
    assert low.damage(logits, y, info).tolist() == [1.0, 0.0, 0.0]
    assert torch.allclose(spec.train_loss(logits, y, info), F.cross_entropy(logits, y))


def test_replace_rederives_the_defaults_for_the_new_spec() -> None:
    a = _spec("a_task")
    b = dataclasses.replace(a, name="b_task", higher_is_better=False)
    logits, y = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    info = DatasetInfo(name="t", tasks=("b_task",), num_classes=2)
    assert b.damage(logits, y, info).tolist() == [1.0]  # b's direction, not a's
    assert a.damage(logits, y, info).tolist() == [-1.0]


@pytest.mark.parametrize(
    "missing",
    ["name", "target_key", "make_head", "loss", "make_metric", "higher_is_better", "dense"],
)
def test_a_missing_required_field_is_named(missing: str) -> None:
    kw = dict(
        name="x",
        target_key="y",
        make_head=lambda *a: None,
        loss=_ce,
        make_metric=lambda info: Accuracy(),
        higher_is_better=True,
        dense=False,
    )
    del kw[missing]
    with pytest.raises(TypeError, match=f"missing the required field '{missing}'"):
        TaskSpec(**kw)


def test_bad_field_types_are_refused() -> None:
    with pytest.raises(TypeError, match="loss must be callable; got int"):
        _spec(loss=3)
    with pytest.raises(TypeError, match="dense must be True or False; got 'yes'"):
        _spec(dense="yes")
    with pytest.raises(ValueError, match="tokens must be one of 'cls', 'patch'"):
        _spec(tokens="all")


def test_a_loss_that_is_not_per_sample_gives_the_shapes() -> None:
    spec = _spec(loss=lambda out, y, info: F.cross_entropy(out, y))
    model = TaskModel(_vit(), _Head(16, 3, "toy_knn")).eval()
    attack = TaskAttack(model, spec=spec, steps=1)
    with pytest.raises(ValueError, match=r"loss must be per sample, shape \(2,\).*got \(\)"):
        attack(torch.rand(2, 3, 16, 16), torch.tensor([0, 1]))


# ----------------------------------------------------------------------------- registry
def test_duplicate_names_say_who_registered_first(toy_task) -> None:
    assert register_task(toy_task) is toy_task  # the same object again is fine
    assert task_origin("toy_knn") == "test_plugins"
    with pytest.raises(ValueError, match="task 'toy_knn' is already registered by test_plugins"):
        register_task(_spec())
    with pytest.raises(
        ValueError, match=r"'classification' is already registered by ssl_robust \(built-in\)"
    ):
        register_task(_spec("classification"))
    with pytest.warns(UserWarning, match="replaced"):
        new = register_task(_spec(), overwrite=True)
    assert get_task("toy_knn") is new and get_task(new) is new


def test_lookups_take_the_spec_itself_and_list_registered_tasks_after_the_paper(toy_task) -> None:
    assert list_tasks()[:3] == ["classification", "segmentation", "depth"]
    assert list_tasks()[-1] == "toy_knn" and ssl_robust.tasks.TASKS[-1] == "depth"
    assert get_task(toy_task) is toy_task
    assert table_number("toy_knn") == 4 and table_number("segmentation") == 2
    with pytest.raises(TypeError, match="must be a TaskSpec"):
        get_task(3)  # type: ignore[arg-type]


def test_generic_registry_refuses_bad_names_and_entries() -> None:
    reg: Registry[int] = Registry(
        "widget_test", check=lambda v: v if isinstance(v, int) else int("x")
    )
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        reg.register("", 1)
    reg.register("a", 1)
    with pytest.raises(ValueError, match=r"unknown widget_test 'b'.*valid widget_tests are: a"):
        reg.get("b")


def test_a_registered_task_runs_through_fit_evaluate_and_strong_attack(toy_task) -> None:
    enc = _vit()
    info = DatasetInfo(name="t", tasks=("toy_knn",), num_classes=3)
    model = TaskModel(enc, toy_task.make_head(16, info))
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 3, 16, 16, generator=gen), torch.tensor([0, 1, 2, 0, 1, 2])
    hist = fit(model, [(x, y)], epochs=3, lr=0.05, progress=False)
    assert len(hist["loss"]) == 3 and hist["loss"][-1] < hist["loss"][0]
    res = evaluate(model, [(x, y)], attacks={"task": lambda m: toy_task.make_attack(m, info)})
    assert res.headline["model"]["task"] <= res.headline["model"]["clean"]
    ens = strong_attack(model, task="toy_knn", steps=3, info=info)
    out = ens.run(x, y)
    assert (out.adversarial - x).abs().max() <= 8 / 255 + 1e-6
    assert [type(a).__name__ for a in ens.attacks] == ["TaskAttack", "TaskAttack"]
    assert ens.attacks[0].schedule == "apgd" and ens.attacks[0].restarts == 2
    with pytest.raises(ValueError, match=r"task must be one of 'classification'.*'toy_knn'"):
        strong_attack(model, task="nope")


def test_unknown_names_in_a_config_list_the_registered_ones(tmp_path: Path) -> None:
    from ssl_robust.bench import spec_from_dict

    data = {
        "encoders": [{"name": "e", "registry": "vit_test"}],
        "datasets": [{"name": "d", "dataset": "shapes", "tasks": ["normalz"]}],
    }
    with pytest.raises(ValueError, match=r"tasks must be one of 'classification'.*got 'normalz'"):
        spec_from_dict(data)
    data["datasets"][0]["tasks"] = ["depth"]
    with pytest.raises(ValueError, match="unknown suite 'fast'; valid suites are: paper, strong"):
        spec_from_dict({**data, "attack": {"suite": ["paper", "fast"]}})
    bad_defense = {"name": "r", "defense": {"method": "fare2", "base": "e", "dataset": "d"}}
    with pytest.raises(ValueError, match=r"unknown defense 'fare2'.*valid defenses are: deacl"):
        spec_from_dict({**data, "encoders": [*data["encoders"], bad_defense]})
    with pytest.raises(ModuleNotFoundError, match="plugin module 'no_such_plugin' not found"):
        spec_from_dict({**data, "plugins": ["no_such_plugin"]})


# ----------------------------------------------------------------------------- entry points
def _run(code: str, env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _dist(folder: Path, dist: str, entries: str) -> None:
    info = folder / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[ssl_robust.plugins]\n{entries}\n")


def test_a_broken_plugin_only_warns_and_is_named_in_unknown_name_errors(tmp_path: Path) -> None:
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('needs libfoo')\n")
    (tmp_path / "good_plugin.py").write_text(
        "import torch.nn.functional as F\n"
        "from ssl_robust.metrics import Accuracy\n"
        "from ssl_robust.tasks import TaskSpec\n"
        "from ssl_robust.data import register_dataset, ShapesDataset\n"
        "SPEC = TaskSpec(name='ep_task', target_key='label', make_head=lambda d, i: None,\n"
        "    loss=lambda o, y, i: F.cross_entropy(o, y, reduction='none'),\n"
        "    make_metric=lambda i: Accuracy(), higher_is_better=True, dense=False)\n"
        "def register():\n"
        "    register_dataset('ep_data', lambda root, split, **kw: ShapesDataset(split=split),\n"
        "                     needs_root=False)\n"
    )
    _dist(
        tmp_path,
        "broken_dist",
        "broken = broken_plugin\nnot_a_spec = math:pi\nspec = good_plugin:SPEC\n"
        "hook = good_plugin:register",
    )
    code = """
        import warnings
        warnings.simplefilter("error")   # importing ssl_robust reads no plugin
        import ssl_robust
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            try:
                ssl_robust.get_task("normalz")
            except ValueError as err:
                print("ERROR:", err)
        for w in caught:
            print("WARNING:", w.category.__name__, w.message)
        print("TASKS:", ssl_robust.list_tasks())
        print("ORIGINS:", ssl_robust.tasks.task_origin("ep_task"),
              ssl_robust.data.dataset_origin("ep_data"))
    """
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    out = _run(code, env, tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "RuntimeWarning ssl_robust plugin 'broken' (distribution broken_dist" in text
    assert "ImportError: needs libfoo" in text
    assert "not_a_spec" in text and "points at float 3.14" in text and "not a module" in text
    assert "plugins that failed to load: broken (from broken_dist)" in text
    assert "TASKS: ['classification', 'segmentation', 'depth', 'ep_task']" in text
    assert "ORIGINS: broken_dist broken_dist" in text  # a spec object and a register() hook
    off = _run(code, {**env, "SSL_ROBUST_NO_PLUGINS": "1"}, tmp_path)
    assert "WARNING" not in off.stdout and "plugin discovery is off" in off.stdout


@pytest.fixture(scope="module")
def installed_normals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/plugin_normals installed (pip, offline, no build isolation) into a folder."""
    tmp = tmp_path_factory.mktemp("normals")
    src = shutil.copytree(PLUGIN, tmp / "src")
    target = tmp / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
           "--no-index", "--quiet", "--target", str(target), str(src)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"pip install of examples/plugin_normals failed:\n{done.stderr}")
    assert (target / "ssl_normals" / "plugin.py").is_file()
    return target


@pytest.mark.slow
def test_installed_plugin_runs_fit_evaluate_strong_attack_and_bench(
    installed_normals: Path, tmp_path: Path
) -> None:
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{installed_normals}"}
    code = """
        import sys, torch
        import ssl_robust
        assert "ssl_normals" not in sys.modules          # nothing read at import
        from ssl_robust import (TaskModel, create_dataset, create_encoder, evaluate, fit,
                                get_task, strong_attack)
        spec = get_task("normals")                       # a lookup miss reads the plugins
        assert ssl_robust.tasks.task_origin("normals") == "ssl-robust-normals"
        from ssl_robust.testing import check_encoder, check_task
        check_task(spec, image_size=32)                  # the plugin passes the contract
        check_encoder(create_encoder("normals_vit"))
        data = create_dataset("shapes_normals", split="train", size=8, image_size=32)
        enc = create_encoder("normals_vit")
        model = TaskModel(enc, spec.make_head(enc.embed_dim, data.info))
        loader = torch.utils.data.DataLoader(data, batch_size=4)
        hist = fit(model, loader, epochs=3, lr=1e-2, progress=False)
        assert hist["loss"][-1] < hist["loss"][0], hist
        attack = lambda m: spec.make_attack(m, data.info, steps=3)
        res = evaluate(model, loader, attacks={"task": attack})
        clean, attacked = res.headline["model"]["clean"], res.headline["model"]["task"]
        assert 0 <= clean <= 180 and attacked >= clean, (clean, attacked)  # degrees, ↓
        batch = next(iter(loader))
        out = strong_attack(model, task="normals", steps=2).run(batch["image"], batch["normals"])
        assert float((out.adversarial - batch["image"]).abs().max()) <= 8 / 255 + 1e-6
        print("OK", clean, attacked)
    """
    out = _run(code, env, tmp_path)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]

    listing = _run("from ssl_robust.cli import main; main(['list'])", env, tmp_path)
    for name in ("normals", "shapes_normals", "normals_vit", "apgd_task", "noise_distill"):
        line = next(ln for ln in listing.stdout.splitlines() if ln.strip().startswith(name + " "))
        assert line.endswith("[ssl-robust-normals]"), line
    assert "classification" in listing.stdout and "[built-in]" in listing.stdout

    config = PLUGIN / "normals.toml"
    cli = _run(
        f"from ssl_robust.cli import main; raise SystemExit(main(['bench', '--config', "
        f"{str(config)!r}, '--out', 'res', '--no-progress']))",
        env,
        tmp_path,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    results = json.loads((tmp_path / "res" / "results.json").read_text())
    rows = {(r["task"], r["encoder"]): r for r in results["rows"]}
    assert set(rows) == {(t, e) for t in ("normals", "depth")
                         for e in ("normals_vit", "normals_vit_distilled")}  # fmt: skip
    normals = rows[("normals", "normals_vit")]
    assert normals["metric"] == "angular_error"
    assert normals["task_attack"] >= normals["clean"] and "apgd_task" in normals
    assert rows[("normals", "normals_vit_distilled")]["encoder_type"] == "noise_distill"
    tables = (tmp_path / "res" / "tables.md").read_text()
    assert tables.index("### Table 3: depth") < tables.index("### Table 4: normals mean angular")
    assert "APGD (task loss) Angular error (°) ↓" in tables
    header = (tmp_path / "res" / "results.csv").read_text().splitlines()[0]
    assert header.endswith("strong_attack,apgd_task")
    figures = {p.name for p in (tmp_path / "res" / "figures").iterdir()}
    assert {"eps_curves_normals.png", "gallery_shapes_normals_normals_normals_vit.png"} <= figures


def test_the_extending_page_opens_with_a_task_that_runs() -> None:
    import re

    from ssl_robust.tasks import _REGISTRY

    text = (ROOT / "docs" / "extending.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert code and text.split("\n", 1)[1].lstrip().startswith("```python")
    try:
        exec(compile(code.group(1), "docs/extending.md", "exec"), {"__name__": "__docs__"})
        assert task_origin("cosine_cls") == "__docs__"
    finally:
        _REGISTRY.unregister("cosine_cls")


def test_cli_plugin_option_imports_a_module_and_list_shows_its_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ssl_robust.cli import main
    from ssl_robust.tasks import _REGISTRY

    (tmp_path / "my_cli_plugin.py").write_text(
        "import torch.nn.functional as F\n"
        "from ssl_robust.metrics import Accuracy\n"
        "from ssl_robust.tasks import TaskSpec, register_task\n"
        "register_task(TaskSpec(name='cli_task', target_key='label', make_head=lambda d, i: None,\n"
        "    loss=lambda o, y, i: F.cross_entropy(o, y, reduction='none'),\n"
        "    make_metric=lambda i: Accuracy(), higher_is_better=True, dense=False))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert main(["list", "--plugin", "my_cli_plugin"]) == 0
        line = next(ln for ln in capsys.readouterr().out.splitlines() if "cli_task" in ln)
        assert line.endswith("[plugin module my_cli_plugin]")
    finally:
        _REGISTRY.unregister("cli_task")
        sys.modules.pop("my_cli_plugin", None)
    assert main(["list", "--plugin", "no_such_module_xyz"]) == 2
    assert "plugin module 'no_such_module_xyz' not found" in capsys.readouterr().err


def test_defense_table_is_the_deacl_table_and_new_keys_keep_the_fingerprint() -> None:
    from ssl_robust.bench import spec_from_dict

    base = {
        "encoders": [{"name": "e", "registry": "vit_test"}],
        "datasets": [{"name": "d", "dataset": "shapes", "tasks": ["depth"]}],
    }
    old = spec_from_dict(
        {
            **base,
            "encoders": [*base["encoders"], {"name": "r", "deacl": {"base": "e", "dataset": "d"}}],
        }
    )
    new = spec_from_dict(
        {
            **base,
            "plugins": ["json"],
            "encoders": [
                *base["encoders"],
                {"name": "r", "defense": {"method": "deacl", "base": "e", "dataset": "d"}},
            ],
        }
    )
    assert new.encoders[1].deacl == old.encoders[1].deacl and new.plugins == ("json",)
    assert new.encoders[1].encoder_type == "deacl"
    assert new.fingerprint() == old.fingerprint()
    both = {
        "name": "r",
        "deacl": {"base": "e", "dataset": "d"},
        "defense": {"base": "e", "dataset": "d"},
    }
    with pytest.raises(ValueError, match=r"give \[encoders.defense\] or its older name"):
        spec_from_dict({**base, "encoders": [*base["encoders"], both]})


def test_a_success_criterion_gives_early_stop_and_ensemble_skips(toy_task) -> None:
    spec = dataclasses.replace(
        toy_task, name="toy_success", success=lambda out, y, info: out.argmax(1) != y
    )
    model = TaskModel(_vit(), _Head(16, 3, "toy_success")).eval()
    info = DatasetInfo(name="t", tasks=("toy_success",), num_classes=3)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 3  # sample 0 is already misclassified
    attack = spec.make_attack(model, info, steps=3)
    assert attack.early_stop and isinstance(attack, TaskAttack)
    ens = spec.make_strong_attack(model, info, steps=2)
    res = ens.run(x, y)
    assert bool(res.success[0]) and int(res.winner[0]) == -1 and int(res.steps[0]) == 0
    assert torch.equal(res.adversarial[0], x[0])  # broken before any attack: left as it is

"""``ssl-robust bench --dry-run``: plan, checks and the memory guard, without running."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import shapes_entry

from ssl_robust.bench.plan import plan_benchmark
from ssl_robust.bench.spec import BenchSpec, EncoderSpecEntry, EvalSpec
from ssl_robust.cli import main
from ssl_robust.data import create_dataset


def _spec(**eval_kw: object) -> BenchSpec:
    return BenchSpec(
        encoders=(EncoderSpecEntry(name="tiny", registry="vit_test"),),
        datasets=(shapes_entry(("classification", "depth")),),
        eval=EvalSpec(**{"subset": 8, "batch_size": 4, **eval_kw}),  # type: ignore[arg-type]
    )


def test_plan_lists_cells_and_counts_forward_passes() -> None:
    spec = _spec()
    plan = plan_benchmark(spec)
    assert [(c["task"], c["images"]) for c in plan.cells] == [("classification", 8), ("depth", 8)]
    a = spec.attack
    per_image = 1 + 2 * (a.steps + 2)
    curves = min(a.curve_subset, 8) * len(a.curve_eps) * 2 * (a.steps + 2)
    assert plan.forward_passes == 2 * (8 * per_image + curves)
    assert 0 < plan.peak_bytes < plan.machine_bytes
    assert "estimated peak memory per rank" in plan.summary()


def test_strong_suite_adds_its_runs_to_the_plan(capsys) -> None:
    spec = _spec()
    strong = dataclasses.replace(
        spec, attack=dataclasses.replace(spec.attack, suite=("paper", "strong"), strong_steps=5)
    )
    base, plan = plan_benchmark(spec), plan_benchmark(strong)
    classes = create_dataset("shapes", split="val", size=4, image_size=16).info.num_classes
    apgd_t = min(9, classes - 1)  # APGD-T's target classes
    cells = {c["task"]: c for c in plan.cells}
    runs = f"({1 + apgd_t} runs × 5 steps)"
    assert cells["classification"]["attacks"][-1] == f"strong_attack {runs}"
    assert cells["depth"]["attacks"][-1] == "strong_attack (2 runs × 5 steps)"  # two losses
    per_image = (2 + (1 + apgd_t) * 7) + (2 + 2 * 7)  # judge twice; runs × (5 steps + 2)
    assert plan.forward_passes - base.forward_passes == 8 * per_image
    # each suite's forward passes, and its steps and share in the printed plan
    strong_total = sum(c["suites"]["strong"] for c in plan.cells)
    assert strong_total == 8 * per_image
    assert sum(c["suites"]["paper"] for c in plan.cells) == base.forward_passes
    assert all("strong" not in c["suites"] for c in base.cells)
    share = round(100 * strong_total / plan.forward_passes)
    text = plan.summary()
    assert f"strong: 5 steps per member ([attack] strong_steps), {strong_total:,} forward " \
        f"passes ({share} %)" in text  # fmt: skip
    assert f"paper: {spec.attack.steps} steps per attack" in text
    assert "strong:" not in base.summary()
    assert main(["bench", "--dry-run", "--suite", "paper,strong"]) == 0
    assert "strong_attack" in capsys.readouterr().out
    assert main(["bench", "--dry-run", "--suite", "strong"]) == 2  # the paper suite is required
    assert "must contain 'paper'" in capsys.readouterr().err
    assert main(["bench", "--dry-run", "--suite", "paper,auto"]) == 2
    assert "unknown suite 'auto'; valid suites are: paper, strong" in capsys.readouterr().err


def test_plan_grows_with_the_batch_not_with_the_subset() -> None:
    small, more_images = (
        plan_benchmark(_spec()),
        plan_benchmark(dataclasses.replace(_spec(), eval=EvalSpec(subset=16, batch_size=4))),
    )
    assert more_images.peak_bytes == small.peak_bytes
    bigger_batch = plan_benchmark(
        dataclasses.replace(_spec(), eval=EvalSpec(subset=8, batch_size=64))
    )
    assert bigger_batch.peak_bytes > small.peak_bytes


def test_a_config_beyond_the_machine_is_refused_with_the_figure() -> None:
    with pytest.raises(ValueError, match=r"estimated peak memory per rank, [\d.]+ GiB, exceeds"):
        plan_benchmark(_spec(batch_size=10**9))


def test_dry_run_cli_checks_roots_weights_and_device(tmp_path, capsys) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[encoders]]\nname = "e"\nregistry = "vit_test"\nweights = "nope.pt"\n'
        '[[datasets]]\nname = "c"\ndataset = "cifar10"\nroot = "nowhere"\n'
        'tasks = ["classification"]\n'
    )
    assert main(["bench", "--config", str(config), "--dry-run"]) == 2
    assert "weights file 'nope.pt' not found" in capsys.readouterr().err
    config.write_text(config.read_text().replace('weights = "nope.pt"\n', ""))
    assert main(["bench", "--config", str(config), "--dry-run"]) == 2
    assert "expected this layout" in capsys.readouterr().err
    assert main(["bench", "--dry-run", "--device", "tpu"]) == 2
    assert "device must be" in capsys.readouterr().err
    assert main(["bench", "--dry-run"]) == 0
    assert "config OK" in capsys.readouterr().out


def test_dry_run_lists_every_problem_of_a_config_in_one_pass(tmp_path, capsys) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'device = "cuda:7"\n'
        '[[encoders]]\nname = "e"\nregistry = "vit_tset"\nweights = "nope.pt"\n'
        '[[encoders]]\nname = "r"\n[encoders.defense]\nmethod = "fair"\nbase = "e"\n'
        'dataset = "c"\n'
        '[[datasets]]\nname = "c"\ndataset = "cifar10"\nroot = "nowhere"\n'
        'tasks = ["classification", "normalz"]\n'
        '[[datasets]]\nname = "x"\ndataset = "cifar11"\ntasks = ["depth"]\n'
        '[attack]\nsuite = ["paper", "strongest"]\n'
    )
    assert main(["bench", "--config", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err
    expected = [
        "device 'cuda:7'",  # this machine has no such GPU (CPU CI) or too few
        "unknown encoder 'vit_tset' — did you mean 'vit_test'?",
        "unknown defense 'fair'",
        "got 'normalz'",
        "unknown dataset 'cifar11'",
        "unknown suite 'strongest'",
        "weights file 'nope.pt' not found",
        "CIFAR-10 not found under 'nowhere'",
    ]
    for text in expected:
        assert text in err, text
    assert "8 problem(s) found" in err
    assert err.count("fix: ") == 8


def test_config_checks_are_an_open_list(tmp_path) -> None:
    from ssl_robust.bench.problems import CONFIG_CHECKS, Problem, config_problems

    def no_cats(config, device):
        names = [d.get("name") for d in config.get("datasets", [])]
        return [Problem("a dataset is named 'cats'", "rename it")] if "cats" in names else []

    config = {
        "encoders": [{"name": "e", "registry": "vit_test"}],
        "datasets": [{"name": "cats", "dataset": "shapes", "tasks": ["classification"],
                      "image_size": 16, "options": {"size": 4}}],
        "eval": {"subset": 4, "batch_size": 2},
    }  # fmt: skip
    assert config_problems(config) == []
    CONFIG_CHECKS.append(no_cats)
    try:
        assert config_problems(config) == [Problem("a dataset is named 'cats'", "rename it")]
    finally:
        CONFIG_CHECKS.remove(no_cats)

"""The benchmark runner end to end on a tiny spec: outputs, resume, config guard, sharing."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from conftest import shapes_entry

from ssl_robust.bench import load_results, run_benchmark
from ssl_robust.bench.spec import (
    AttackSpec,
    BenchSpec,
    DatasetSpec,
    DeACLSpec,
    EncoderSpecEntry,
    EvalSpec,
    HeadSpec,
)


def tiny_spec(*, steps: int = 2, deacl: bool = True, curve: bool = True) -> BenchSpec:
    encoders = [EncoderSpecEntry(name="tiny", registry="vit_test")]
    if deacl:
        encoders.append(
            EncoderSpecEntry(
                name="tiny_deacl",
                deacl=DeACLSpec(
                    base="tiny",
                    dataset="shapes",
                    train_size=16,
                    batch_size=8,
                    config={"epochs": 1, "warmup_epochs": 0, "steps": 1, "augment": False},
                ),
            )
        )
    return BenchSpec(
        encoders=tuple(encoders),
        datasets=(shapes_entry(size=32),),
        attack=AttackSpec(steps=steps, curve_eps=(2 / 255,) if curve else (), curve_subset=4),
        heads={
            t: HeadSpec(epochs=1, train_size=16, batch_size=8)
            for t in ("classification", "segmentation", "depth")
        },
        eval=EvalSpec(subset=8, batch_size=4, gallery=2),
        threads=1,
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    results = run_benchmark(tiny_spec(), out=out, progress=False)
    return out, results


def test_outputs_and_row_schema(finished):
    out, results = finished
    assert (out / "results.json").exists() and (out / "results.csv").exists()
    assert (out / "tables.md").exists()
    rows = results["rows"]
    assert len(rows) == 6  # 2 encoders × 3 tasks
    for r in rows:
        assert set(r) == {
            "task",
            "dataset",
            "encoder",
            "encoder_type",
            "metric",
            "clean",
            "embed_attack",
            "task_attack",
        }
        assert (
            r["metric"]
            == {"classification": "accuracy", "segmentation": "miou", "depth": "rmse"}[r["task"]]
        )
        assert all(
            isinstance(r[k], float) and math.isfinite(r[k])
            for k in ("clean", "embed_attack", "task_attack")
        )
    assert {r["encoder_type"] for r in rows} == {"standard", "deacl"}
    assert load_results(out)["rows"] == rows
    assert results["versions"]["torch"] == torch.__version__
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"eps_curves_classification.png", "deacl_history.png"} <= figures
    assert any(name.startswith("gallery_shapes_segmentation") for name in figures)


def test_strong_suite_adds_the_strong_attack_column(tmp_path):
    spec = tiny_spec(deacl=False, curve=False)
    spec = dataclasses.replace(
        spec, attack=dataclasses.replace(spec.attack, suite=("paper", "strong"), strong_steps=2)
    )
    results = run_benchmark(spec, out=tmp_path, progress=False)
    assert len(results["rows"]) == 3
    for r in results["rows"]:
        assert isinstance(r["strong_attack"], float) and math.isfinite(r["strong_attack"])
        worse_or_equal = (
            r["strong_attack"] >= r["clean"] - 1e-9
            if r["task"] == "depth"
            else r["strong_attack"] <= r["clean"] + 1e-9
        )
        assert worse_or_equal, r
    tables = (tmp_path / "tables.md").read_text()
    assert "| strong_attack Accuracy ↑ |" in tables and "| strong_attack RMSE ↓ |" in tables
    header = (tmp_path / "results.csv").read_text().splitlines()[0]
    assert header.endswith(",task_attack,strong_attack")


def test_curves_end_at_the_main_result(finished):
    _, results = finished
    for c in results["curves"]:
        row = next(
            r for r in results["rows"] if r["task"] == c["task"] and r["encoder"] == c["encoder"]
        )
        assert c["eps"][0] == 0.0 and c["eps"][-1] == pytest.approx(8 / 255)
        assert len(c["eps"]) == len(c["values"]) == 3
        # the curve uses the first curve_subset images; with 8 eval images and 4 on the curve
        # the end point is a metric on a prefix of the same adversarial examples
        assert all(math.isfinite(v) for v in c["values"])
        assert row["metric"] == c["metric"]


def test_embed_attack_examples_computed_once_per_token_type(finished):
    _, results = finished
    per = [(e["encoder"], e["tokens"], e["heads"]) for e in results["timings"]["embed_attacks"]]
    assert sorted(per) == sorted(
        [
            ("tiny", "cls", 1),
            ("tiny", "patch", 2),
            ("tiny_deacl", "cls", 1),
            ("tiny_deacl", "patch", 2),
        ]
    )
    assert results["timings"]["embed_attack_saved_seconds"] > 0


def test_deacl_history_recorded(finished):
    _, results = finished
    hist = results["deacl_history"]
    assert [h["epoch"] for h in hist] == [0, 1]
    for h in hist:
        assert -1 <= h["clean_alignment"] <= 1 and -1 <= h["embed_cosine"] <= 1
        assert 0 <= h["clean_accuracy"] <= 1
    assert hist[0]["clean_alignment"] == pytest.approx(1.0, abs=1e-5)  # student == teacher


def test_rerun_skips_finished_cells_and_refuses_other_configs(finished, tmp_path):
    out, _ = finished
    before = json.loads((out / "results.json").read_text())
    again = run_benchmark(tiny_spec(), out=out, progress=False)
    assert again["rows"] == before["rows"]
    assert again["timings"]["embed_attacks"] == []  # nothing recomputed
    with pytest.raises(ValueError, match=r"different benchmark config.*--force"):
        run_benchmark(tiny_spec(steps=3), out=out, progress=False)


def test_force_starts_over_and_resume_after_partial_run(tmp_path):
    spec = tiny_spec(deacl=False, curve=False)
    out = tmp_path / "run"
    full = run_benchmark(spec, out=out, progress=False, render=False)
    # drop one finished cell: a rerun computes only that one
    data = json.loads((out / "results.json").read_text())
    data["rows"] = data["rows"][:2]
    (out / "results.json").write_text(json.dumps(data))
    resumed = run_benchmark(spec, out=out, progress=False, render=False)
    assert [r["task"] for r in resumed["rows"]] == [r["task"] for r in full["rows"]]
    for a, b in zip(resumed["rows"], full["rows"], strict=True):
        for key in ("clean", "embed_attack", "task_attack"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a, key)
    other = tiny_spec(steps=1, deacl=False, curve=False)
    forced = run_benchmark(other, out=out, force=True, progress=False, render=False)
    assert len(forced["rows"]) == 3


def test_missing_dataset_root_is_reported(tmp_path):
    spec = BenchSpec(
        encoders=(EncoderSpecEntry(name="tiny", registry="vit_test"),),
        datasets=(
            DatasetSpec(
                name="c10",
                dataset="cifar10",
                tasks=("classification",),
                root=str(tmp_path / "nope"),
                image_size=16,
            ),
        ),
    )
    with pytest.raises(FileNotFoundError, match="expected this layout"):
        run_benchmark(spec, out=tmp_path / "o", progress=False)


TINY_TOML = """
threads = 1
[attack]
steps = 2
curve_eps = []
[eval]
subset = 8
batch_size = 4
gallery = 2
[heads.classification]
epochs = 1
train_size = 16
batch_size = 8
[heads.segmentation]
epochs = 1
train_size = 16
batch_size = 8
[heads.depth]
epochs = 1
train_size = 16
batch_size = 8
[[encoders]]
name = "tiny"
registry = "vit_test"
[[datasets]]
name = "shapes"
dataset = "shapes"
tasks = ["classification", "segmentation", "depth"]
image_size = 16
options = { size = 32 }
"""


def test_torchrun_runs_one_benchmark_equal_to_the_single_process_run(tmp_path):
    """`torchrun -m ssl_robust bench`: the library joins the group itself, shards the
    evaluation, all-reduces the metrics; rank 0 writes results equal to a 1-process run."""
    import os
    import subprocess
    import sys

    from ssl_robust.bench import load_spec

    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    out = tmp_path / "dist"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", "-m", "ssl_robust", "bench", "--config", str(config),
           "--out", str(out), "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, timeout=240, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dist_res = load_results(out)
    assert dist_res["world_size"] == 2
    single = run_benchmark(load_spec(config), out=tmp_path / "one", progress=False, render=False)
    assert single["world_size"] == 1
    assert len(dist_res["rows"]) == len(single["rows"]) == 3
    for a, b in zip(dist_res["rows"], single["rows"], strict=True):
        for key in ("clean", "embed_attack", "task_attack"):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), (a["task"], key)
    for sub in ("heads", "galleries"):
        assert sorted(p.name for p in (out / sub).iterdir()) == sorted(
            p.name for p in (tmp_path / "one" / sub).iterdir()
        )
    assert not list(out.rglob("*.tmp"))


def test_window_trains_segmentation_on_crops_and_evaluates_by_sliding_window(tmp_path):
    import dataclasses

    from ssl_robust.adaptors import SlidingWindow
    from ssl_robust.bench.context import RunContext
    from ssl_robust.bench.data import dataset_info, open_dataset
    from ssl_robust.bench.heads import trained_model
    from ssl_robust.bench.store import ResultsStore
    from ssl_robust.encoders import create_encoder

    base = tiny_spec(deacl=False, curve=False)
    ds = dataclasses.replace(base.datasets[0], tasks=("segmentation", "depth"), window=8)
    spec = dataclasses.replace(base, datasets=(ds,))
    store = ResultsStore(tmp_path, spec)
    store.prepare(force=False)
    ctx = RunContext(spec=spec, store=store, device=torch.device("cpu"), progress=False)
    enc = create_encoder("vit_test").eval()
    info = dataset_info(open_dataset(ds, "val", subset=4, seed=0))
    seg = trained_model(ctx, "tiny", enc, ds, "segmentation", info)
    depth = trained_model(ctx, "tiny", enc, ds, "depth", info)
    assert isinstance(seg, SlidingWindow) and seg.window == (8, 8) and seg.stride == (4, 4)
    assert seg(torch.rand(2, 3, 16, 16)).shape == (2, info.seg_classes, 16, 16)
    # the depth head reads the last block without the final norm (DINOv2's linear protocol)
    assert depth.encoder.output_norm is False and enc.output_norm is True
    res = run_benchmark(spec, out=tmp_path / "run", progress=False, render=False)
    assert [r["task"] for r in res["rows"]] == ["segmentation", "depth"]
    assert all(math.isfinite(r[k]) for r in res["rows"] for k in ("clean", "task_attack"))


FAILING_WORKER = """
import os, sys
sys.path.insert(0, {tests!r})
from test_bench_runner import tiny_spec
from ssl_robust.bench import run_benchmark
if os.environ["RANK"] == "1":
    raise RuntimeError("rank 1 fails on purpose")
run_benchmark(tiny_spec(deacl=False, curve=False), out=sys.argv[1], progress=False)
"""


def test_a_failing_rank_stops_every_rank_with_its_error(tmp_path):
    """Rank 0 waits in the runner's first collective; rank 1 dies: torchrun ends both."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    worker = tmp_path / "worker.py"
    worker.write_text(FAILING_WORKER.format(tests=str(Path(__file__).parent)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29541", str(worker), str(tmp_path / "out")]  # fmt: skip
    # a hang would raise subprocess.TimeoutExpired
    proc = subprocess.run(cmd, timeout=120, env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "rank 1 fails on purpose" in proc.stderr


def test_full_images_are_evaluated_whole_by_the_sliding_window(tmp_path):
    """Segmentation on an ADE20K-layout fixture with images of different sizes: heads train on
    window crops of the centre crops, evaluation runs on whole images (one per batch)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    base = tmp_path / "ade" / "ADEChallengeData2016"
    for part, sizes in (
        ("training", [(20, 28), (24, 20), (18, 30)]),
        ("validation", [(20, 26), (26, 18)]),
    ):
        (base / "images" / part).mkdir(parents=True)
        (base / "annotations" / part).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(img).save(base / "images" / part / f"{i}.jpg")
            ann = rng.integers(0, 4, (h, w), dtype=np.uint8)
            Image.fromarray(ann).save(base / "annotations" / part / f"{i}.png")
    spec = BenchSpec(
        encoders=(EncoderSpecEntry(name="tiny", registry="vit_test"),),
        datasets=(
            DatasetSpec(
                name="ade",
                dataset="ade20k",
                root=str(tmp_path / "ade"),
                tasks=("segmentation",),
                image_size=16,
                window=8,
                full_images=True,
            ),
        ),
        attack=AttackSpec(steps=1, curve_eps=(2 / 255,), curve_subset=2),
        heads={"segmentation": HeadSpec(epochs=1, batch_size=2)},
        eval=EvalSpec(subset=None, batch_size=4, gallery=2),
        threads=1,
    )
    res = run_benchmark(spec, out=tmp_path / "out", progress=False)
    (row,) = res["rows"]
    assert all(0.0 <= row[k] <= 1.0 for k in ("clean", "embed_attack", "task_attack"))
    gallery = torch.load(tmp_path / "out" / res["galleries"][0]["file"], weights_only=True)
    # two whole images, 20×26 and 26×18 resized to 16×20 and 23×16: padded to 23×20
    assert tuple(gallery["images"].shape) == (2, 3, 23, 20)
    assert tuple(gallery["target"].shape) == (2, 23, 20)
    assert int(gallery["target"][0, 16:].min()) == 255  # the padding is ignored


def test_check_writes_checks_and_marks_flagged_cells(tmp_path):
    spec = tiny_spec(deacl=False, curve=False)
    spec = dataclasses.replace(
        spec,
        attack=dataclasses.replace(spec.attack, check=True, check_subset=4, check_queries=10),
    )
    results = run_benchmark(spec, out=tmp_path, progress=False)
    checks = results["checks"]
    # one check per cell and attack: the task attack and the shared EmbedAttack
    cells = {(c["task"], c["attack"]) for c in checks}
    assert cells == {(t, a) for t in ("classification", "segmentation", "depth")
                     for a in ("embed_attack", "task_attack")}  # fmt: skip
    for c in checks:
        assert c["status"] in ("pass", "warn", "fail")
        assert c["report"]["samples"] == 4
        assert c["report"]["rows"][0]["indicator"] == "unavailable_gradients"
        assert set(c["failed"]) == {r["indicator"] for r in c["report"]["rows"]
                                    if r["status"] == "fail"}  # fmt: skip
    assert results["timings"]["checks_seconds"] > 0
    md = (tmp_path / "checks.md").read_text()
    assert md.startswith("# Evaluation checks") and md.count("| indicator | value |") == 6
    assert json.loads((tmp_path / "checks.json").read_text()) == checks
    tables = (tmp_path / "tables.md").read_text()
    flagged = [c for c in checks if c["status"] in ("warn", "fail")]
    for c in flagged:  # a mark in the table and a footnote naming the indicators
        mark = "⚠" if c["status"] == "warn" else "✗"
        assert f"{mark} shapes / tiny, {c['attack']}: the evaluation check" in tables
    marks = tables.count(" ⚠ |") + tables.count(" ✗ |") + tables.count(" ⚠ ") + tables.count(" ✗ ")
    assert marks >= len(flagged)


def test_check_in_the_report_marks_cells(tmp_path):
    from ssl_robust.bench.report import write_tables

    row = {"task": "classification", "dataset": "d", "encoder": "e", "encoder_type": "standard",
           "metric": "accuracy", "clean": 0.9, "embed_attack": 0.5, "task_attack": 0.4}  # fmt: skip
    check = {"task": "classification", "dataset": "d", "encoder": "e",
             "encoder_type": "standard", "attack": "task_attack", "status": "fail",
             "failed": ["unavailable_gradients"], "warned": [], "report": None}  # fmt: skip
    paths = write_tables({"rows": [row], "checks": [check]}, tmp_path)
    tables = paths["markdown"].read_text()
    assert "| d | e | Standard | 0.90 | 0.50 | 0.40 ✗ |" in tables
    assert "✗ d / e, task_attack: the evaluation check failed (unavailable_gradients)" in tables
    assert paths["checks_markdown"].read_text().count("FAIL") == 1
    with pytest.raises(ValueError, match="'status' one of"):
        write_tables({"rows": [row], "checks": [{**check, "status": "bad"}]}, tmp_path)

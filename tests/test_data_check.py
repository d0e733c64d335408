"""``check_dataset`` / ``ssl-robust data check``, the dry-run's use of it, and the distributed
NYU / Hugging Face forms loaded through the benchmark runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers_data import nyu_file_list, nyu_labeled, png16
from PIL import Image

from ssl_robust.bench import run_benchmark
from ssl_robust.bench.plan import plan_benchmark
from ssl_robust.bench.spec import (
    AttackSpec,
    BenchSpec,
    DatasetSpec,
    EncoderSpecEntry,
    EvalSpec,
    HeadSpec,
)
from ssl_robust.cli import main
from ssl_robust.data import check_dataset, create_dataset

RNG = np.random.default_rng(0)


def _nyu_h5(root: Path, n: int = 4, h: int = 24, w: int = 32, scale: float = 1.0) -> None:
    h5py = pytest.importorskip("h5py", reason="the NYU HDF5 reader needs h5py (dev extra)")
    for part, folder in (("train", "living_room_0001a"), ("val", "official")):
        for i in range(n):
            path = root / "nyudepthv2" / part / folder / f"{i + 1:05d}.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(path, "w") as f:
                f.create_dataset("rgb", data=RNG.integers(0, 256, (3, h, w), dtype=np.uint8))
                depth = RNG.uniform(0.5, 9.5, (h, w)).astype(np.float32) * scale
                depth[0, :4] = 0.0  # a few invalid pixels
                f.create_dataset("depth", data=depth)


def test_check_reports_layout_counts_and_one_sample(tmp_path: Path) -> None:
    _nyu_h5(tmp_path, n=3)
    report = check_dataset("nyu_depth_v2", tmp_path)
    assert report.usable and report.problems == []
    assert [(s.split, s.count, s.layout) for s in report.splits] == [
        ("train", 3, "fast-depth-h5"),
        ("val", 3, "fast-depth-h5"),
    ]
    depth = report.splits[1].sample["depth"]
    assert depth["shape"] == (24, 32) and depth["dtype"] == "float32" and depth["min"] == 0.0
    assert (
        0.5 <= depth["max"] <= 9.5
        and depth["valid"] == f"{100 * (1 - 4 / 768):.1f}% in (0.001, 10] m"
    )
    image = report.splits[0].sample["image"]
    assert image["shape"] == (3, 24, 32) and 0 <= image["min"] <= image["max"] <= 1
    text = report.to_text()
    assert "train: 3 samples, layout fast-depth-h5" in text and "usable: yes" in text
    assert "depth in metres, valid in (0.001, 10]" in text
    assert report.splits[0].notes == []  # no official size for NYU's train split (it varies)
    assert report.splits[1].notes == [
        "the official val split has 654 samples; this copy has 3 (a partial copy? results "
        "will not compare with published ones)"
    ]
    assert "    note: the official val split has 654 samples" in text
    assert report.to_dict()["splits"][0]["count"] == 3


def test_check_finds_depth_in_millimetres_read_as_metres(tmp_path: Path) -> None:
    _nyu_h5(tmp_path, n=1, scale=1000.0)
    report = check_dataset("nyu_depth_v2", tmp_path, split="val")
    assert not report.usable and len(report.splits) == 1
    assert "millimetres read as metres" in report.problems[0]
    with pytest.raises(ValueError, match="millimetres read as metres"):
        report.raise_if_unusable()


def test_check_label_and_mask_ranges(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="the hf_disk reader needs datasets")
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.Value("int64"),
         "annotation": datasets.Image()}
    )  # fmt: skip
    img = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    mask = np.full((8, 8), 12, dtype=np.uint8)
    mask[0, 0] = 255
    data = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(img)], "label": [5], "annotation": [Image.fromarray(mask)]},
        features=features,
    )
    datasets.DatasetDict({"train": data}).save_to_disk(str(tmp_path))
    report = check_dataset("hf_disk", tmp_path, split="train", num_classes=3, seg_classes=10)
    assert not report.usable
    assert any("label 5 outside [0, 2] of 3 classes" in p for p in report.problems)
    assert any("mask values [12] outside [0, 9] (ignore index 255)" in p for p in report.problems)
    good = check_dataset("hf_disk", tmp_path, split="train", num_classes=6, seg_classes=13)
    assert good.usable and good.splits[0].sample["mask"]["classes seen"] == 1


def test_cli_data_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _nyu_h5(tmp_path, n=2)
    assert main(["data", "check", "nyu_depth_v2", str(tmp_path), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "val: 2 samples, layout fast-depth-h5" in out and "train" not in out.split("\n")[1]
    assert main(["data", "check", "nyu_depth_v2", str(tmp_path / "empty")]) == 2
    out = capsys.readouterr().out
    assert "usable: NO — to fix:" in out and "fast-depth-h5: nyudepthv2/{train,val}" in out
    assert main(["data", "check", "shapes", "--option", "size=4", "--option", "image_size=16"]) == 0
    assert "train: 4 samples" in capsys.readouterr().out
    assert main(["data", "check", "nyu_depht_v2", str(tmp_path)]) == 2
    assert "did you mean 'nyu_depth_v2'" in capsys.readouterr().err


def _nyu_spec(root: Path) -> BenchSpec:
    return BenchSpec(
        encoders=(EncoderSpecEntry(name="tiny", registry="vit_test"),),
        datasets=(
            DatasetSpec(
                name="nyu",
                dataset="nyu_depth_v2",
                tasks=("depth",),
                root=str(root),
                image_size=16,
            ),
        ),
        attack=AttackSpec(steps=1, curve_eps=()),
        heads={"depth": HeadSpec(epochs=1, train_size=4, batch_size=4)},
        eval=EvalSpec(subset=4, batch_size=4, gallery=1),
        threads=1,
    )


def test_dry_run_uses_the_checks(tmp_path: Path) -> None:
    _nyu_h5(tmp_path / "good", n=2)
    plan = plan_benchmark(_nyu_spec(tmp_path / "good"))
    assert [c["dataset"] for c in plan.cells] == ["nyu"]
    with pytest.raises(FileNotFoundError, match=r"(?s)no accepted layout matched.*- labeled-mat:"):
        plan_benchmark(_nyu_spec(tmp_path / "missing"))
    _nyu_h5(tmp_path / "mm", n=1, scale=1000.0)
    with pytest.raises(ValueError, match=r"dataset 'nyu_depth_v2' at .*millimetres"):
        plan_benchmark(_nyu_spec(tmp_path / "mm"))


def test_distributed_nyu_runs_through_the_benchmark(tmp_path: Path) -> None:
    _nyu_h5(tmp_path / "nyu", n=4)
    results = run_benchmark(_nyu_spec(tmp_path / "nyu"), out=tmp_path / "out", progress=False)
    (row,) = results["rows"]
    assert row["task"] == "depth" and row["metric"] == "rmse"
    assert all(np.isfinite(row[k]) and row[k] > 0 for k in ("clean", "embed_attack", "task_attack"))
    assert torch.tensor(row["clean"]) < 20  # metres, not millimetres


def test_docs_list_every_layout_with_its_check_command() -> None:
    from ssl_robust.data import list_datasets
    from ssl_robust.data.hf import HF_COLUMN_GUESSES
    from ssl_robust.data.imagenet import IMAGENET_LAYOUTS
    from ssl_robust.data.nyu import EIGEN_CROP, NYU_LAYOUTS

    page = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    layouts = page[page.index("## Layouts") : page.index("## Transforms")]
    for name in list_datasets():
        assert f"`ssl-robust data check {name}" in layouts, name
    for key in NYU_LAYOUTS:
        assert f"| `{key}` |" in layouts, key
    for needle in ("ILSVRC2012_validation_ground_truth.txt", "meta.mat", "LOC_val_solution.csv",
                   "LOC_synset_mapping.txt", "ILSVRC/Data/CLS-LOC"):  # fmt: skip
        assert needle in layouts, needle
    assert len(IMAGENET_LAYOUTS) == 2 and "flat" in layouts
    for names in HF_COLUMN_GUESSES.values():
        for column in names:
            assert f"`{column}`" in layouts or f"{column}`" in layouts, column
    top, bottom, left, right = EIGEN_CROP
    crop = f"rows {top}–{bottom - 1}"
    assert f"{crop} and columns {left}–{right - 1}" in layouts.replace("\n", " ")
    bench = (Path(__file__).resolve().parents[1] / "docs" / "benchmark.md").read_text()
    assert f"{crop}, columns {left}–{right - 1}" in bench.replace("\n", " ")
    assert "depth / 1000 = metres" in layouts


def _form(root: Path, layout: str) -> None:
    """Two test images (and some train images) in one distributed NYU form."""
    if layout == "fast-depth-h5":
        _nyu_h5(root, n=2)
    elif layout == "labeled-mat":
        pytest.importorskip("h5py", reason="the .mat reader needs h5py")
        pytest.importorskip("scipy", reason="splits.mat (MATLAB v5) is read with scipy")
        nyu_labeled(root)  # 3 train, 2 test
    elif layout == "file-list":
        nyu_file_list(root)
    elif layout == "png-pairs":
        for part in ("train", "test"):
            for i in range(2):
                (root / part / "rgb").mkdir(parents=True, exist_ok=True)
                img = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / part / "rgb" / f"{i}.png")
                png16(root / part / "depth" / f"{i}.png", RNG.uniform(1, 9, (8, 8)))
    else:
        datasets = pytest.importorskip("datasets", reason="the hf reader needs datasets")
        feats = datasets.Features({"image": datasets.Image(), "depth_map": datasets.Image()})
        part = datasets.Dataset.from_dict(
            {
                "image": [Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))] * 2,
                "depth_map": [Image.fromarray(np.full((8, 8), 2.5, np.float32), mode="F")] * 2,
            },
            features=feats,
        )
        datasets.DatasetDict({"train": part, "validation": part}).save_to_disk(str(root))


@pytest.mark.parametrize("layout", ["hf", "labeled-mat", "fast-depth-h5", "file-list", "png-pairs"])
def test_check_reports_every_nyu_form(tmp_path: Path, layout: str) -> None:
    _form(tmp_path, layout)
    report = check_dataset("nyu_depth_v2", tmp_path, read_all=True)
    assert report.usable, report.problems
    assert [s.layout for s in report.splits] == [layout, layout]
    assert report.splits[1].count == 2
    depth = report.splits[1].sample["depth"]
    assert depth["dtype"] == "float32" and 0 < depth["max"] <= 10


def test_labeled_mat_dataset_pickles_after_reading(tmp_path: Path) -> None:
    import pickle

    _form(tmp_path, "labeled-mat")
    ds = create_dataset("nyu_depth_v2", tmp_path, "val")
    first = ds[0]["depth"]
    again = pickle.loads(pickle.dumps(ds))  # what spawn-started DataLoader workers do
    assert torch.equal(again[0]["depth"], first)


def test_check_all_finds_a_truncated_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _nyu_h5(tmp_path, n=3)
    bad = tmp_path / "nyudepthv2" / "val" / "official" / "00003.h5"
    bad.write_bytes(bad.read_bytes()[:1000])
    assert check_dataset("nyu_depth_v2", tmp_path, split="val").usable  # sample 0 is fine
    report = check_dataset("nyu_depth_v2", tmp_path, split="val", read_all=True)
    (problem,) = report.problems
    assert problem.startswith(
        f"val: 1 of 3 samples cannot be read (indices 2); the first: cannot read {bad}: "
    )
    assert "truncated or not HDF5" in report.problems[0]
    assert main(["data", "check", "nyu_depth_v2", str(tmp_path), "--split", "val", "--all"]) == 2
    assert "00003.h5" in capsys.readouterr().out


def test_a_hugging_face_folder_given_to_a_named_reader_gets_the_hf_disk_hint(
    tmp_path: Path,
) -> None:
    _form(tmp_path, "hf")
    report = check_dataset("ade20k", tmp_path, split="val")
    assert not report.usable
    assert "ADE20K not found" in report.problems[0]
    assert "is a Hugging Face save_to_disk folder: read it as 'hf_disk'" in report.problems[1]


def test_dry_run_reads_only_the_train_split_of_a_deacl_only_dataset(tmp_path: Path) -> None:
    for wnid in ("n01", "n02"):  # ImageNet with train/ only: DeACL reads nothing else
        (tmp_path / "train" / wnid).mkdir(parents=True)
        img = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(img).save(tmp_path / "train" / wnid / "a.JPEG")
    spec = _nyu_spec(tmp_path)
    _nyu_h5(tmp_path / "nyu", n=2)
    spec = BenchSpec(
        encoders=spec.encoders,
        datasets=(
            DatasetSpec(
                name="nyu",
                dataset="nyu_depth_v2",
                tasks=("depth",),
                root=str(tmp_path / "nyu"),
                image_size=16,
            ),
            DatasetSpec(
                name="inet", dataset="imagenet", tasks=(), root=str(tmp_path), image_size=16
            ),
        ),
        eval=spec.eval,
    )
    assert [c["dataset"] for c in plan_benchmark(spec).cells] == ["nyu"]
    assert not check_dataset("imagenet", tmp_path).usable  # no val: the check says so

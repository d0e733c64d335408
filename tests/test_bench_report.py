"""The benchmark report: results.json → results.csv, tables.md and PNG figures."""

from __future__ import annotations

import copy
import csv
import json
import math
import sys

import pytest
import torch

from ssl_robust.bench import load_results, render_report, write_figures, write_tables
from ssl_robust.bench._plots import _amplified, _mask_rgb

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIELDS = [
    "task",
    "dataset",
    "encoder",
    "encoder_type",
    "metric",
    "clean",
    "embed_attack",
    "task_attack",
    "strong_attack",
]
METRIC = {"classification": "accuracy", "segmentation": "miou", "depth": "rmse"}


def _row(task, dataset, encoder, encoder_type, clean, embed, attack):
    return dict(
        zip(
            FIELDS[:-1],  # no strong_attack: the paper suite
            [task, dataset, encoder, encoder_type, METRIC[task], clean, embed, attack],
            strict=True,
        )
    )


ROWS = [  # deliberately unsorted
    _row("depth", "nyu", "vit_a", "standard", 0.49, 1.54, 2.6),
    _row("classification", "cifar10", "vit_b", "deacl", 0.91, 0.73, 0.02),
    _row("classification", "cifar10", "vit_b", "standard", 0.94, 0.01, 0.0),
    _row("segmentation", "voc", "vit_a", "standard", 0.83, 0.0, 0.01),
    _row("classification", "cifar10", "vit_a", "standard", 0.93, 0.1, None),
    _row("classification", "animals", "vit_b", "standard", 0.5, math.nan, 0.25),
]


def _ident(task, encoder="vit_a", encoder_type="standard", dataset="shapes"):
    return {"task": task, "dataset": dataset, "encoder": encoder, "encoder_type": encoder_type}


def _gallery(task, n=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g)
    sign = torch.randint(0, 2, images.shape, generator=g).float() * 2 - 1
    embed_adv = (images + 8 / 255 * sign).clamp(0, 1)
    task_adv = (images - 4 / 255 * sign).clamp(0, 1)
    if task == "classification":
        target = torch.randint(0, 10, (n,), generator=g)
        preds = [torch.randint(0, 10, (n,), generator=g) for _ in range(3)]
    elif task == "segmentation":
        target = torch.randint(0, 5, (n, size, size), generator=g)
        target[:, :3] = 255
        preds = [torch.randint(0, 5, (n, size, size), generator=g) for _ in range(3)]
    else:
        target = 0.5 + 9 * torch.rand(n, size, size, generator=g)
        preds = [0.5 + 9 * torch.rand(n, size, size, generator=g) for _ in range(3)]
    return {
        "images": images,
        "embed_adv": embed_adv,
        "task_adv": task_adv,
        "target": target,
        "pred_clean": preds[0],
        "pred_embed": preds[1],
        "pred_task": preds[2],
    }


def _full_results(out_dir):
    (out_dir / "galleries").mkdir(parents=True)
    galleries = []
    for task in ("classification", "segmentation", "depth"):
        rel = f"galleries/shapes__{task}__vit_a.pt"
        torch.save(_gallery(task), out_dir / rel)
        galleries.append({**_ident(task), "file": rel})
    eps = [0.0, 2 / 255, 4 / 255, 8 / 255]
    curves = [
        {**_ident(task, enc, etype), "metric": METRIC[task], "attack": attack, "eps": eps,
         "values": [0.9, 0.6 - 0.1 * i, 0.3, None] if attack == "embed_attack"
         else [0.9, 0.2, 0.1 * i, 0.0]}
        for task in ("classification", "depth")
        for i, (enc, etype) in enumerate([("vit_a", "standard"), ("vit_a_deacl", "deacl")])
        for attack in ("embed_attack", "task_attack")
    ]  # fmt: skip
    history = [
        {"encoder": "vit_a_deacl", "epoch": e, "loss": -1.0 - e, "clean_alignment": 1 - 0.02 * e,
         "embed_cosine": 0.3 + 0.1 * e, "clean_accuracy": 0.9 - 0.01 * e,
         "embed_accuracy": 0.2 + 0.1 * e}
        for e in range(1, 5)
    ]  # fmt: skip
    return {
        "rows": ROWS,
        "curves": curves,
        "deacl_history": history,
        "galleries": galleries,
        "config": {"seed": 0},
        "versions": {"ssl_robust": "0.0.0", "torch": torch.__version__, "python": "3"},
        "timings": {"total": 12.5, "tasks": {"classification": 3.25}},
    }


def _dump(out_dir, results):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results), encoding="utf-8")


def _tables(md):
    """Split tables.md into {title: [table lines + change lines]}."""
    sections, title = {}, None
    for line in md.splitlines():
        if line.startswith("### "):
            title = line[4:]
            sections[title] = []
        elif line.startswith("#"):
            title = None
        elif title is not None and line:
            sections[title].append(line)
    return sections


def _assert_png(path):
    mpl_image = pytest.importorskip("matplotlib.image")
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = mpl_image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert float(pixels[..., :3].var()) > 0


# --- tables ---------------------------------------------------------------------------------


def test_csv_has_every_row_in_the_contract_order(tmp_path):
    paths = write_tables({"rows": ROWS}, tmp_path)
    assert paths["csv"] == tmp_path / "results.csv"
    with paths["csv"].open(newline="", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    assert lines[0] == FIELDS
    assert len(lines) == len(ROWS) + 1
    for row, line in zip(ROWS, lines[1:], strict=True):
        assert line[:5] == [row[k] for k in FIELDS[:5]]
        for key, cell in zip(FIELDS[5:], line[5:], strict=True):
            value = row.get(key)  # strong_attack: only when the strong suite ran
            if value is None or math.isnan(value):
                assert cell == ""
            else:
                assert float(cell) == value  # full precision round trip


def test_tables_md_follows_the_paper_layout(tmp_path):
    md = write_tables({"rows": ROWS}, tmp_path)["markdown"].read_text(encoding="utf-8")
    sections = _tables(md)
    assert list(sections) == [
        "Table 1: classification accuracy (↑)",
        "Table 2: segmentation mIoU (↑)",
        "Table 3: depth RMSE (↓)",
    ]
    cls = sections["Table 1: classification accuracy (↑)"]
    assert cls[0] == (
        "| Dataset | Encoder | Encoder Type | Clean Accuracy ↑ | EmbedAttack Accuracy ↑ "
        "| PGD Accuracy ↑ |"
    )
    assert cls[1].count("---") == 6
    assert cls[2:6] == [
        "| animals | vit_b | Standard | 0.50 | – | 0.25 |",
        "| cifar10 | vit_a | Standard | 0.93 | 0.10 | – |",
        "| cifar10 | vit_b | Standard | 0.94 | 0.01 | 0.00 |",
        "| cifar10 | vit_b | DeACL | 0.91 | 0.73 | 0.02 |",
    ]
    assert cls[6:] == [
        "- animals / vit_b (Standard) — EmbedAttack: accuracy – vs clean 0.50 (–); "
        "PGD: accuracy 0.25 vs clean 0.50 (−50 %)",
        "- cifar10 / vit_a (Standard) — EmbedAttack: accuracy 0.10 vs clean 0.93 (−89 %); "
        "PGD: accuracy – vs clean 0.93 (–)",
        "- cifar10 / vit_b (Standard) — EmbedAttack: accuracy 0.01 vs clean 0.94 (−99 %); "
        "PGD: accuracy 0.00 vs clean 0.94 (−100 %)",
        "- cifar10 / vit_b (DeACL) — EmbedAttack: accuracy 0.73 vs clean 0.91 (−20 %); "
        "PGD: accuracy 0.02 vs clean 0.91 (−98 %)",
    ]
    seg = sections["Table 2: segmentation mIoU (↑)"]
    assert seg[0] == (
        "| Dataset | Encoder | Encoder Type | Clean mIoU ↑ | EmbedAttack mIoU ↑ | SegPGD mIoU ↑ |"
    )
    assert seg[2] == "| voc | vit_a | Standard | 0.83 | 0.00 | 0.01 |"
    assert seg[3].endswith(
        "EmbedAttack: mIoU 0.00 vs clean 0.83 (−100 %); SegPGD: mIoU 0.01 vs clean 0.83 (−99 %)"
    )
    depth = sections["Table 3: depth RMSE (↓)"]
    assert depth[0] == (
        "| Dataset | Encoder | Encoder Type | Clean RMSE ↓ | EmbedAttack RMSE ↓ | DepthPGD RMSE ↓ |"
    )
    assert depth[2] == "| nyu | vit_a | Standard | 0.49 | 1.54 | 2.60 |"
    assert depth[3].endswith("(+214 %); DepthPGD: RMSE 2.60 vs clean 0.49 (+431 %)")


def test_strong_attack_column_in_csv_and_tables(tmp_path):
    row = {
        "task": "segmentation", "dataset": "shapes", "encoder": "vit", "encoder_type": "standard",
        "metric": "miou", "clean": 0.5, "embed_attack": 0.2, "task_attack": 0.1,
        "strong_attack": 0.05,
    }  # fmt: skip
    paths = write_tables({"rows": [row]}, tmp_path)
    with paths["csv"].open(newline="", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    assert lines[0][-1] == "strong_attack" and float(lines[1][-1]) == 0.05
    md = paths["markdown"].read_text().splitlines()
    header = next(line for line in md if line.startswith("| Dataset"))
    assert header.endswith("| SegPGD mIoU ↑ | strong_attack mIoU ↑ |")
    assert "| shapes | vit | Standard | 0.50 | 0.20 | 0.10 | 0.05 |" in md
    assert any("strong_attack: mIoU 0.05 vs clean 0.50 (−90 %)" in line for line in md)
    with pytest.raises(ValueError, match="strong_attack"):
        write_tables({"rows": [{**row, "strong_attack": "high"}]}, tmp_path)


def test_tables_md_only_has_the_tasks_present_and_extras(tmp_path):
    rows = [r for r in ROWS if r["task"] == "segmentation"]
    results = {"rows": rows, "versions": {"torch": "9.9"}, "timings": {"a": {"b": 1.234}}}
    md = write_tables(results, tmp_path)["markdown"].read_text(encoding="utf-8")
    assert list(_tables(md)) == ["Table 2: segmentation mIoU (↑)"]
    assert "torch 9.9" in md
    assert "| a/b | 1.23 |" in md
    md = write_tables({"rows": []}, tmp_path)["markdown"].read_text(encoding="utf-8")
    assert _tables(md) == {} and "No results" in md


# --- figures --------------------------------------------------------------------------------


def test_render_report_writes_tables_and_every_figure(tmp_path):
    pytest.importorskip("matplotlib")
    _dump(tmp_path, _full_results(tmp_path))
    report = render_report(tmp_path)
    assert report["tables"] == {"csv": tmp_path / "results.csv", "markdown": tmp_path / "tables.md"}
    names = [p.name for p in report["figures"]]
    assert names == [
        "eps_curves_classification.png",
        "eps_curves_depth.png",
        "deacl_history.png",
        "gallery_shapes_classification_vit_a.png",
        "gallery_shapes_segmentation_vit_a.png",
        "gallery_shapes_depth_vit_a.png",
    ]
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(names)
    for path in report["figures"]:
        assert path.parent == tmp_path / "figures"
        _assert_png(path)


def test_no_figure_for_absent_sections(tmp_path):
    pytest.importorskip("matplotlib")
    assert write_figures({"rows": ROWS, "curves": [], "galleries": None}, tmp_path) == []
    assert not (tmp_path / "figures").exists()
    # a history without any plotted key gives no figure either
    history = [{"encoder": "e", "epoch": 1, "loss": -1.0}]
    assert write_figures({"rows": [], "deacl_history": history}, tmp_path) == []
    # one panel only when only accuracies were logged
    history = [{"encoder": "e", "epoch": e, "clean_accuracy": 0.1 * e} for e in (1, 2)]
    paths = write_figures({"rows": [], "deacl_history": history}, tmp_path)
    assert [p.name for p in paths] == ["deacl_history.png"]
    _assert_png(paths[0])


def test_gallery_names_never_collide(tmp_path):
    pytest.importorskip("matplotlib")
    torch.save(_gallery("segmentation", n=1), tmp_path / "g.pt")
    galleries = [
        {**_ident("segmentation", "vit/a", etype), "file": "g.pt"}
        for etype in ("standard", "deacl", "deacl")
    ]
    paths = write_figures({"rows": [], "galleries": galleries}, tmp_path)
    assert [p.name for p in paths] == [
        "gallery_shapes_segmentation_vit-a.png",
        "gallery_shapes_segmentation_vit-a_deacl.png",
        "gallery_shapes_segmentation_vit-a_deacl_2.png",
    ]


def test_amplified_perturbation_fills_the_unit_range():
    delta = torch.zeros(2, 3, 4, 4)
    delta[0, 0, 0, 0], delta[0, 1, 1, 1] = 4 / 255, -2 / 255
    amp, peak = _amplified(delta)
    assert amp.shape == (2, 4, 4, 3)
    assert amp[0].max() == pytest.approx(1.0) and amp[0].min() == pytest.approx(0.25)
    assert amp[0, 1, 1, 1] == pytest.approx(0.25) and amp[0, 2, 2, 2] == pytest.approx(0.5)
    assert (amp[1] == 0.5).all()  # no perturbation: flat grey, no division by zero
    assert peak.tolist() == pytest.approx([4 / 255, 0.0])


def test_mask_palette_is_fixed_and_ignore_is_black():
    palette = torch.rand(20, 3).numpy()
    mask = torch.tensor([[0, 1], [255, 21]])
    rgb = _mask_rgb(mask, palette)
    assert rgb.shape == (2, 2, 3)
    assert (rgb[0, 0] == palette[0]).all() and (rgb[0, 1] == palette[1]).all()
    assert (rgb[1, 0] == 0).all()
    assert (rgb[1, 1] == palette[1]).all()


# --- errors ---------------------------------------------------------------------------------


def test_missing_results_json_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run `ssl-robust bench --out .*` first"):
        render_report(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda r: r.pop("rows"), "'rows'"),
        (lambda r: r["rows"][1].pop("encoder_type"), r"rows\[1\] is missing .*'encoder_type'"),
        (lambda r: r["rows"][0].update(task="detection"), "valid tasks are: classification, "),
        (lambda r: r["rows"][0].update(metric="abs_rel"), "reports metric 'rmse'"),
        (lambda r: r["rows"][0].update(clean="0.5"), "must be a number or null"),
        (lambda r: r["curves"][0]["values"].pop(), "same length"),
        (lambda r: r["curves"][0].update(attack="fgsm"), "valid attacks are: embed_attack"),
        (lambda r: r["galleries"][0].pop("file"), "'file'"),
        (lambda r: r["galleries"][0].update(task="video"), "unknown task 'video'"),
    ],
)
def test_contract_violations_name_the_problem(tmp_path, mutate, match):
    results = copy.deepcopy(_full_results(tmp_path))
    mutate(results)
    _dump(tmp_path, results)
    with pytest.raises(ValueError, match=match):
        render_report(tmp_path)
    with pytest.raises(ValueError, match=match):
        write_tables(results, tmp_path / "other")


def test_malformed_json_is_a_value_error(tmp_path):
    (tmp_path / "results.json").write_text('{"rows": [', encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_results(tmp_path)


def test_broken_gallery_files(tmp_path):
    pytest.importorskip("matplotlib")
    entry = {**_ident("depth"), "file": "missing.pt"}
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        write_figures({"rows": [], "galleries": [entry]}, tmp_path)
    data = _gallery("depth")
    del data["pred_task"]
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="missing the tensor 'pred_task'"):
        write_figures({"rows": [], "galleries": [{**entry, "file": "bad.pt"}]}, tmp_path)
    data = _gallery("depth")
    data["target"] = data["target"][:, :4]
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"'target' must have shape \(3, 16, 16\)"):
        write_figures({"rows": [], "galleries": [{**entry, "file": "bad.pt"}]}, tmp_path)


def test_without_matplotlib_tables_are_written_and_figures_skipped(tmp_path, monkeypatch):
    _dump(tmp_path, _full_results(tmp_path))
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'ssl-robust\[bench\]'"):
        write_figures({"rows": []}, tmp_path)
    with pytest.warns(UserWarning, match="figures skipped"):
        report = render_report(tmp_path)
    assert report["figures"] == []
    assert report["tables"]["markdown"].is_file() and report["tables"]["csv"].is_file()
    assert not (tmp_path / "figures").exists()

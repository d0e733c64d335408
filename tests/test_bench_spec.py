"""Benchmark specs: TOML parsing, validation, fingerprints; the CLI's argument handling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _helpers_deacl import deacl_toml

from ssl_robust.bench.spec import (
    AttackSpec,
    BenchSpec,
    DatasetSpec,
    EncoderSpecEntry,
    default_spec,
    load_spec,
    parse_budget,
    spec_from_dict,
)
from ssl_robust.cli import main

MINIMAL = """
out = "runs/x"
[attack]
eps = "8/255"
step_size = 0.0078431
steps = 3
curve_eps = ["2/255"]
[eval]
subset = 8
[[encoders]]
name = "tiny"
registry = "vit_test"
[[encoders]]
name = "tiny_deacl"
[encoders.deacl]
base = "tiny"
dataset = "shapes"
config = { epochs = 1, warmup_epochs = 0 }
[[datasets]]
name = "shapes"
dataset = "shapes"
tasks = ["classification", "depth"]
image_size = 16
options = { size = 32 }
[heads.depth]
epochs = 1
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bench.toml"
    p.write_text(text)
    return p


def test_toml_round_trip(tmp_path):
    spec = load_spec(_write(tmp_path, MINIMAL))
    assert spec.attack.eps == pytest.approx(8 / 255)
    assert spec.attack.curve_eps == (pytest.approx(2 / 255),)
    assert spec.encoders[1].encoder_type == "deacl" and spec.encoders[0].encoder_type == "standard"
    assert spec.encoders[1].deacl.config == {"epochs": 1, "warmup_epochs": 0}
    assert spec.datasets[0].tasks == ("classification", "depth")
    assert spec.heads["depth"].epochs == 1
    assert spec.eval.subset == 8 and spec.out == "runs/x"
    assert spec_from_dict(spec.to_dict()).fingerprint() == spec.fingerprint()


def test_strong_suite_from_toml(tmp_path):
    assert load_spec(_write(tmp_path, MINIMAL)).attack.suite == ("paper",)
    text = MINIMAL.replace("steps = 3", 'steps = 3\nsuite = ["strong", "paper"]\nstrong_steps = 7')
    spec = load_spec(_write(tmp_path, text))
    assert spec.attack.suite == ("paper", "strong") and spec.attack.strong_steps == 7


def test_fingerprint_ignores_out_and_device_but_not_settings(tmp_path):
    spec = load_spec(_write(tmp_path, MINIMAL))
    moved = load_spec(_write(tmp_path, MINIMAL.replace('out = "runs/x"', 'out = "elsewhere"')))
    other = load_spec(_write(tmp_path, MINIMAL.replace("steps = 3", "steps = 4")))
    assert moved.fingerprint() == spec.fingerprint()
    assert other.fingerprint() != spec.fingerprint()


@pytest.mark.parametrize(
    ("old", "new", "exc", "match"),
    [
        (
            'out = "runs/x"',
            'outdir = "x"',
            ValueError,
            r"unknown key 'outdir' in the config; valid keys: encoders",
        ),
        (
            "steps = 3",
            "stepz = 3",
            ValueError,
            r"unknown key 'stepz' in attack; valid keys: eps, step_size, steps",
        ),
        (
            'registry = "vit_test"',
            'registry = "vit_test"\nweight = "x"',
            ValueError,
            r"'weight' in encoders\[0\]",
        ),
        ('eps = "8/255"', "eps = 8", ValueError, "did you mean 8/255"),
        ('eps = "8/255"', 'eps = "8 / 0"', ValueError, "fraction like '8/255'"),
        (
            'tasks = ["classification", "depth"]',
            'tasks = ["detection"]',
            ValueError,
            "tasks must be one of",
        ),
        (
            'base = "tiny"',
            'base = "nope"',
            ValueError,
            r"deacl.base must name another encoder entry; got 'nope'",
        ),
        (
            'dataset = "shapes"\nconfig',
            'dataset = "cifar"\nconfig',
            ValueError,
            "deacl.dataset must name a dataset entry",
        ),
        ("[heads.depth]", "[heads.detection]", ValueError, "heads must be one of"),
        ("steps = 3", 'steps = 3\nsuite = ["strong"]', ValueError, "must contain 'paper'"),
        ("steps = 3", 'steps = 3\nsuite = ["paper", "aa"]', ValueError, "unknown suite 'aa'"),
        ("steps = 3", "steps = 3\nstrong_steps = 0", ValueError, "strong_steps must be >= 1"),
        (
            'name = "tiny_deacl"',
            'name = "tiny"',
            ValueError,
            r"duplicate encoder names: \['tiny'\]",
        ),
    ],
)
def test_bad_configs(tmp_path, old, new, exc, match):
    assert old in MINIMAL
    with pytest.raises(exc, match=match):
        load_spec(_write(tmp_path, MINIMAL.replace(old, new, 1)))


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_spec(tmp_path / "none.toml")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_spec(_write(tmp_path, "out = [unclosed"))


def test_budget_parsing():
    assert parse_budget("eps", "8/255") == pytest.approx(8 / 255)
    assert parse_budget("eps", 0.5) == 0.5
    with pytest.raises(ValueError, match="did you mean 16/255"):
        parse_budget("eps", 16)
    with pytest.raises(ValueError, match="fraction"):
        parse_budget("eps", "__import__('os')")
    with pytest.raises(ValueError, match="did you mean"):
        AttackSpec(eps=8)


def test_default_spec_is_valid_and_runs_offline():
    spec = default_spec()
    assert isinstance(spec, BenchSpec)
    assert [e.encoder_type for e in spec.encoders] == ["standard", "deacl", "multitask"]
    assert spec.datasets[0].dataset == "shapes"
    assert set(spec.datasets[0].tasks) == {"classification", "segmentation", "depth"}
    assert spec.attack.eps == pytest.approx(8 / 255) and spec.attack.steps == 20
    assert spec.attack.step_size == pytest.approx(2 / 255) and spec.attack.random_start


def test_dataclass_validation():
    with pytest.raises(ValueError, match="needs registry="):
        BenchSpec(
            encoders=(EncoderSpecEntry(name="a"),),
            datasets=(DatasetSpec("d", "shapes", ("depth",)),),
        )
    with pytest.raises(ValueError, match="one dataset with tasks"):
        BenchSpec(
            encoders=(EncoderSpecEntry(name="a", registry="vit_test"),),
            datasets=(DatasetSpec("d", "shapes", ()),),  # a DeACL-only dataset alone
        )
    with pytest.raises(ValueError, match="window must be at most image_size=32; got 64"):
        DatasetSpec("d", "shapes", ("segmentation",), image_size=32, window=64)
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        BenchSpec(
            encoders=(EncoderSpecEntry(name="a", registry="vit_test"),),
            datasets=(DatasetSpec("d", "shapes", ("depth",)),),
            device="gpu",
        )


def test_paper_config_parses():
    spec = load_spec(Path(__file__).resolve().parents[1] / "configs" / "paper.toml")
    assert {e.name for e in spec.encoders} == {
        "dinov2_vits14",
        "dinov2_vitb14",
        "dino_vitb16",
        "dino_vitb16_deacl",
    }
    assert {d.name for d in spec.datasets} == {
        "imagenet",
        "cifar10",
        "cifar100",
        "stl10",
        "ade20k",
        "cityscapes",
        "voc2012",
        "nyu_depth_v2",
    }
    assert spec.attack.eps == pytest.approx(8 / 255)
    deacl = next(e.deacl for e in spec.encoders if e.deacl is not None)
    assert deacl.dataset == "imagenet" and deacl.batch_size == 128  # §4.2: ImageNet fine-tuning
    datasets = {d.name: d for d in spec.datasets}
    assert datasets["imagenet"].tasks == ()
    for name in ("ade20k", "cityscapes", "voc2012"):  # crops consistent with the window
        assert datasets[name].window == 224 and datasets[name].image_size == 448
        assert datasets[name].full_images  # whole images, as the paper evaluates


@pytest.mark.parametrize("cmd", [[], ["bench"], ["deacl"], ["report"]])
def test_cli_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: ssl-robust" in capsys.readouterr().out


def test_cli_errors_are_clear(tmp_path, capsys):
    bad = _write(tmp_path, MINIMAL.replace("steps = 3", "stepz = 3"))
    assert main(["bench", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "ssl-robust bench: error: unknown key 'stepz'" in err
    assert main(["bench", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "ssl-robust bench --out" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "ssl_robust", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("ssl-robust ")


def test_cli_deacl_fine_tunes_and_exports_loadable_weights(tmp_path, capsys):
    import torch

    from ssl_robust.encoders import create_encoder

    cfg = _write(tmp_path, deacl_toml(tmp_path / "run", extra='eps = "4/255"'))
    assert main(["deacl", "--config", str(cfg), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "epoch=1" in out and "create_encoder('vit_test'" in out
    enc = create_encoder("vit_test", checkpoint_path=tmp_path / "run" / "student.pt")
    assert enc(torch.rand(1, 3, 16, 16)).cls.shape == (1, 32)
    assert (tmp_path / "run" / "deacl_checkpoint.pt").exists()
    bad = _write(tmp_path, deacl_toml(tmp_path / "r2").replace("steps = 1", "stepz = 1"))
    assert main(["deacl", "--config", str(bad)]) == 2
    assert "unknown key 'stepz' in deacl" in capsys.readouterr().err


def test_default_spec_loads_the_shipped_deacl_weights():
    import torch

    from ssl_robust.bench.spec import DEFAULT_DEACL_WEIGHTS
    from ssl_robust.data import create_dataset
    from ssl_robust.encoders import create_encoder

    deacl = default_spec().encoders[1].deacl
    assert deacl is not None and deacl.checkpoint == str(DEFAULT_DEACL_WEIGHTS)
    assert default_spec(fine_tune=True).encoders[1].deacl.checkpoint is None  # type: ignore[union-attr]
    base = create_encoder("vit_tiny_shapes", pretrained=True).eval()
    tuned = create_encoder("vit_tiny_shapes").eval()
    tuned.load_state_dict(torch.load(DEFAULT_DEACL_WEIGHTS, weights_only=True))  # strict
    data = create_dataset("shapes", split="val", size=16, image_size=32, contrast=0.35)
    x = torch.stack([data[i]["image"] for i in range(16)])
    with torch.no_grad():
        cos = torch.cosine_similarity(tuned(x).cls, base(x).cls, dim=1).mean()
    assert 0.5 < float(cos) < 0.9999  # fine-tuned: moved, yet aligned with the teacher

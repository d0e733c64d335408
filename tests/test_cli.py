"""ssl-robust: the example deacl config and its documentation, one-line errors, `list`."""

from __future__ import annotations

import dataclasses
import urllib.error
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from _helpers_docs import documented_config_keys, read_toml

import ssl_robust.defenses
from ssl_robust import cli
from ssl_robust.cli import main
from ssl_robust.data import list_datasets
from ssl_robust.defenses import DeACLConfig
from ssl_robust.encoders import Encoder, list_encoders

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "deacl.toml"
DOCS = ROOT / "docs" / "robust_finetuning.md"


def _documented_keys() -> dict[str, set[str]]:
    """Keys of the tables in the docs' "The deacl config file" section, per TOML table."""
    return documented_config_keys(DOCS, "The deacl config file")


class FakeTrainer:
    """Stands in for DeACLTrainer: records what the CLI built, trains nothing."""

    seen: ClassVar[dict[str, Any]] = {}

    def __init__(self, student: Any, *, config: DeACLConfig, **kw: Any) -> None:
        FakeTrainer.seen = {"student": student, "config": config}

    def fit(self, loader: Any, **kw: Any) -> list[dict[str, Any]]:
        FakeTrainer.seen["loader"] = loader
        FakeTrainer.seen["fit"] = kw
        return [{"epoch": 1, "loss": 0.5}]

    def export_student(self, path: Path) -> Path:
        return Path(path)


def test_example_deacl_config_parses_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ssl_robust.defenses, "DeACLTrainer", FakeTrainer)
    raw = read_toml(EXAMPLE)
    assert main(["deacl", "--config", str(EXAMPLE), "--out", str(tmp_path), "--no-progress"]) == 0
    seen = FakeTrainer.seen
    cfg = dict(raw["deacl"])
    cfg.update(eps=4 / 255, step_size=1 / 255)
    assert seen["config"] == DeACLConfig(**cfg)
    assert isinstance(seen["student"], Encoder)
    assert seen["loader"].batch_size == raw["data"]["batch_size"]
    assert "student.pt" in capsys.readouterr().out


def test_every_documented_key_is_accepted_and_every_accepted_key_documented() -> None:
    documented = _documented_keys()
    fields = {
        "encoder": {f.name for f in dataclasses.fields(cli._DeACLEncoder)},
        "data": {f.name for f in dataclasses.fields(cli._DeACLData)},
        "deacl": {f.name for f in dataclasses.fields(DeACLConfig)},
    }
    example = read_toml(EXAMPLE)
    top = {k for k, v in example.items() if not isinstance(v, dict)}
    assert documented == {"": top, **fields}
    for table, keys in fields.items():  # the example uses documented keys only
        assert set(example[table]) <= keys


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deacl.toml"
    path.write_text(text)
    return path


DOWNLOAD = """
[encoder]
registry = "dino_vits16"
pretrained = true
[data]
dataset = "shapes"
"""


def test_download_and_missing_file_errors_are_one_line_with_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deacl", "--config", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err

    def offline(url: str, **kw: object) -> None:
        raise urllib.error.URLError("Temporary failure in name resolution\nsecond line")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    cfg = _write(tmp_path, DOWNLOAD)
    assert main(["deacl", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssl-robust deacl: error: could not download the official weights")
    assert err.count("\n") == 1 and "checkpoint_path=" in err and "--debug" in err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["--debug", "deacl", "--config", str(tmp_path / "missing.toml")])


def test_list_prints_encoders_and_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert set(list_encoders()) <= lines and set(list_datasets()) <= lines
    assert "timm/<model" in out and "hf/<repo" in out


def test_deacl_encoder_weights_key_is_the_deprecated_name_of_checkpoint_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ssl_robust.defenses, "DeACLTrainer", FakeTrainer)
    enc = ssl_robust.create_encoder("vit_test")
    ckpt = tmp_path / "w.pt"
    torch.save(enc.state_dict(), ckpt)
    body = '[data]\ndataset = "shapes"\nimage_size = 16\nsubset = 4\nbatch_size = 2\n'
    old = _write(tmp_path, f'[encoder]\nregistry = "vit_test"\nweights = "{ckpt}"\n{body}')
    with pytest.warns(FutureWarning, match="rename it to 'checkpoint_path'"):
        assert main(["deacl", "--config", str(old), "--out", str(tmp_path / "o1")]) == 0
    assert torch.equal(FakeTrainer.seen["student"].pos_embed, enc.pos_embed)
    both = _write(
        tmp_path,
        f'[encoder]\nregistry = "vit_test"\nweights = "{ckpt}"\ncheckpoint_path = "{ckpt}"\n{body}',
    )
    assert main(["deacl", "--config", str(both), "--out", str(tmp_path / "o2")]) == 2

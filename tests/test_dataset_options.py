"""Dataset options that collide with the runner's own arguments, and the two seeds of shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssl_robust.bench.data import open_images
from ssl_robust.bench.spec import (
    RUNNER_DATASET_KEYS,
    RUNNER_ENCODER_KEYS,
    load_spec,
    spec_from_dict,
)
from ssl_robust.cli import main
from ssl_robust.data import create_dataset

CONFIG = """
[[encoders]]
name = "e"
registry = "vit_test"

[[datasets]]
name = "shapes"
dataset = "shapes"
tasks = ["classification"]
image_size = 32
options = {{ size = 16, {option} }}
"""


@pytest.mark.parametrize("key", sorted(RUNNER_DATASET_KEYS))
def test_every_runner_keyword_in_options_is_one_line_exit_2(
    key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(option=f'{key} = "x"' if key != "seed" else "seed = 7"))
    out = str(tmp_path / "out")
    assert main(["bench", "--config", str(cfg), "--out", out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"datasets['shapes'].options: {key!r} is set by the runner" in err
    assert "multiple values" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything ran
    # the dry run lists it among the config's problems, also with exit code 2
    assert main(["bench", "--config", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{key!r} is set by the runner" in err and "multiple values" not in err


def test_seed_collision_names_scene_seed_and_scene_seed_is_accepted(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(option="seed = 7"))
    with pytest.raises(ValueError, match="scene_seed"):
        load_spec(cfg)
    cfg.write_text(CONFIG.format(option="scene_seed = 7"))
    spec = load_spec(cfg)
    assert spec.datasets[0].options["scene_seed"] == 7
    # the deacl command's [data] options go through the same check
    with pytest.raises(ValueError, match="'seed' is set by the runner"):
        open_images("shapes", None, "train", image_size=32, options={"seed": 1}, subset=None,
                    seed=0)  # fmt: skip


def test_subset_seed_and_scene_seed_are_separate() -> None:
    base = create_dataset("shapes", split="val", size=12, image_size=16)
    # the subset seed draws other samples of the same scenes
    a = create_dataset("shapes", split="val", size=12, image_size=16, subset=4, seed=1)
    b = create_dataset("shapes", split="val", size=12, image_size=16, subset=4, seed=2)
    assert a.indices != b.indices  # type: ignore[attr-defined]
    for ds in (a, b):
        for j, i in enumerate(ds.indices):  # type: ignore[attr-defined]
            assert torch.equal(ds[j]["image"], base[i]["image"])
    # scene_seed renders other scenes, whatever the subset seed
    other = create_dataset("shapes", split="val", size=12, image_size=16, scene_seed=5)
    assert not torch.equal(other[0]["image"], base[0]["image"])
    again = create_dataset("shapes", split="val", size=12, image_size=16, scene_seed=5, seed=9)
    assert torch.equal(again[0]["image"], other[0]["image"])
    with pytest.raises(ValueError, match="scene_seed"):
        create_dataset("shapes", scene_seed=-1)


@pytest.mark.parametrize("key", sorted(RUNNER_ENCODER_KEYS))
def test_encoder_options_that_the_runner_sets_are_refused_in_one_line(key: str) -> None:
    data = {
        "encoders": [{"name": "e", "registry": "vit_test", "options": {key: "x"}}],
        "datasets": [{"name": "d", "dataset": "shapes", "tasks": ["classification"]}],
    }
    with pytest.raises(ValueError) as err:
        spec_from_dict(data)
    assert str(err.value).startswith(f"encoders['e'].options: {key!r} is set by the runner")
    data["encoders"][0]["options"] = {"n_last_blocks": 1}  # a create_encoder keyword: fine
    assert spec_from_dict(data).encoders[0].options == {"n_last_blocks": 1}

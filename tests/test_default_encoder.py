"""The bundled default encoder and the shapes contrast option used by the embedded benchmark."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ssl_robust
from ssl_robust.data import create_dataset
from ssl_robust.encoders import create_encoder
from ssl_robust.encoders.registry import bundled_weights_path


def test_bundled_weights_ship_and_load_strictly():
    path = Path(bundled_weights_path("vit_tiny_shapes.pt"))
    assert path.parent == Path(ssl_robust.__file__).parent / "assets"
    assert path.stat().st_size < 4e6  # "a few MB at most"
    enc = create_encoder("vit_tiny_shapes", pretrained=True)
    state = torch.load(path, weights_only=True)
    for key, value in enc.state_dict().items():
        assert torch.equal(value, state[key]), key
    rand = create_encoder("vit_tiny_shapes")
    assert not torch.equal(rand.pos_embed, enc.pos_embed)
    out = enc(torch.rand(2, 3, 32, 32))
    assert out.cls.shape == (2, 96) and out.grid == (8, 8)


def test_missing_bundled_file_says_how_to_fix():
    with pytest.raises(FileNotFoundError, match="pretrain_default_encoder"):
        bundled_weights_path("nope.pt")


def test_shapes_contrast_blends_towards_grey():
    full = create_dataset("shapes", split="val", size=2, image_size=32, scene_seed=3)
    hazy = create_dataset("shapes", split="val", size=2, image_size=32, scene_seed=3, contrast=0.35)
    for i in range(2):
        a, b = full[i], hazy[i]
        torch.testing.assert_close(b["image"], 0.5 + 0.35 * (a["image"] - 0.5))
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["depth"], b["depth"])
        assert int(a["label"]) == int(b["label"])
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="contrast"):
            create_dataset("shapes", split="val", size=2, contrast=bad)
